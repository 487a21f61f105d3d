// Several upstreams behind one client: routing, cooldown, failover, fallbacks, pacing across
// upstreams, withResponse, per-upstream limits and stats; each upstream an embedded mock.
import OpenAI from 'openai'
import { Client } from '../index.js'
import type { ClientOptions } from '../index.js'
import { body, chunk, completion, eventually, rejection, sendJson, server, sleep } from './helpers'
import type { MockServer } from './helpers'

/**
 * a's weight against b's 1 in the failover tests, which need the first call on a: weighted
 * routing draws at random, and at 1000 (as these tests had) b came first about once in a thousand
 * draws, failing a run; at the maximum weight, once in a million.
 */
const A_FIRST = 1_000_000

const made: Client[] = []
afterAll(() => made.forEach((c) => c.destroy()))

function routed(options: Partial<ClientOptions>): Client {
  const c = new Client({ retry: { maxRetries: 2, minTimeout: 10, maxTimeout: 50 }, ...options } as ClientOptions)
  made.push(c)
  return c
}

async function pair(): Promise<[MockServer, MockServer]> {
  return [await server(), await server()]
}

const failWith = (status: number, headers: Record<string, string> = {}) => ({ res }: any) =>
  sendJson(res, status, { error: { message: `failing with ${status}`, type: 'server_error' } }, headers)

const modelsSeen = (s: MockServer) => s.requests.map((r) => r.body?.model)

test('weighted routing follows the weights; every upstream has its own pool and key', async () => {
  const [a, b] = await pair()
  const c = routed({
    routing: 'weighted',
    apiKey: 'sk-shared',
    upstreams: [
      { name: 'a', baseUrl: a.url, weight: 1 },
      { name: 'b', baseUrl: b.url, weight: 3, apiKey: 'sk-b-own' },
    ],
  })
  for (let i = 0; i < 200; i++) await c.chat(body())
  expect(a.requests.length + b.requests.length).toBe(200)
  // 1:3 within a wide margin (random picks).
  expect(b.requests.length / 200).toBeGreaterThan(0.6)
  expect(b.requests.length / 200).toBeLessThan(0.9)
  expect(a.requests[0].headers.authorization).toBe('Bearer sk-shared')
  expect(b.requests[0].headers.authorization).toBe('Bearer sk-b-own')
  expect(a.accepted).toBe(1)
  expect(b.accepted).toBe(1)
  expect(c.stats()).toMatchObject({ requests: 200, errors: 0, connected: 2 })
})

test('least-busy (the default) spreads concurrent calls; latency prefers the faster upstream', async () => {
  const [a, b] = await pair()
  for (const s of [a, b]) s.setHandler(async ({ res, body: bb }: any) => { await sleep(40); sendJson(res, 200, completion(bb, 'ok')) })
  const c = routed({ upstreams: [{ name: 'a', baseUrl: a.url }, { name: 'b', baseUrl: b.url }] })
  await Promise.all(Array.from({ length: 20 }, () => c.chat(body())))
  // Picks made on different threads in the same instant may see the same counts: near even, not exact.
  expect(a.requests.length + b.requests.length).toBe(20)
  expect(Math.min(a.requests.length, b.requests.length)).toBeGreaterThanOrEqual(7)

  const [fast, slow] = await pair()
  slow.setHandler(async ({ res, body: bb }: any) => { await sleep(60); sendJson(res, 200, completion(bb, 'ok')) })
  const l = routed({ routing: 'latency', upstreams: [{ name: 'slow', baseUrl: slow.url }, { name: 'fast', baseUrl: fast.url }] })
  for (let i = 0; i < 40; i++) await l.chat(body())
  // Each is measured once; then the faster one takes all but the exploring tenth.
  expect(fast.requests.length).toBeGreaterThan(28)
  const latency = Object.fromEntries(l.stats().upstreams!.map((u) => [u.name, u.latencyMs]))
  expect(latency.slow).toBeGreaterThan(latency.fast!)
})

test('models: an upstream serves only its models, under its own names; a model nobody serves is ERR_NO_UPSTREAM with nothing sent', async () => {
  const [azure, other] = await pair()
  const c = routed({
    upstreams: [
      { name: 'azure', baseUrl: azure.url, models: { 'gpt-4o-mini': 'my-mini-deployment' } },
      { name: 'other', baseUrl: other.url, models: ['llama-3'] },
    ],
  })
  const answer: any = await c.chat({ ...body(), model: 'gpt-4o-mini' })
  expect(answer.model).toBe('my-mini-deployment')
  expect(modelsSeen(azure)).toEqual(['my-mini-deployment'])
  await c.chat({ ...body(), model: 'llama-3' })
  expect(modelsSeen(other)).toEqual(['llama-3'])
  const err = await rejection(c.chat({ ...body(), model: 'gpt-5' }))
  expect(err.code).toBe('ERR_NO_UPSTREAM')
  expect(err.message).toContain('gpt-5')
  expect(azure.requests.length + other.requests.length).toBe(2)
  expect(() => c.chatStream({ ...body(), model: 'gpt-5' })).not.toThrow()
})

test('failover: a 5xx moves the call to the other upstream at once; when all fail the error lists the upstreams tried', async () => {
  const [a, b] = await pair()
  a.setHandler(failWith(503))
  const c = routed({ routing: 'weighted', upstreams: [{ name: 'a', baseUrl: a.url, weight: A_FIRST }, { name: 'b', baseUrl: b.url, weight: 1 }] })
  const answer: any = await c.chat(body())
  expect(answer.choices[0].message.content).toContain('hi')
  expect(a.requests.length).toBe(1)
  expect(b.requests.length).toBe(1)
  b.setHandler(failWith(500))
  const err = await rejection(c.chat(body()))
  expect(err).toMatchObject({ code: 'ERR_HTTP_STATUS', status: 500 })
  expect(err.upstreams.slice(0, 2).sort()).toEqual(['a', 'b'])
  expect(err.message).toContain('upstreams tried:')
  // maxRetries 2: three attempts in all (a, b, then b's own retry... or a's): never more.
  expect(a.requests.length + b.requests.length).toBe(2 + 3)
  expect(c.stats().retries).toBeGreaterThanOrEqual(2)
})

test('failover spends the retry budget: with retry: false nothing is sent twice', async () => {
  const [a, b] = await pair()
  a.setHandler(failWith(503))
  b.setHandler(failWith(503))
  const c = routed({ retry: false, upstreams: [{ name: 'a', baseUrl: a.url }, { name: 'b', baseUrl: b.url }] })
  const err = await rejection(c.chat(body()))
  expect(err.status).toBe(503)
  expect(a.requests.length + b.requests.length).toBe(1)
  expect(err.upstreams).toHaveLength(1)
  // A 400 is the caller's fault: it never moves.
  a.setHandler(failWith(400))
  b.setHandler(failWith(400))
  const c2 = routed({ upstreams: [{ name: 'a', baseUrl: a.url }, { name: 'b', baseUrl: b.url }] })
  const bad = await rejection(c2.chat(body()))
  expect(bad.status).toBe(400)
  expect(bad.upstreams).toHaveLength(1)
})

test('cooldown: allowedFails consecutive failures take an upstream out for cooldown ms, then one probe brings it back', async () => {
  const [a, b] = await pair()
  a.setHandler(failWith(502))
  const c = routed({
    allowedFails: 2,
    cooldown: 400,
    upstreams: [{ name: 'a', baseUrl: a.url }, { name: 'b', baseUrl: b.url }],
  })
  for (let i = 0; i < 10; i++) await c.chat(body())
  // Two failures on a (each moved to b), then a is skipped.
  expect(a.requests.length).toBe(2)
  expect(b.requests.length).toBe(10)
  expect(c.stats().upstreams!.find((u) => u.name === 'a')!.circuit).toBe('open')
  a.setHandler(({ res, body: bb }: any) => sendJson(res, 200, completion(bb, 'a is back')))
  await sleep(450)
  for (let i = 0; i < 6; i++) await c.chat(body())
  expect(a.requests.length).toBeGreaterThan(2)
  expect(c.stats().upstreams!.find((u) => u.name === 'a')!.circuit).toBe('closed')
})

test("a 429's Retry-After cools the upstream down for that long, in every later call", async () => {
  const [a, b] = await pair()
  a.setHandler(failWith(429, { 'retry-after': '1' }))
  const c = routed({ allowedFails: 100, upstreams: [{ name: 'a', baseUrl: a.url }, { name: 'b', baseUrl: b.url }] })
  for (let i = 0; i < 8; i++) await c.chat(body())
  expect(a.requests.length).toBe(1)
  expect(b.requests.length).toBe(8)
  expect(c.stats().upstreams!.find((u) => u.name === 'a')!.circuit).toBe('open')
})

test('fallbacks: when every upstream of a model failed, the next model is tried; contextWindowFallbacks on context_length_exceeded', async () => {
  const [big, small] = await pair()
  big.setHandler(failWith(503))
  const c = routed({
    upstreams: [
      { name: 'big', baseUrl: big.url, models: ['gpt-4o', 'gpt-4o-128k'] },
      { name: 'small', baseUrl: small.url, models: ['gpt-4o-mini'] },
    ],
    fallbacks: { 'gpt-4o': ['gpt-4o-mini'] },
    contextWindowFallbacks: { 'gpt-4o': ['gpt-4o-128k'] },
  })
  const answer: any = await c.chat({ ...body(), model: 'gpt-4o' }, { withResponse: true })
  expect(answer.data.model).toBe('gpt-4o-mini')
  expect(answer.response.upstream).toBe('small')
  expect(modelsSeen(big)).toEqual(['gpt-4o'])

  big.setHandler(({ res, body: bb }: any) =>
    bb.model === 'gpt-4o'
      ? sendJson(res, 400, { error: { message: "This model's maximum context length is 8192 tokens", code: 'context_length_exceeded' } })
      : sendJson(res, 200, completion(bb, 'long context ok')),
  )
  const long: any = await c.chat({ ...body('x'.repeat(100)), model: 'gpt-4o' })
  expect(long.model).toBe('gpt-4o-128k')
  expect(modelsSeen(big).slice(-2)).toEqual(['gpt-4o', 'gpt-4o-128k'])
  expect(modelsSeen(small)).toEqual(['gpt-4o-mini'])

  expect(() => routed({ upstreams: [{ baseUrl: big.url, models: ['a'] }], fallbacks: { a: ['nope'] } })).toThrow(
    /fallbacks\.a names "nope", which no upstream serves/,
  )
})

test('streams fail over before their first chunk, never after it', async () => {
  const [a, b] = await pair()
  a.setHandler(failWith(503))
  const c = routed({ routing: 'weighted', upstreams: [{ name: 'a', baseUrl: a.url, weight: A_FIRST }, { name: 'b', baseUrl: b.url, weight: 1 }] })
  let text = ''
  for await (const ch of c.chatStream(body('streamed'))) text += ch.choices[0]?.delta?.content ?? ''
  expect(text).toContain('streamed')
  expect(a.requests.length).toBe(1)
  expect(b.requests.length).toBe(1)

  // a sends a chunk, then breaks: the consumer saw output, so the failure is final.
  a.setHandler(({ res, body: bb }: any) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write(`data: ${JSON.stringify(chunk(bb, { role: 'assistant', content: 'half' }))}\n\n`)
    setTimeout(() => res.destroy(), 20)
  })
  const c2 = routed({ routing: 'weighted', upstreams: [{ name: 'a', baseUrl: a.url, weight: A_FIRST }, { name: 'b', baseUrl: b.url, weight: 1 }] })
  const seen: string[] = []
  const err = await rejection(
    (async () => {
      for await (const ch of c2.chatStream(body())) seen.push(ch.choices[0]?.delta?.content ?? '')
    })(),
  )
  expect(seen).toEqual(['half'])
  expect(err.code).toMatch(/ERR_SOCKET|ERR_STREAM_TRUNCATED/)
  expect(b.requests.length).toBe(1)
})

test('pacing across upstreams: at remaining 0 calls go to the other upstream; the used-up one sees no 429-bound call', async () => {
  const [a, b] = await pair()
  a.setHandler(({ res, body: bb }: any) =>
    sendJson(res, 200, completion(bb, 'a'), {
      'x-ratelimit-limit-requests': '10',
      'x-ratelimit-remaining-requests': '0',
      'x-ratelimit-reset-requests': '30s',
    }),
  )
  const c = routed({ routing: 'weighted', upstreams: [{ name: 'a', baseUrl: a.url, weight: A_FIRST }, { name: 'b', baseUrl: b.url, weight: 1 }] })
  for (let i = 0; i < 6; i++) await c.chat(body())
  expect(a.requests.length).toBe(1)
  expect(b.requests.length).toBe(5)
  expect(c.rateLimits('a')!.requests).toMatchObject({ limit: 10, remaining: 0 })
  expect(c.rateLimits('b')).toBeNull()
  expect(c.rateLimitsByUpstream()).toMatchObject({ a: { requests: { remaining: 0 } }, b: null })
  expect(c.stats().upstreams!.find((u) => u.name === 'a')!.paced).toBe(true)
  expect(() => c.rateLimits('zzz')).toThrow(TypeError)
})

test('withResponse: status, headers, parsed limits and the upstream, without giving up the parsed body', async () => {
  const [a] = await pair()
  a.setHandler(({ res, body: bb }: any) =>
    sendJson(res, 200, completion(bb, 'ok'), { 'x-request-id': 'req_123', 'x-ratelimit-remaining-tokens': '900', 'x-ratelimit-limit-tokens': '1000' }),
  )
  const single = new Client({ baseUrl: a.url })
  made.push(single)
  const { data, response } = await single.chat(body(), { withResponse: true })
  expect(data.choices[0].message.content).toBe('ok')
  expect(response.status).toBe(200)
  expect(response.headers.get('x-request-id')).toBe('req_123')
  expect(response.rateLimit!.tokens).toMatchObject({ limit: 1000, remaining: 900 })
  expect(response.upstream).toBeNull()
  const plain = new Client({ baseUrl: (await server()).url })
  made.push(plain)
  const emb = await plain.embeddings({ model: 'e', input: 'x' }, { withResponse: true })
  expect(emb.response.status).toBe(200)
  expect(emb.data.object).toBe('list')
  expect(() => plain.chatStream(body(), { withResponse: true } as any)).toThrow(/withResponse is not a known call option/)
})

test('client-wide limits hold across upstreams; an upstream has its own limits too', async () => {
  const [a, b] = await pair()
  let running = 0
  let most = 0
  for (const s of [a, b]) {
    s.setHandler(async ({ res, body: bb }: any) => {
      running++
      most = Math.max(most, running)
      await sleep(15)
      running--
      sendJson(res, 200, completion(bb, 'ok'))
    })
  }
  const c = routed({ limits: { concurrency: 2 }, upstreams: [{ name: 'a', baseUrl: a.url, limits: { concurrency: 1 } }, { name: 'b', baseUrl: b.url }] })
  await Promise.all(Array.from({ length: 12 }, () => c.chat(body())))
  expect(most).toBeLessThanOrEqual(2)
  expect(c.stats().limitWaits).toBeGreaterThan(0)
})

test('metrics carry each upstream by name in one valid exposition, with failovers', async () => {
  const [a, b] = await pair()
  a.setHandler(failWith(500))
  const c = routed({ routing: 'weighted', upstreams: [{ name: 'a', baseUrl: a.url, weight: A_FIRST }, { name: 'b', baseUrl: b.url, weight: 1 }] })
  await c.chat(body())
  const text = c.metrics()
  expect(text).toContain(`llmpool_requests_total{origin="${a.origin}",upstream="a"} 1`)
  expect(text).toContain(`llmpool_requests_total{origin="${b.origin}",upstream="b"} 1`)
  expect(text).toContain('llmpool_failovers_total 1')
  // Each family's HELP once.
  const helps = text.split('\n').filter((l) => l.startsWith('# HELP ')).map((l) => l.split(' ')[2])
  expect(new Set(helps).size).toBe(helps.length)
})

test('client.fetch under the OpenAI SDK with upstreams: client.baseURL, each upstream its own key, routing by model', async () => {
  const [a, b] = await pair()
  const c = routed({
    upstreams: [
      { name: 'a', baseUrl: a.url, apiKey: 'sk-a', models: ['m-a'] },
      { name: 'b', baseUrl: b.url, apiKey: 'sk-b', models: { 'm-b': 'deployment-b' } },
    ],
  })
  const sdk = new OpenAI({ baseURL: c.baseURL, apiKey: 'unused', fetch: c.fetch, maxRetries: 0 })
  const one = await sdk.chat.completions.create({ model: 'm-b', messages: [{ role: 'user', content: 'via sdk' }] })
  expect(one.model).toBe('deployment-b')
  expect(b.requests[0].headers.authorization).toBe('Bearer sk-b')
  expect(b.requests[0].url).toBe('/v1/chat/completions')
  await sdk.chat.completions.create({ model: 'm-a', messages: [{ role: 'user', content: 'x' }] })
  expect(a.requests[0].headers.authorization).toBe('Bearer sk-a')
  // The SDK wraps what fetch rejected with: ours is its cause.
  const err: any = await rejection(sdk.chat.completions.create({ model: 'zzz', messages: [] }))
  expect(err.cause).toMatchObject({ code: 'ERR_NO_UPSTREAM' })
})

test('hostile upstreams that echo every header: the failed-over error carries no key of any upstream', async () => {
  const [a, b] = await pair()
  for (const s of [a, b]) s.setHandler(({ res, req }: any) => sendJson(res, 503, { error: { message: `echo ${JSON.stringify(req.headers)}` } }, { 'x-echo': req.headers.authorization }))
  const c = routed({
    headers: { 'x-api-key': 'shared-secret-xyz' },
    upstreams: [
      { name: 'a', baseUrl: a.url, apiKey: 'sk-a-secret-111' },
      { name: 'b', baseUrl: b.url, apiKey: 'sk-b-secret-222' },
    ],
  })
  const err = await rejection(c.chat(body()))
  expect(err.status).toBe(503)
  expect(err.upstreams.length).toBeGreaterThan(1)
  const seen = JSON.stringify({ message: err.message, error: err.error, headers: err.headers })
  for (const secret of ['sk-a-secret-111', 'sk-b-secret-222', 'shared-secret-xyz']) expect(seen).not.toContain(secret)
  expect(seen).toContain('[REDACTED]')
})

test('bad upstream configuration throws a TypeError naming the field', () => {
  const bad = (options: Record<string, unknown>, pattern: RegExp) =>
    expect(() => new Client(options as any)).toThrow(expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(pattern) }))
  bad({ upstreams: [] }, /^upstreams must be a non-empty array/)
  bad({ upstreams: [{ baseUrl: 'http://a' }, { baseUrl: 'ftp://b' }] }, /^upstreams\[1\]\.baseUrl must be an absolute/)
  bad({ upstreams: [{ baseUrl: 'http://a', colour: 'red' }] }, /^upstreams\[0\]\.colour is not a known upstream option/)
  bad({ upstreams: [{ name: 'x' }] }, /^upstreams\[0\]\.baseUrl is required/)
  bad({ upstreams: [{ baseUrl: 'http://a', name: 'x' }, { baseUrl: 'http://b', name: 'x' }] }, /^upstreams\[1\]\.name repeats "x"/)
  bad({ upstreams: [{ baseUrl: 'http://a', weight: 0 }] }, /^upstreams\[0\]\.weight must be an integer/)
  bad({ upstreams: [{ baseUrl: 'http://a', models: { m: 3 } }] }, /^upstreams\[0\]\.models\.m must be/)
  bad({ upstreams: [{ baseUrl: 'http://a', limits: { rpm: -1 } }] }, /^upstreams\[0\]\.limits\.rpm must be a positive integer/)
  bad({ baseUrl: 'http://a', upstreams: [{ baseUrl: 'http://b' }] }, /^baseUrl must not be set with upstreams/)
  bad({ upstreams: [{ baseUrl: 'http://a' }], routing: 'fastest' }, /^routing must be 'least-busy', 'latency' or 'weighted'/)
  bad({ upstreams: [{ baseUrl: 'http://a' }], allowedFails: 0 }, /^allowedFails must be an integer from 1/)
  bad({ baseUrl: 'http://a', allowedFails: 2 }, /^allowedFails applies to upstreams/)
  bad({ baseUrl: 'http://a', store: { redis: 'http://nope' } }, /^store\.redis must be a redis:\/\/ or rediss:\/\/ \(TLS\) URL/)
  bad({ baseUrl: 'http://a', store: { redis: 'redis://h:99999' } }, /^store\.redis has a port/)
  bad({ baseUrl: 'http://a', store: { redis: 'redis://h/x' } }, /^store\.redis has a database/)
  bad({ baseUrl: 'http://a', fallbacks: { m: 'n' } }, /^fallbacks must be an object mapping/)
})

test('abort and destroy end routed calls at once', async () => {
  const [a, b] = await pair()
  for (const s of [a, b]) s.setHandler(async ({ res, body: bb }: any) => { await sleep(500); sendJson(res, 200, completion(bb, 'late')) })
  const c = routed({ upstreams: [{ name: 'a', baseUrl: a.url }, { name: 'b', baseUrl: b.url }] })
  const controller = new AbortController()
  const pending = c.chat(body(), { signal: controller.signal })
  setTimeout(() => controller.abort(), 30)
  expect((await rejection(pending)).code).toBe('ERR_ABORTED')
  const later = c.chat(body())
  await eventually(() => a.requests.length + b.requests.length >= 2)
  c.destroy()
  expect((await rejection(later)).code).toBe('ERR_CLOSED')
})
