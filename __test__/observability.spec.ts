// LLMPOOL_LOG tracing and Prometheus metrics(), through the public API.
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { body, client, completion, openaiHandler, rejection, sendJson, server } from './helpers'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { hostile } = require('../mock/server.js')

// eslint-disable-next-line @typescript-eslint/no-require-imports
const parsePrometheus: (text: string) => Array<{ name: string; type: string; metrics: any[] }> = require('parse-prometheus-text-format')

const KEY = 'sk-observability-SECRET-abcdef123456'

test('LLMPOOL_LOG=debug prints connect and reuse events to stderr, never the API key', async () => {
  const s = await server()
  const script = `
    const { Client } = require(${JSON.stringify(join(__dirname, '..', 'index.js'))})
    const c = new Client({ baseUrl: process.argv[1], apiKey: ${JSON.stringify(KEY)}, headers: { 'x-secret-header': ${JSON.stringify(KEY)} } })
    ;(async () => {
      await c.chat({ model: 'm', messages: [{ role: 'user', content: 'one' }] })
      await c.chat({ model: 'm', messages: [{ role: 'user', content: 'two' }] })
      // The server echoes every header back in a 401: the error is logged, redacted.
      await c.chat({ model: 'm', messages: [{ role: 'user', content: 'echo' }] }).catch(() => {})
      await c.close()
    })()
  `
  const run = (env: Record<string, string>) =>
    new Promise<{ stderr: string; failed: boolean }>((resolve) => {
      execFile(process.execPath, ['-e', script, s.url], { timeout: 20_000, env: { ...process.env, ...env } }, (error, _out, stderr) =>
        resolve({ failed: error !== null, stderr }),
      )
    })
  s.setHandler((ctx: any) => (ctx.body?.messages?.[0]?.content === 'echo' ? hostile.errorBodyEchoingHeaders(401)(ctx) : openaiHandler(ctx)))
  const on = await run({ LLMPOOL_LOG: 'debug' })
  expect(on.failed).toBe(false)
  expect(on.stderr).toContain('call failed')
  expect(on.stderr).toContain('connecting')
  expect(on.stderr).toContain('connected')
  expect(on.stderr).toContain('reusing an idle connection')
  expect(on.stderr).not.toContain(KEY)
  expect(on.stderr.toLowerCase()).not.toContain('authorization')
  // Every level, the most verbose included.
  const trace = await run({ LLMPOOL_LOG: 'trace' })
  expect(trace.failed).toBe(false)
  expect(trace.stderr).not.toContain(KEY)
  // Off by default: nothing printed.
  const off = await run({})
  expect(off.failed).toBe(false)
  expect(off.stderr).toBe('')
})

test('metrics() parses as Prometheus text and counts known traffic', async () => {
  const s = await server()
  s.setHandler(({ res, body: b, index }) => {
    if (index === 3) return sendJson(res, 401, { error: { message: 'no' } })
    if (b.stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      for (const piece of ['a', 'b', 'c']) {
        res.write(`data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] })}\n\n`)
      }
      return res.end('data: [DONE]\n\n')
    }
    sendJson(res, 200, completion(b, 'ok'))
  })
  const c = client(s, { apiKey: KEY })
  for (let i = 0; i < 3; i++) await c.chat(body())
  expect(await rejection(c.chat(body()))).toMatchObject({ status: 401 })
  for (let i = 0; i < 2; i++) for await (const _ of c.chatStream(body())) {
    // consume
  }
  const text = c.metrics()
  expect(text).not.toContain(KEY)
  const families = new Map(parsePrometheus(text).map((f) => [f.name, f]))
  const value = (name: string, labels: Record<string, string> = {}) => {
    const family = families.get(name)
    const sample = family?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
    return sample === undefined ? undefined : Number(sample.value)
  }
  const origin = s.origin
  expect(families.get('llmpool_requests_total')?.type).toBe('COUNTER')
  expect(value('llmpool_requests_total', { origin })).toBe(6)
  expect(value('llmpool_errors_total', { origin, code: 'ERR_HTTP_STATUS' })).toBe(1)
  expect(value('llmpool_retries_total', { origin })).toBe(0)
  expect(value('llmpool_connections_opened_total', { origin })).toBe(1)
  expect(value('llmpool_pool_connected', { origin })).toBe(1)
  expect(families.get('llmpool_pool_connected')?.type).toBe('GAUGE')
  // This parser keeps a labelled histogram's buckets (not its _count): the +Inf bucket is the count.
  const observations = (name: string) => Number(families.get(name)?.metrics[0]?.buckets?.['+Inf'])
  expect(families.get('llmpool_request_duration_seconds')?.type).toBe('HISTOGRAM')
  expect(observations('llmpool_request_duration_seconds')).toBe(6)
  expect(observations('llmpool_time_to_headers_seconds')).toBe(6)
  expect(observations('llmpool_time_to_first_token_seconds')).toBe(2)
  expect(observations('llmpool_stream_tokens_per_second')).toBe(2)
  // Cumulative: counts never fall as `le` rises. Ordered by `le` itself: an object's integer-like
  // keys ("1", "5", "10") come first whatever their insertion order.
  const buckets: Record<string, string> = families.get('llmpool_request_duration_seconds')?.metrics[0]?.buckets ?? {}
  const bound = (le: string) => (le === '+Inf' ? Infinity : Number(le))
  const counts = Object.entries(buckets)
    .sort(([a], [b]) => bound(a) - bound(b))
    .map(([, n]) => Number(n))
  expect(counts).toHaveLength(17)
  expect(counts).toEqual([...counts].sort((a, b) => a - b))
})

test("metrics() carries the GenAI conventions' four histograms with their buckets, tokens by type", async () => {
  const s = await server({ chunkDelay: 1 })
  const c = client(s, { apiKey: KEY })
  await c.chat(body('one two three'))
  for await (const _ of c.chatStream({ ...body('four five'), stream_options: { include_usage: true } })) void _
  for await (const _ of c.chatStream(body('six seven eight')).text()) void _
  const text = c.metrics()
  const family = (name: string) => parsePrometheus(text).find((f) => f.name === name)!
  // That parser drops a histogram's labels: the counts are read from the `_count` lines.
  const count = (name: string, extra = '') => {
    const line = new RegExp(`^${name}_count\\{origin="[^"]+"${extra}\\} (\\d+)$`, 'm').exec(text)
    return line ? Number(line[1]) : undefined
  }
  expect(family('gen_ai_client_operation_duration_seconds').type).toBe('HISTOGRAM')
  expect(family('gen_ai_client_token_usage').type).toBe('HISTOGRAM')
  expect(count('gen_ai_client_operation_duration_seconds')).toBe(3)
  // The chat and the stream that asked for usage reported it; the text stream did not.
  expect(count('gen_ai_client_token_usage', ',gen_ai_token_type="input"')).toBe(2)
  expect(count('gen_ai_client_token_usage', ',gen_ai_token_type="output"')).toBe(2)
  expect(count('gen_ai_client_operation_time_to_first_chunk_seconds')).toBe(2)
  expect(count('gen_ai_client_operation_time_per_output_chunk_seconds')).toBe(2)
  expect(text).toContain('gen_ai_client_operation_duration_seconds_bucket{origin="' + s.origin + '",le="0.01"}')
  expect(text).toMatch(/gen_ai_client_token_usage_bucket\{[^}]*gen_ai_token_type="input",le="67108864"\} 2$/m)
})
