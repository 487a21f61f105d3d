'use strict'
// An OpenAI-compatible mock server for the demo and the tests. It answers
// POST …/chat/completions (JSON, or SSE when the body asks for `stream: true`), counts the
// connections it accepted, records requests, and lets a test replace the handler to inject faults.

const http = require('node:http')
const https = require('node:https')

/** The completion text the default handler answers with, from the last user message. */
function replyText(body) {
  const messages = Array.isArray(body?.messages) ? body.messages : []
  const last = [...messages].reverse().find((m) => m && m.role === 'user')
  const text = typeof last?.content === 'string' ? last.content : ''
  return `Hello from the mock! You said: ${text}`
}

function usageOf(content) {
  const completionTokens = content.split(' ').length
  return { prompt_tokens: 5, completion_tokens: completionTokens, total_tokens: 5 + completionTokens }
}

function completion(body, content, extra = {}) {
  return {
    id: 'chatcmpl-mock',
    object: 'chat.completion',
    created: 1_700_000_000,
    model: body?.model ?? 'mock-model',
    choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: 'stop' }],
    usage: usageOf(content),
    ...extra,
  }
}

function chunk(body, delta, finishReason = null) {
  return {
    id: 'chatcmpl-mock',
    object: 'chat.completion.chunk',
    created: 1_700_000_000,
    model: body?.model ?? 'mock-model',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
  }
}

/** Splits text into word-sized pieces that join back into the same text. */
function pieces(text) {
  return text.match(/\S+\s*|\s+/g) ?? []
}

function sendJson(res, status, value, headers = {}) {
  const text = JSON.stringify(value)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers })
  res.end(text)
}

/** A small deterministic embedding of a text: 8 numbers from its character codes. */
function embed(text) {
  const vector = new Array(8).fill(0)
  for (let i = 0; i < text.length; i++) vector[i % 8] += text.charCodeAt(i) / 1000
  return vector
}

/** POST …/embeddings: one embedding per input. */
function embeddingsAnswer(body, res) {
  const inputs = Array.isArray(body?.input) ? body.input : [body?.input ?? '']
  const tokens = inputs.reduce((n, t) => n + String(t).split(' ').length, 0)
  sendJson(res, 200, {
    object: 'list',
    data: inputs.map((input, index) => ({ object: 'embedding', index, embedding: embed(String(input)) })),
    model: body?.model ?? 'mock-embedding',
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  })
}

/** A Responses API `response` object. */
function responseObject(body, text, status) {
  return {
    id: 'resp_mock',
    object: 'response',
    created_at: 1_700_000_000,
    status,
    model: body?.model ?? 'mock-model',
    output:
      status === 'completed'
        ? [{ type: 'message', id: 'msg_mock', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [] }] }]
        : [],
    usage: status === 'completed' ? usageOf(text) : null,
  }
}

/** POST …/responses: a response, or its stream of typed events (`chunkDelay` ms apart). */
async function responsesAnswer(body, res, server) {
  const input = typeof body?.input === 'string' ? body.input : JSON.stringify(body?.input ?? '')
  const text = `Hello from the mock! You said: ${input}`
  if (!body?.stream) return sendJson(res, 200, { ...responseObject(body, text, 'completed'), output_text: text })
  const delay = server?.options.chunkDelay ?? 0
  let sequence = 0
  const send = (type, extra) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...extra })}\n\n`)
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
  send('response.created', { response: responseObject(body, '', 'in_progress') })
  for (const delta of pieces(text)) {
    if (delay) await new Promise((r) => setTimeout(r, delay))
    if (res.destroyed) return
    send('response.output_text.delta', { item_id: 'msg_mock', output_index: 0, content_index: 0, delta })
  }
  send('response.output_text.done', { item_id: 'msg_mock', output_index: 0, content_index: 0, text })
  send('response.completed', { response: responseObject(body, text, 'completed') })
  res.end()
}

/**
 * The default behaviour: `…/embeddings` and `…/responses` as OpenAI answers them, and for any
 * other path a chat completion, or an SSE stream of it (`chunkDelay` ms apart).
 */
async function openaiHandler({ req, body, res, server }) {
  const path = (req?.url ?? '').split('?')[0]
  if (path.endsWith('/embeddings')) return embeddingsAnswer(body, res)
  if (path.endsWith('/responses')) return responsesAnswer(body, res, server)
  const content = replyText(body)
  if (!body?.stream) return sendJson(res, 200, completion(body, content))
  const delay = server?.options.chunkDelay ?? 0
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
  res.write(`data: ${JSON.stringify(chunk(body, { role: 'assistant', content: '' }))}\n\n`)
  for (const piece of pieces(content)) {
    if (delay) await new Promise((r) => setTimeout(r, delay))
    if (res.destroyed) return
    res.write(`data: ${JSON.stringify(chunk(body, { content: piece }))}\n\n`)
  }
  res.write(`data: ${JSON.stringify(chunk(body, {}, 'stop'))}\n\n`)
  if (body.stream_options?.include_usage) {
    res.write(`data: ${JSON.stringify({ ...chunk(body, {}), choices: [], usage: usageOf(content) })}\n\n`)
  }
  res.end('data: [DONE]\n\n')
}

/** Every request header, as a hostile server would quote it back. */
function quoteHeaders(req) {
  return Object.entries(req.headers)
    .map(([k, v]) => `${k}: ${v}`)
    .join('; ')
}

/**
 * Handlers of servers that misbehave on purpose, for tests that think like an attacker. Each
 * returns a handler to pass to `setHandler`.
 */
const hostile = {
  /** A stream whose first data event is an error quoting every request header. */
  streamErrorEchoingHeaders: () => ({ req, res }) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.end(`data: ${JSON.stringify({ error: { message: `bad request, headers were ${quoteHeaders(req)}` } })}\n\n`)
  },
  /** A JSON body with a top-level error quoting every request header, under `status`. */
  errorBodyEchoingHeaders: (status = 200) => ({ req, res }) => {
    const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [`x-echo-${k}`, String(v)]))
    sendJson(res, status, { error: { message: `headers were ${quoteHeaders(req)}`, headers: req.headers } }, headers)
  },
  /** A 429 with a retry header of any value (`1e20`, `NaN`, a date in year 99999, …). */
  retryHeader: (name, value) => ({ res }) => {
    sendJson(res, 429, { error: { message: 'slow down' } }, { [name]: value })
  },
  /** Reads the whole request, works for `ms`, then resets the connection without a byte. */
  resetAfterRead: (ms = 200) => async ({ res }) => {
    await new Promise((r) => setTimeout(r, ms))
    res.socket.resetAndDestroy()
  },
  /** A 200 completion padded to about `bytes` bytes. */
  oversizedBody: (bytes) => ({ res, body }) => {
    sendJson(res, 200, completion(body, 'x'.repeat(bytes)))
  },
  /** A stream with one small chunk, then one data event of about `bytes` bytes, then the end. */
  bigEvent: (bytes) => ({ res, body }) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write(`data: ${JSON.stringify(chunk(body, { role: 'assistant', content: '' }))}\n\n`)
    res.write(`data: ${JSON.stringify(chunk(body, { content: 'y'.repeat(bytes) }))}\n\n`)
    res.write(`data: ${JSON.stringify(chunk(body, {}, 'stop'))}\n\n`)
    res.end('data: [DONE]\n\n')
  },
}

class MockServer {
  /**
   * @param {object} [options]
   * @param {number} [options.idleClose] ms after a response after which the server closes (FIN) an
   *   idle socket; default: never (Node's own keep-alive timer is turned off)
   * @param {string|null} [options.keepAliveHint] the `Keep-Alive` header to send; null sends none
   * @param {{key: string, cert: string}} [options.tls] serve https with this key and certificate
   * @param {Function} [options.handler] replaces the default handler
   * @param {number} [options.chunkDelay] ms between streamed chunks of the default handler
   */
  constructor(options = {}) {
    this.options = options
    this.handler = options.handler ?? openaiHandler
    this.accepted = 0
    this.requests = []
    this.sockets = new Set()
    const listener = (req, res) => this.#onRequest(req, res)
    this.server = options.tls ? https.createServer({ key: options.tls.key, cert: options.tls.cert }, listener) : http.createServer(listener)
    // Node adds its own slack to keepAliveTimeout; the mock closes idle sockets itself, on time.
    this.server.keepAliveTimeout = 0
    this.server.headersTimeout = 0
    this.server.requestTimeout = 0
    const onSocket = (socket) => {
      this.accepted += 1
      this.sockets.add(socket)
      socket.on('close', () => this.sockets.delete(socket))
    }
    this.server.on(options.tls ? 'secureConnection' : 'connection', onSocket)
  }

  async #onRequest(req, res) {
    const socket = req.socket
    clearTimeout(socket.idleTimer)
    if (this.options.idleClose) {
      res.on('finish', () => {
        socket.idleTimer = setTimeout(() => socket.end(), this.options.idleClose)
      })
    }
    const chunks = []
    for await (const c of req) chunks.push(c)
    const raw = Buffer.concat(chunks).toString('utf8')
    let body
    try {
      body = JSON.parse(raw)
    } catch {
      body = undefined
    }
    const record = { method: req.method, url: req.url, headers: req.headers, raw, body }
    this.requests.push(record)
    if ('keepAliveHint' in this.options) {
      // Setting Connection ourselves stops Node adding its own Keep-Alive header.
      res.setHeader('connection', 'keep-alive')
      if (this.options.keepAliveHint !== null) res.setHeader('keep-alive', this.options.keepAliveHint)
    }
    try {
      await this.handler({ req, res, body, raw, server: this, index: this.requests.length - 1 })
    } catch (e) {
      if (!res.headersSent) sendJson(res, 500, { error: { message: `mock handler failed: ${e.message}` } })
      else res.destroy()
    }
  }

  listen() {
    return new Promise((resolve) => {
      this.server.listen(0, '127.0.0.1', () => {
        const { port } = this.server.address()
        this.port = port
        this.origin = `${this.options.tls ? 'https' : 'http'}://127.0.0.1:${port}`
        this.url = `${this.origin}/v1`
        resolve(this)
      })
    })
  }

  /** Replaces the handler (fault injection). */
  setHandler(handler) {
    this.handler = handler
  }

  close() {
    for (const socket of this.sockets) socket.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

/** Starts a mock server on 127.0.0.1 and a free port. */
function startMockServer(options) {
  return new MockServer(options).listen()
}

module.exports = { startMockServer, MockServer, openaiHandler, sendJson, completion, chunk, pieces, replyText, hostile }
