// undici's diagnostics channels for llmpool's requests: the real
// @opentelemetry/instrumentation-undici, unchanged, makes a span per request (per attempt) and
// its traceparent reaches the server; with llmpool/otel too, each request span is a child of
// the call's GenAI span.
import { context, propagation, trace, SpanStatusCode } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { registerInstrumentations } from '@opentelemetry/instrumentation'
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { LlmpoolInstrumentation } from '../otel.js'
import diagnostics from 'node:diagnostics_channel'
import { body, client, sendJson, server } from './helpers'

const KEY = 'sk-undici-channels-secret-42'

const spans = new InMemorySpanExporter()
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] })
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
propagation.setGlobalPropagator(new W3CTraceContextPropagator())
const unregister = registerInstrumentations({
  instrumentations: [
    new UndiciInstrumentation({ headersToSpanAttributes: { requestHeaders: ['authorization', 'user-agent'], responseHeaders: ['content-type'] } }),
    new LlmpoolInstrumentation(),
  ],
  tracerProvider,
})
const tracer = tracerProvider.getTracer('test')

afterAll(async () => {
  diagnostics.unsubscribe('undici:request:create', onCreate)
  unregister()
  await tracerProvider.shutdown()
  context.disable()
  propagation.disable()
})
beforeEach(() => spans.reset())

const parentOf = (s: any) => s.parentSpanContext?.spanId ?? s.parentSpanId
/** Every request's headers as published on undici:request:create. */
const created: string[][] = []
const onCreate = (m: any) => created.push([...m.request.headers])
diagnostics.subscribe('undici:request:create', onCreate)
const http = () => spans.getFinishedSpans().filter((s) => s.name === 'POST' || s.name === 'GET')

test('each attempt is a request span, child of the call\'s GenAI span; its traceparent reaches the server', async () => {
  const s = await server()
  s.setHandler(({ res, index, body: b }) =>
    index === 0 ? sendJson(res, 503, { error: { message: 'busy' } }) : sendJson(res, 200, { id: 'c1', object: 'chat.completion', model: b.model, choices: [] }),
  )
  const c = client(s, { apiKey: KEY, retry: { maxRetries: 1, minTimeout: 1, maxTimeout: 1 } })
  await tracer.startActiveSpan('handler', async (handler) => {
    await c.chat(body())
    handler.end()
  })
  const [genai] = spans.getFinishedSpans().filter((x) => x.name === 'chat mock-model')
  const requests = http()
  expect(requests).toHaveLength(2)
  for (const r of requests) {
    expect(parentOf(r)).toBe(genai.spanContext().spanId)
    expect(r.spanContext().traceId).toBe(genai.spanContext().traceId)
    expect(r.attributes).toMatchObject({ 'http.request.method': 'POST', 'server.address': '127.0.0.1', 'url.path': '/v1/chat/completions' })
    expect(String(r.attributes['user_agent.original'])).toContain('llmpool/')
  }
  // The key's header is never shown to watchers.
  expect(created.flat().join('\n')).not.toContain(KEY)
  expect(created[0]).toContain('user-agent')
  expect(requests.map((r) => r.attributes['http.response.status_code'])).toEqual([503, 200])
  expect(requests[0].status.code).toBe(SpanStatusCode.ERROR)
  // What the server received: each attempt's own traceparent, in the call's trace.
  const sent = s.requests.map((r) => r.headers.traceparent)
  expect(sent).toEqual(requests.map((r) => `00-${r.spanContext().traceId}-${r.spanContext().spanId}-01`))
  expect(JSON.stringify(spans.getFinishedSpans().map((x) => x.attributes))).not.toContain(KEY)
})

test('a stream\'s request span ends when the stream does; a fetch is a request span too', async () => {
  const s = await server({ chunkDelay: 2 })
  const c = client(s, { apiKey: KEY })
  let chunks = 0
  for await (const _ of c.chatStream(body('a b c'))) chunks++
  const [request] = http()
  expect(chunks).toBeGreaterThan(2)
  expect(request.attributes['http.response.status_code']).toBe(200)
  expect(s.requests[0].headers.traceparent).toBe(`00-${request.spanContext().traceId}-${request.spanContext().spanId}-01`)
  spans.reset()
  const res = await c.fetch(`${s.url}/models`)
  await res.text()
  expect(http().map((r) => r.name)).toEqual(['GET'])
})

test('without subscribers nothing is watched: no traceparent is sent', async () => {
  unregister()
  try {
    const s = await server()
    const c = client(s)
    await c.chat(body())
    expect(s.requests[0].headers.traceparent).toBeUndefined()
    expect(http()).toHaveLength(0)
  } finally {
    registerInstrumentations({ instrumentations: [], tracerProvider })
  }
})

test('a watched stream that is never iterated holds nothing open: the process can exit', async () => {
  const { execFile } = await import('node:child_process')
  const { join } = await import('node:path')
  const s = await server()
  // A child process that watches undici's channels, opens a stream, never iterates it, and
  // ends: it must exit by itself.
  const script = `
    const diagnostics = require('node:diagnostics_channel')
    diagnostics.subscribe('undici:request:create', () => {})
    const { Client } = require(${JSON.stringify(join(__dirname, '..', 'index.js'))})
    const c = new Client({ baseUrl: process.argv[1] })
    c.chatStream({ model: 'm', messages: [] })
    c.chat({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }).then(() => console.log('done'))
  `
  const started = Date.now()
  const out = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, ['-e', script, s.url], { timeout: 20_000 }, (e, stdout) => (e ? reject(e) : resolve(stdout))),
  )
  expect(out.trim()).toBe('done')
  expect(Date.now() - started).toBeLessThan(20_000)
})
