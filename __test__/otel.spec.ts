// llmpool/otel with the real OpenTelemetry JS SDK: GenAI spans that are children of the span
// active where the call was made, stream spans that end with their last chunk, failures and
// cancellations told apart, the four GenAI histograms, and no secret in any attribute.
import { context, trace, SpanStatusCode } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { registerInstrumentations } from '@opentelemetry/instrumentation'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics'
import { Client } from '../index.js'
import { LlmpoolInstrumentation } from '../otel.js'
import { body, client, rejection, sendJson, server } from './helpers'

const KEY = 'sk-otel-secret-key-123456'

const spans = new InMemorySpanExporter()
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] })
const metricReader = new PeriodicExportingMetricReader({
  exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
  exportIntervalMillis: 3_600_000,
})
const meterProvider = new MeterProvider({ readers: [metricReader] })
const contextManager = new AsyncLocalStorageContextManager().enable()
context.setGlobalContextManager(contextManager)
const instrumentation = new LlmpoolInstrumentation({ providerName: 'openai' })
const unregister = registerInstrumentations({ instrumentations: [instrumentation], tracerProvider, meterProvider })
const tracer = tracerProvider.getTracer('test')

afterAll(async () => {
  unregister()
  await meterProvider.shutdown()
  await tracerProvider.shutdown()
  context.disable()
})
beforeEach(() => spans.reset())

const named = (name: string) => spans.getFinishedSpans().filter((s) => s.name === name)
const noSecret = () => {
  for (const s of spans.getFinishedSpans()) {
    expect(JSON.stringify({ name: s.name, attributes: s.attributes, events: s.events, status: s.status })).not.toContain(KEY)
  }
}
const parentOf = (s: any) => s.parentSpanContext?.spanId ?? s.parentSpanId

test('chat(): a GenAI span, child of the span active at the call, with request and response attributes', async () => {
  const s = await server()
  const c = client(s, { apiKey: KEY })
  let parentId = ''
  await tracer.startActiveSpan('handler', async (parent) => {
    parentId = parent.spanContext().spanId
    await c.chat({ ...body('one two three'), max_tokens: 50, temperature: 0.2 })
    parent.end()
  })
  const [span] = named('chat mock-model')
  expect(span).toBeDefined()
  expect(parentOf(span)).toBe(parentId)
  expect(span.spanContext().traceId).toBe(named('handler')[0].spanContext().traceId)
  expect(span.kind).toBe(2) // CLIENT
  expect(span.attributes).toMatchObject({
    'gen_ai.operation.name': 'chat',
    'gen_ai.provider.name': 'openai',
    'gen_ai.request.model': 'mock-model',
    'gen_ai.request.max_tokens': 50,
    'gen_ai.request.temperature': 0.2,
    'gen_ai.response.model': 'mock-model',
    'gen_ai.response.id': 'chatcmpl-mock',
    'gen_ai.response.finish_reasons': ['stop'],
    'gen_ai.usage.input_tokens': 5,
    'server.address': '127.0.0.1',
    'server.port': s.port,
  })
  expect(span.attributes['gen_ai.usage.output_tokens']).toBeGreaterThan(0)
  expect(span.attributes['llmpool.attempts']).toBe(1)
  // Content only when asked.
  expect(span.attributes['gen_ai.input.messages']).toBeUndefined()
  expect(span.status.code).not.toBe(SpanStatusCode.ERROR)
  noSecret()
})

test('a stream: its span is a child of the caller\'s across for await, ends with the last chunk, carries the final usage', async () => {
  const s = await server({ chunkDelay: 5 })
  const c = client(s, { apiKey: KEY })
  let parentId = ''
  let chunks = 0
  await tracer.startActiveSpan('handler', async (parent) => {
    parentId = parent.spanContext().spanId
    for await (const _ of c.chatStream({ ...body('a b c d e'), stream_options: { include_usage: true } })) chunks++
    parent.end()
  })
  const [span] = named('chat mock-model')
  expect(chunks).toBeGreaterThan(3)
  expect(parentOf(span)).toBe(parentId)
  // The usage came in the stream's last chunk: the span ended with it.
  expect(span.attributes).toMatchObject({
    'llmpool.method': 'chatStream',
    'gen_ai.response.finish_reasons': ['stop'],
    'gen_ai.usage.input_tokens': 5,
  })
  expect(span.attributes['gen_ai.usage.output_tokens']).toBeGreaterThan(0)
  expect(span.attributes['llmpool.time_to_first_chunk_ms']).toBeGreaterThanOrEqual(0)
  noSecret()
})

test('a text stream reports what Rust merged; captureContent records the conversation', async () => {
  instrumentation.setConfig({ captureContent: true })
  try {
    const s = await server()
    const c = client(s, { apiKey: KEY })
    let text = ''
    for await (const piece of c.chatStream({ ...body('x y z'), stream_options: { include_usage: true } }).text()) text += piece
    const [span] = named('chat mock-model')
    expect(span.attributes['gen_ai.usage.output_tokens']).toBe(text.split(' ').length)
    expect(JSON.parse(String(span.attributes['gen_ai.output.messages']))[0].content).toBe(text)
    expect(String(span.attributes['gen_ai.input.messages'])).toContain('x y z')
  } finally {
    instrumentation.setConfig({ captureContent: false })
  }
})

test('a failure is an ERROR span with error.type, attempts and the upstreams tried; no secret anywhere', async () => {
  const a = await server()
  const b = await server()
  for (const s of [a, b]) s.setHandler(({ res }) => sendJson(res, 503, { error: { message: `overloaded, key ${KEY}` } }))
  const c = new Client({
    apiKey: KEY,
    upstreams: [
      { name: 'a', baseUrl: a.url },
      { name: 'b', baseUrl: b.url },
    ],
    retry: { maxRetries: 1, minTimeout: 1, maxTimeout: 1 },
  })
  try {
    const err = await rejection(c.chat(body()))
    expect(err.code).toBe('ERR_HTTP_STATUS')
  } finally {
    await c.destroy()
  }
  const [span] = named('chat mock-model')
  expect(span.status.code).toBe(SpanStatusCode.ERROR)
  expect(span.attributes).toMatchObject({
    'error.type': 'ERR_HTTP_STATUS',
    'llmpool.attempts': 2,
    'http.response.status_code': 503,
  })
  // The failover: both upstreams, in the order tried.
  expect([...(span.attributes['llmpool.upstreams'] as string[])].sort()).toEqual(['a', 'b'])
  noSecret()
})

test('a call that succeeded after a failover says so: its attempts and the upstream that answered', async () => {
  const a = await server()
  const b = await server()
  a.setHandler(({ res }) => sendJson(res, 503, { error: { message: 'busy' } }))
  const c = new Client({
    apiKey: KEY,
    routing: 'weighted',
    upstreams: [
      { name: 'a', baseUrl: a.url, weight: 1_000_000 },
      { name: 'b', baseUrl: b.url, weight: 1 },
    ],
  })
  try {
    // The caller did not ask withResponse and gets the plain completion.
    const answer = await c.chat(body())
    expect(answer.object).toBe('chat.completion')
    const { response } = await c.chat(body(), { withResponse: true })
    expect(response.attempts).toBeGreaterThanOrEqual(1)
  } finally {
    await c.destroy()
  }
  const [span] = named('chat mock-model')
  expect(span.attributes).toMatchObject({ 'llmpool.attempts': 2, 'llmpool.upstream': 'b' })
  expect(span.status.code).not.toBe(SpanStatusCode.ERROR)
})

test('an abort is a cancellation, not a failure', async () => {
  const s = await server()
  s.setHandler(() => new Promise(() => {}))
  const c = client(s, { apiKey: KEY })
  const ac = new AbortController()
  const p = c.chat(body(), { signal: ac.signal })
  setTimeout(() => ac.abort(), 20)
  expect((await rejection(p)).code).toBe('ERR_ABORTED')
  const [span] = named('chat mock-model')
  expect(span.attributes['error.type']).toBe('cancelled')
  expect(span.status.code).not.toBe(SpanStatusCode.ERROR)
})

test('embeddings and request() name their operation; a stream left early ends its span as cancelled', async () => {
  const s = await server({ chunkDelay: 5 })
  const c = client(s, { apiKey: KEY })
  await c.embeddings({ model: 'emb', input: 'hello' })
  expect(named('embeddings emb')).toHaveLength(1)
  for await (const _ of c.chatStream(body('a b c d e f g'))) break
  const [span] = named('chat mock-model')
  expect(span.attributes['error.type']).toBe('cancelled')
})

test('the four GenAI histograms are recorded with the conventions\' buckets', async () => {
  const s = await server({ chunkDelay: 2 })
  const c = client(s, { apiKey: KEY })
  await c.chat(body('m n'))
  for await (const _ of c.chatStream({ ...body('p q r'), stream_options: { include_usage: true } })) void _
  const { resourceMetrics } = await metricReader.collect()
  const metrics = new Map(resourceMetrics.scopeMetrics.flatMap((sm) => sm.metrics).map((m) => [m.descriptor.name, m]))
  for (const name of [
    'gen_ai.client.operation.duration',
    'gen_ai.client.token.usage',
    'gen_ai.client.operation.time_to_first_chunk',
    'gen_ai.client.operation.time_per_output_chunk',
  ]) {
    const m = metrics.get(name) as any
    expect(m).toBeDefined()
    expect(m.dataPoints.reduce((n: number, p: any) => n + p.value.count, 0)).toBeGreaterThan(0)
  }
  const duration = metrics.get('gen_ai.client.operation.duration') as any
  expect(duration.dataPoints[0].value.buckets.boundaries.slice(0, 3)).toEqual([0.01, 0.02, 0.04])
  const tokens = metrics.get('gen_ai.client.token.usage') as any
  const types = new Set(tokens.dataPoints.map((p: any) => p.attributes['gen_ai.token.type']))
  expect(types).toEqual(new Set(['input', 'output']))
})

test('examples/otel.js exports GenAI spans and histograms over OTLP/HTTP to a local receiver', async () => {
  const http = await import('node:http')
  const { execFile } = await import('node:child_process')
  const { join } = await import('node:path')
  const received: Record<string, any[]> = { '/v1/traces': [], '/v1/metrics': [] }
  const receiver = http.createServer((req, res) => {
    let text = ''
    req.on('data', (d) => (text += d))
    req.on('end', () => {
      received[req.url ?? '']?.push(JSON.parse(text))
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r))
  const port = (receiver.address() as import('node:net').AddressInfo).port
  try {
    const env = { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}` }
    delete env.OPENAI_BASE_URL
    await new Promise<void>((resolve, reject) =>
      execFile(process.execPath, [join(__dirname, '..', 'examples', 'otel.js')], { env }, (e) => (e ? reject(e) : resolve())),
    )
  } finally {
    receiver.close()
  }
  const spans = received['/v1/traces'].flatMap((b) => b.resourceSpans.flatMap((r: any) => r.scopeSpans.flatMap((s: any) => s.spans)))
  const byName = new Map(spans.map((s: any) => [s.name, s]))
  const handler = byName.get('handle request')
  const chat = spans.filter((s: any) => s.name === 'chat gpt-4o-mini')
  expect(chat).toHaveLength(2)
  for (const s of chat) {
    expect(s.parentSpanId).toBe(handler.spanId)
    const attributes = Object.fromEntries(s.attributes.map((a: any) => [a.key, Object.values(a.value)[0]]))
    expect(attributes).toMatchObject({ 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': 'gpt-4o-mini', 'gen_ai.provider.name': 'openai' })
    expect(Number(attributes['gen_ai.usage.input_tokens'])).toBeGreaterThan(0)
  }
  const metricNames = received['/v1/metrics'].flatMap((b) => b.resourceMetrics.flatMap((r: any) => r.scopeMetrics.flatMap((s: any) => s.metrics.map((m: any) => m.name))))
  expect(new Set(metricNames)).toEqual(
    new Set([
      'gen_ai.client.operation.duration',
      'gen_ai.client.token.usage',
      'gen_ai.client.operation.time_to_first_chunk',
      'gen_ai.client.operation.time_per_output_chunk',
    ]),
  )
})
