'use strict'
// The clients under test, each behind the same three calls: chat(), stream() → chunk count, close().
// Every client parses every completion and every chunk with JSON.parse, as an application would.

const net = require('node:net')

const PATH = '/v1/chat/completions'

/** The test CA of the TLS scenarios (run.js makes it and passes its path). */
const benchCa = () => require('node:fs').readFileSync(process.env.BENCH_CA, 'utf8')

function llmpool({ baseUrl, connections }, from = '..', extra = {}) {
  const { Client } = require(from)
  const client = new Client({ baseUrl, connections, retry: false, poolTimeout: 0, timeout: 0, ...extra })
  return {
    chat: (body) => client.chat(body),
    async stream(body, headers) {
      let n = 0
      for await (const _ of client.chatStream(body, { headers })) n++
      return n
    },
    close: () => client.close(),
  }
}

function undici({ baseUrl, connections }, extra = {}) {
  const { Agent, request } = require('undici')
  const { createParser } = require('eventsource-parser')
  const dispatcher = new Agent({ connections, keepAliveTimeout: 90_000, ...extra })
  const url = baseUrl + '/chat/completions'
  const send = (body, headers = {}) =>
    request(url, { method: 'POST', dispatcher, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  return {
    async chat(body) {
      const res = await send(body)
      return res.body.json()
    },
    async stream(body, headers) {
      const res = await send({ ...body, stream: true }, headers)
      let n = 0
      const parser = createParser({
        onEvent(event) {
          if (event.data === '[DONE]') return
          JSON.parse(event.data)
          n++
        },
      })
      const decoder = new TextDecoder()
      for await (const bytes of res.body) parser.feed(decoder.decode(bytes, { stream: true }))
      return n
    },
    close: () => dispatcher.close(),
  }
}

/** The OpenAI SDK over a given fetch; `close` closes what carries it. */
function openaiSdk(baseUrl, fetchOptions, close) {
  const { default: OpenAI } = require('openai')
  const client = new OpenAI({ baseURL: baseUrl, apiKey: 'bench', maxRetries: 0, ...fetchOptions })
  return {
    chat: (body) => client.chat.completions.create(body),
    async stream(body, headers) {
      let n = 0
      const stream = await client.chat.completions.create({ ...body, stream: true }, { headers })
      for await (const _ of stream) n++
      return n
    },
    close,
  }
}

function openai({ baseUrl, connections }) {
  const { Agent, fetch } = require('undici')
  const dispatcher = new Agent({ connections, keepAliveTimeout: 90_000 })
  return openaiSdk(baseUrl, { fetch, fetchOptions: { dispatcher } }, () => dispatcher.close())
}

/** The OpenAI SDK on llmpool's transport (`fetch: client.fetch`) instead of undici's. */
function openaiOnLlmpool({ baseUrl, connections }) {
  const { Client } = require('..')
  const pool = new Client({ baseUrl, connections, retry: false, poolTimeout: 0, timeout: 0 })
  return openaiSdk(baseUrl, { fetch: pool.fetch }, () => pool.close())
}

/**
 * The floor: HTTP/1.1 keep-alive over node:net with the least parsing that works against the
 * bench server (content-length bodies, chunked SSE). No error handling beyond what it needs.
 */
function raw({ baseUrl, connections }) {
  const { hostname, port } = new URL(baseUrl)
  const idle = []
  const waiting = []
  let open = 0

  function connection() {
    const socket = net.connect({ host: hostname, port: Number(port), noDelay: true })
    socket.setEncoding('latin1')
    const conn = { socket, buffer: '', onData: null }
    socket.on('data', (text) => {
      conn.buffer += text
      conn.onData?.()
    })
    socket.on('error', () => {})
    return conn
  }

  function acquire() {
    if (idle.length) return Promise.resolve(idle.pop())
    if (open < connections) {
      open++
      return Promise.resolve(connection())
    }
    return new Promise((resolve) => waiting.push(resolve))
  }

  function release(conn) {
    conn.onData = null
    const next = waiting.shift()
    if (next) next(conn)
    else idle.push(conn)
  }

  function exchange(body, headers, onEvent) {
    return acquire().then(
      (conn) =>
        new Promise((resolve) => {
          const payload = Buffer.from(JSON.stringify(body))
          let extra = ''
          for (const [k, v] of Object.entries(headers)) extra += `${k}: ${v}\r\n`
          conn.socket.write(`POST ${PATH} HTTP/1.1\r\nhost: ${hostname}:${port}\r\ncontent-type: application/json\r\n${extra}content-length: ${payload.length}\r\n\r\n`)
          conn.socket.write(payload)
          let head = null
          let length = -1
          let events = ''
          conn.onData = () => {
            if (!head) {
              const end = conn.buffer.indexOf('\r\n\r\n')
              if (end < 0) return
              head = conn.buffer.slice(0, end).toLowerCase()
              conn.buffer = conn.buffer.slice(end + 4)
              const m = /content-length: (\d+)/.exec(head)
              length = m ? Number(m[1]) : -1
            }
            if (length >= 0) {
              if (conn.buffer.length < length) return
              const text = Buffer.from(conn.buffer.slice(0, length), 'latin1').toString('utf8')
              conn.buffer = conn.buffer.slice(length)
              release(conn)
              return resolve(JSON.parse(text))
            }
            // Chunked: size line, data, CRLF; a zero-size chunk ends the body.
            for (;;) {
              const lineEnd = conn.buffer.indexOf('\r\n')
              if (lineEnd < 0) return
              const size = parseInt(conn.buffer.slice(0, lineEnd), 16)
              if (conn.buffer.length < lineEnd + 2 + size + 2) return
              const data = conn.buffer.slice(lineEnd + 2, lineEnd + 2 + size)
              conn.buffer = conn.buffer.slice(lineEnd + 4 + size)
              if (size === 0) {
                release(conn)
                return resolve()
              }
              events += Buffer.from(data, 'latin1').toString('utf8')
              let split
              while ((split = events.indexOf('\n\n')) >= 0) {
                const event = events.slice(0, split)
                events = events.slice(split + 2)
                if (event.startsWith('data: ')) onEvent(event.slice(6))
              }
            }
          }
          conn.onData()
        }),
    )
  }

  return {
    chat: (body) => exchange(body, {}),
    async stream(body, headers = {}) {
      let n = 0
      await exchange({ ...body, stream: true }, headers, (data) => {
        if (data === '[DONE]') return
        JSON.parse(data)
        n++
      })
      return n
    },
    async close() {
      for (const c of idle) c.socket.destroy()
    },
  }
}

/**
 * Another build of llmpool for before/after comparisons in one run: `LLMPOOL_BASELINE=/path/to/a
 * checkout CLIENTS=undici,llmpool,baseline npm run bench` (the checkout built with `npm run build`).
 */
function baselinePath() {
  if (!process.env.LLMPOOL_BASELINE) throw new Error('the baseline clients need LLMPOOL_BASELINE=<checkout path>')
  return require('node:path').resolve(process.env.LLMPOOL_BASELINE)
}

const baseline = (options) => llmpool(options, baselinePath())

/**
 * The text fast path (`chatStream(body).text()`): only content strings cross into JS. The bench
 * server's chunks each carry `tok<i> `, so the chunks are counted by their spaces, which also
 * checks that no text was lost.
 */
function llmpoolText({ baseUrl, connections }, from = '..') {
  const { Client } = require(from)
  const client = new Client({ baseUrl, connections, retry: false, poolTimeout: 0, timeout: 0 })
  return {
    chat: (body) => client.chat(body),
    async stream(body, headers) {
      let n = 0
      for await (const piece of client.chatStream(body, { headers }).text()) {
        for (let i = piece.indexOf(' '); i !== -1; i = piece.indexOf(' ', i + 1)) n++
      }
      return n
    },
    close: () => client.close(),
  }
}

/** Limits that never bind (they are far above what a run sends): the bookkeeping's own cost. */
const LOOSE_LIMITS = { rpm: 1_000_000_000, tpm: 2_000_000_000, concurrency: 100_000 }

/** Traffic control's costs (issue 12's bench): two upstreams, local limits, limits in Redis. */
const routedClients = {
  // Two upstreams (the same server twice): routing, the model scan and the failover loop.
  'llmpool-2up': ({ baseUrl, connections }) => {
    const { Client } = require('..')
    const client = new Client({
      upstreams: [
        { name: 'a', baseUrl, connections },
        { name: 'b', baseUrl, connections },
      ],
      retry: false,
      poolTimeout: 0,
      timeout: 0,
    })
    return { chat: (body) => client.chat(body), stream: () => Promise.reject(new Error('chat only')), close: () => client.close() }
  },
  'llmpool-limits': (o) => llmpool(o, '..', { limits: LOOSE_LIMITS }),
  // BENCH_REDIS=redis://127.0.0.1:6379/0 (a redis-server the caller started).
  'llmpool-redis': (o) => {
    if (!process.env.BENCH_REDIS) throw new Error('llmpool-redis needs BENCH_REDIS=redis://host:port/db')
    return llmpool(o, '..', { limits: LOOSE_LIMITS, store: { redis: process.env.BENCH_REDIS, prefix: `bench-${process.pid}` } })
  },
}

/**
 * Traced (issue 25's bench): OpenTelemetry's SDK with the undici instrumentation, and
 * llmpool/otel for llmpool; spans go to an exporter that drops them, so what is measured is the
 * instrumentation's own cost. Each run is its own process: the global registration stays in it.
 */
function withOtel(make) {
  return (options) => {
    const api = require('@opentelemetry/api')
    const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks')
    const { W3CTraceContextPropagator } = require('@opentelemetry/core')
    const { registerInstrumentations } = require('@opentelemetry/instrumentation')
    const { UndiciInstrumentation } = require('@opentelemetry/instrumentation-undici')
    const { BasicTracerProvider, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base')
    const { MeterProvider } = require('@opentelemetry/sdk-metrics')
    const { LlmpoolInstrumentation } = require('../otel.js')
    api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
    api.propagation.setGlobalPropagator(new W3CTraceContextPropagator())
    const dropped = { export: (_spans, done) => done({ code: 0 }), shutdown: async () => {} }
    registerInstrumentations({
      instrumentations: [new LlmpoolInstrumentation(), new UndiciInstrumentation()],
      tracerProvider: new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(dropped)] }),
      meterProvider: new MeterProvider(),
    })
    return make(options)
  }
}

/** Over TLS (the `-tls` and `-h2` clients get the server's TLS address): HTTP/1.1, then HTTP/2. */
const tlsClients = {
  'llmpool-tls': (o) => llmpool(o, '..', { connect: { ca: benchCa() } }),
  'llmpool-h2': (o) => llmpool(o, '..', { allowH2: true, connect: { ca: benchCa() } }),
  'baseline-tls': (o) => llmpool(o, baselinePath(), { connect: { ca: benchCa() } }),
  'baseline-h2': (o) => llmpool(o, baselinePath(), { allowH2: true, connect: { ca: benchCa() } }),
  'undici-tls': (o) => undici(o, { connect: { ca: benchCa() } }),
  'undici-h2': (o) => undici(o, { allowH2: true, connect: { ca: benchCa() } }),
}

/** Every call's body made unique (its `user`), so that no two calls are the same call. */
function uniqueBodies(make) {
  return (options) => {
    const client = make(options)
    let n = 0
    return { ...client, chat: (body) => client.chat({ ...body, user: `u${n++}` }) }
  }
}

/**
 * The response cache: every call a hit after the first (the bench sends one body), or every call
 * a miss, while the cache fills (64 MiB: every answer of a run is kept, the heap grows) or full
 * (1 MiB, reached during the warm-up: each answer kept evicts the oldest, a long-running
 * service's steady state).
 */
const cacheClients = {
  'llmpool-cache-hit': (o) => llmpool(o, '..', { cache: true }),
  'llmpool-unique': uniqueBodies(llmpool),
  'llmpool-cache-miss': uniqueBodies((o) => llmpool(o, '..', { cache: true })),
  'llmpool-cache-full': uniqueBodies((o) => llmpool(o, '..', { cache: { maxBytes: 1 << 20 } })),
}

module.exports = {
  llmpool,
  'llmpool-text': llmpoolText,
  undici,
  openai,
  'openai-llmpool': openaiOnLlmpool,
  raw,
  baseline,
  'baseline-text': (options) => llmpoolText(options, baselinePath()),
  ...tlsClients,
  ...routedClients,
  'llmpool-otel': withOtel(llmpool),
  'undici-otel': withOtel(undici),
  ...cacheClients,
}
