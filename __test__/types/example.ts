// A TypeScript consumer of llmpool, type-checked with `tsc --noEmit --strict` by types.spec.ts.
// Lines marked @ts-expect-error must fail to type-check; tsc reports an error if they do not.
import { Client, LlmpoolError } from '../../index.js'
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionCreateParams, ClientOptions, PoolStats, ErrorCode, ChatStream, TextStream } from '../../index.js'

const options: ClientOptions = {
  baseUrl: 'https://api.openai.com/v1',
  apiKey: process.env.OPENAI_API_KEY,
  headers: { 'OpenAI-Organization': 'org' },
  connections: 100,
  pipelining: 1,
  keepAliveTimeout: 90_000,
  keepAliveMaxTimeout: 120_000,
  keepAliveTimeoutThreshold: 1_000,
  connectTimeout: 10_000,
  headersTimeout: 300_000,
  bodyTimeout: 300_000,
  autoSelectFamily: true,
  autoSelectFamilyAttemptTimeout: 250,
  connect: { keepAlive: true, keepAliveInitialDelay: 60_000, ca: undefined, rejectUnauthorized: true },
  poolTimeout: 10_000,
  timeout: 600_000,
  firstTokenTimeout: 60_000,
  tokenTimeout: 30_000,
  maxResponseSize: 32 * 1024 * 1024,
  redactHeaders: ['x-tenant-token'],
  retry: { maxRetries: 3, minTimeout: 1_000, maxTimeout: 30_000, timeoutFactor: 2, retryAfter: true, statusCodes: [429], errorCodes: ['ERR_SOCKET'] },
  circuitBreaker: { failureThreshold: 5, resetTimeout: 30_000 },
}

const unlimited: ClientOptions = { baseUrl: 'http://localhost:8000/v1', connections: null, retry: false }

const request: ChatCompletionCreateParams = {
  model: 'gpt-4o-mini',
  messages: [
    { role: 'system', content: 'You are terse.' },
    { role: 'developer', content: [{ type: 'text', text: 'Answer in French.' }] },
    { role: 'user', content: [{ type: 'text', text: 'What is in this image?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }] },
    { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } }] },
    { role: 'tool', tool_call_id: 'call_1', content: '{"temp":21}' },
  ],
  tools: [{ type: 'function', function: { name: 'weather', description: 'Weather by city', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
  tool_choice: { type: 'function', function: { name: 'weather' } },
  response_format: { type: 'json_schema', json_schema: { name: 'answer', schema: { type: 'object' }, strict: true } },
  stream_options: { include_usage: true },
  max_tokens: 100,
  temperature: 0,
  // Unknown, provider-specific fields pass through.
  top_k: 40,
}

async function main(): Promise<void> {
  const client = new Client(options)
  const controller = new AbortController()
  const completion: ChatCompletion = await client.chat(request, { signal: controller.signal, timeout: 30_000, headers: { 'x-trace': '1' } })
  const text: string | null = completion.choices[0].message.content
  const call = completion.choices[0].message.tool_calls?.[0]
  const toolName: string | undefined = call?.type === 'function' ? call.function.name : call?.custom.name
  const tokens: number | undefined = completion.usage?.total_tokens
  console.log(text, toolName, tokens)

  const stream: ChatStream = client.chatStream(request, { signal: controller.signal, firstTokenTimeout: 5_000, tokenTimeout: 1_000 })
  for await (const chunk of stream) {
    const c: ChatCompletionChunk = chunk
    process.stdout.write(c.choices[0]?.delta?.content ?? '')
    const args: string | undefined = c.choices[0]?.delta?.tool_calls?.[0]?.function?.arguments
    void args
  }
  const merged: ChatCompletion = await client.chatStream(request).finalCompletion()
  const web: ReadableStream<ChatCompletionChunk> = client.chatStream(request).toReadableStream()
  const textStream: TextStream = client.chatStream(request).text()
  for await (const piece of textStream) console.log(piece.toUpperCase())
  const fromText: ChatCompletion = await client.chatStream(request).text().finalCompletion()
  const textWeb: ReadableStream<string> = client.chatStream(request).text().toReadableStream()
  console.log(fromText.usage, textWeb)
  void merged
  void web
  // @ts-expect-error firstTokenTimeout is a stream option only
  await client.chat(request, { firstTokenTimeout: 1 })

  const stats: PoolStats = client.stats()
  console.log(stats.connected, stats.free, stats.pending, stats.queued, stats.running, stats.size, stats.reused, stats.retries, stats.circuit)
  await client.chat(request, { maxRetries: 0 })

  try {
    await client.chat({ model: 'm', messages: [{ role: 'user', content: 'hi' }] })
  } catch (e) {
    if (e instanceof LlmpoolError) {
      const code: ErrorCode = e.code
      if (code === 'ERR_HTTP_STATUS') console.log(e.status, e.headers?.['retry-after'], e.error, e.retryAfter, e.attempts)
    }
  }

  const routed = new Client({
    upstreams: [
      { name: 'azure', baseUrl: 'https://a.example/openai/v1', apiKey: 'k1', models: { 'gpt-4o-mini': 'my-deployment' } },
      { name: 'openai', baseUrl: 'https://api.openai.com/v1', weight: 2, limits: { rpm: 500 } },
    ],
    routing: 'latency',
    fallbacks: { 'gpt-4o': ['gpt-4o-mini'] },
    store: { redis: 'redis://127.0.0.1:6379/0' },
  })
  const { data, response } = await routed.chat({ model: 'gpt-4o-mini', messages: [] }, { withResponse: true })
  const usage: number | undefined = data.usage?.total_tokens
  const upstream: string | null = response.upstream
  const remaining: number | undefined = response.rateLimit?.requests?.remaining
  console.log(usage, upstream, remaining, response.headers.get('x-request-id'), routed.stats().upstreams?.[0]?.circuit, routed.stats().store?.up, routed.rateLimits('azure'))
  // @ts-expect-error routing names a known strategy
  new Client({ upstreams: [{ baseUrl: 'http://h' }], routing: 'fastest' })
  // @ts-expect-error pipelining above 1 is not supported
  new Client({ baseUrl: 'http://h', pipelining: 2 })
  // @ts-expect-error a message needs a known role
  await client.chat({ model: 'm', messages: [{ role: 'robot', content: 'x' }] })
  // @ts-expect-error a tool message needs its tool_call_id
  await client.chat({ model: 'm', messages: [{ role: 'tool', content: 'x' }] })

  await client.close()
  await new Client(unlimited).destroy()
}

void main

// Errors thrown and their causes are typed.
import type { ThrownErrorCode, InvalidArgumentError, LlmpoolErrorCause } from '../../index.js'
const thrown: ThrownErrorCode[] = ['ERR_INVALID_ARG', 'ERR_LLMPOOL_NATIVE_MISSING']
function osCode(err: LlmpoolError): string | undefined {
  const cause: LlmpoolErrorCause | undefined = err.cause
  return cause?.code
}
function isInvalidArgument(e: unknown): e is InvalidArgumentError {
  return e instanceof TypeError && (e as InvalidArgumentError).code === 'ERR_INVALID_ARG'
}
void thrown, osCode, isInvalidArgument

// llmpool/mock is typed too.
import { startMockServer, hostile } from '../../mock/server.js'
import type { MockServer } from '../../mock/server.js'
async function mockUse(): Promise<string> {
  const server: MockServer = await startMockServer({ chunkDelay: 5 })
  server.setHandler(hostile.retryHeader('retry-after', '1e20'))
  const url: string = server.url
  await server.close()
  return url
}
void mockUse
