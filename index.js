'use strict'
// The public `Client`: argument checks, AbortSignal wiring and JSON parsing in JS; pooling,
// timeouts and I/O in the native core (see src/).

const { inspect } = require('node:util')
const { NativeClient, CancelToken, STREAM_WINDOW_EVENTS, mergeChatChunks } = require('./binding.js')
const { LlmpoolError, fromInfo, llmpoolError, llmpoolTypeError } = require('./errors.js')


/**
 * Serialises the options for the native validator. JSON cannot say NaN, Infinity, functions or
 * BigInts, and silently turns them into null or nothing; they become strings here so that the
 * validator rejects them with the option's name instead of taking a default.
 */
function optionReplacer(key, value) {
  const original = this[key]
  if (Buffer.isBuffer(original)) return original.toString('utf8')
  switch (typeof value) {
    case 'number':
      return Number.isFinite(value) ? value : String(value)
    case 'function':
    case 'symbol':
    case 'bigint':
      return `[${typeof value}]`
    default:
      return value
  }
}

/** A broken rule of the caller's: a `TypeError` with a stable code, as Node's own. */
function invalidArg(message) {
  return llmpoolTypeError(message, 'ERR_INVALID_ARG')
}

function isPlainObject(value) {
  if (value === null || typeof value !== 'object') return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

function serializeBody(body, method) {
  if (!isPlainObject(body)) throw invalidArg(`${method}() body must be a plain object`)
  let json
  try {
    json = JSON.stringify(body)
  } catch (e) {
    throw invalidArg(`${method}() body must be JSON-serialisable: ${e.message}`)
  }
  return json
}

function isAbortSignal(value) {
  return (
    value !== null &&
    typeof value === 'object' &&
    typeof value.aborted === 'boolean' &&
    typeof value.addEventListener === 'function'
  )
}

/**
 * Splits per-call options into the signal (wired here) and the rest as JSON for the native
 * validator, which checks them by the same rules as the client's options.
 */
function readCallOptions(options) {
  if (options === undefined || options === null) return { signal: undefined, native: undefined }
  if (!isPlainObject(options)) throw invalidArg('call options must be an object')
  const { signal, ...rest } = options
  if (signal !== undefined && !isAbortSignal(signal)) throw invalidArg('signal must be an AbortSignal')
  let native
  for (const _ in rest) {
    native = JSON.stringify(rest, optionReplacer)
    break
  }
  return { signal, native }
}

/** Wires an AbortSignal to a native cancel token; returns the token and a detach function. */
function linkSignal(signal) {
  if (!signal) return { cancel: undefined, detach: () => {} }
  const cancel = new CancelToken()
  const onAbort = () => cancel.cancel()
  signal.addEventListener('abort', onAbort, { once: true })
  return { cancel, detach: () => signal.removeEventListener('abort', onAbort) }
}

function nativeArgumentError(e) {
  if (e && e.code === 'InvalidArg') return invalidArg(e.message)
  // Anything else the binding throws is a bug, but still an LlmpoolError with a code.
  return llmpoolError('ERR_INTERNAL', String(e?.message ?? e))
}

/**
 * Results come back from Rust through one callback, `deliver(ids, values)`, under ids chosen
 * here; this table maps each id to the function that settles its call. It also keeps Node's
 * event loop alive while anything is in flight (the native side does not, so that an idle client
 * never holds a process open).
 */
class Inbox {
  #handlers = new Map()
  #nextId = 0
  #keepAlive = null

  /** Registers a handler for one delivery and returns the id to pass to the native call. */
  expect(handler) {
    const id = this.subscribe((value) => {
      this.#handlers.delete(id)
      handler(value)
    })
    return id
  }

  /** Registers a handler for every delivery under the returned id, until `unsubscribe(id)`. */
  subscribe(handler) {
    const id = this.#nextId
    this.#nextId = (this.#nextId + 1) >>> 0
    this.#handlers.set(id, handler)
    if (this.#handlers.size === 1) {
      this.#keepAlive ??= setInterval(() => {}, 2 ** 31 - 1)
      this.#keepAlive.ref()
    }
    return id
  }

  unsubscribe(id) {
    this.#handlers.delete(id)
    this.#idle()
  }

  deliver = (ids, values) => {
    for (let i = 0; i < ids.length; i++) {
      const handler = this.#handlers.get(ids[i])
      if (handler !== undefined) handler(values[i])
    }
    this.#idle()
  }

  #idle() {
    if (this.#handlers.size === 0 && this.#keepAlive) this.#keepAlive.unref()
  }
}

class Client {
  #native
  #origin
  #baseURL
  #inbox = new Inbox()

  /** @param {import('./index').ClientOptions} options */
  constructor(options) {
    if (!isPlainObject(options)) throw invalidArg('options must be an object')
    let json
    try {
      json = JSON.stringify(options, optionReplacer)
    } catch (e) {
      throw invalidArg(`options must be JSON-serialisable: ${e.message}`)
    }
    try {
      this.#native = new NativeClient(json, this.#inbox.deliver)
    } catch (e) {
      throw nativeArgumentError(e)
    }
    // What Node itself would warn about (an unreadable NODE_EXTRA_CA_CERTS file, …).
    for (const warning of this.#native.warnings()) process.emitWarning(warning, 'LlmpoolWarning')
    this.#origin = options.upstreams == null ? new URL(options.baseUrl).origin : UPSTREAMS_ORIGIN
    this.#baseURL = options.upstreams == null ? options.baseUrl : UPSTREAMS_ORIGIN
  }

  /**
   * The base URL to give an SDK that uses `client.fetch`: `baseUrl`, or with `upstreams` a
   * stand-in whose paths go to whichever upstream the router picks.
   */
  get baseURL() {
    return this.#baseURL
  }

  /** One chat completion; resolves with the parsed `ChatCompletion`. */
  chat(body, options) {
    return this.#callJson('chat', body, options, (id, json, native, cancel) => this.#native.chat(id, json, native, cancel))
  }

  /**
   * Any JSON endpoint under `baseUrl` (`/embeddings`, `/responses`, `/completions`,
   * `/moderations`, …): `POST {baseUrl}{path}` with `body`, resolving with the parsed answer, with
   * the same pool, retries, limits, redaction and errors as `chat()`.
   */
  request(path, body, options) {
    if (typeof path !== 'string') return Promise.reject(invalidArg('request() path must be a string such as "/embeddings"'))
    return this.#callJson('request', body, options, (id, json, native, cancel) => this.#native.request(id, path, json, native, cancel))
  }

  /** `POST {baseUrl}/embeddings`: a `CreateEmbeddingResponse`. */
  embeddings(body, options) {
    return this.request('/embeddings', body, options)
  }

  #callJson(method, body, options, send) {
    return new Promise((resolve, reject) => {
      const json = serializeBody(body, method)
      if (method === 'chat' && body.stream === true) {
        throw invalidArg('chat() body.stream must not be true: use chatStream() to stream')
      }
      const { signal, native } = readCallOptions(options)
      if (signal?.aborted) throw llmpoolError('ERR_ABORTED', `request to ${this.#origin} was aborted`)
      const { cancel, detach } = linkSignal(signal)
      const withResponse = options?.withResponse === true
      const id = this.#inbox.expect((value) => {
        detach()
        // Rust decided the outcome: a string is the answer, checked to be a JSON object.
        if (typeof value !== 'string') return reject(fromInfo(value))
        try {
          resolve(withResponse ? withResponseOf(JSON.parse(value)) : JSON.parse(value))
        } catch (e) {
          // Only JSON that V8 refuses and serde accepted (none is known) could land here.
          reject(llmpoolError('ERR_INVALID_RESPONSE', `${this.#origin} sent a body that is not JSON: ${e.message}`))
        }
      })
      try {
        send(id, json, native, cancel)
      } catch (e) {
        // The native call could not even start: nothing will be delivered under `id`.
        this.#inbox.unsubscribe(id)
        detach()
        throw nativeArgumentError(e)
      }
    })
  }

  /**
   * A streaming chat completion: an async iterable of `ChatCompletionChunk`s. The request is sent
   * when iteration starts (the first `next()`), so a stream that is never iterated costs nothing.
   * Invalid arguments throw a `TypeError` here, synchronously.
   */
  chatStream(body, options) {
    return this.#openStream('chatStream', body, options, ChatStream, (json, native, cancel) => this.#native.chatStream(json, native, cancel))
  }

  /**
   * Any SSE endpoint under `baseUrl`: an async iterable of `{ event, data }` (data parsed as
   * JSON), on the same decoder, flow control and timeouts as `chatStream()`. `stream: true` is
   * added to the body unless it has a `stream` member. `[DONE]`, `response.completed` and
   * `response.incomplete` end it; `error` and `response.failed` events fail it.
   */
  stream(path, body, options) {
    if (typeof path !== 'string') throw invalidArg('stream() path must be a string such as "/responses"')
    return this.#openStream('stream', body, options, EventStream, (json, native, cancel) => this.#native.stream(path, json, native, cancel))
  }

  /** `POST {baseUrl}/responses` streamed: the Responses API's typed events. */
  responsesStream(body, options) {
    return this.stream('/responses', body, options)
  }

  #openStream(method, body, options, Kind, open) {
    serializeBody(body, method)
    const { signal, native } = readCallOptions(options)
    // A shallow copy: the caller's object is never touched.
    const json = JSON.stringify(method === 'chatStream' || !('stream' in body) ? { ...body, stream: true } : body)
    const { cancel, detach } = linkSignal(signal)
    let handle
    try {
      handle = open(json, native, cancel)
    } catch (e) {
      detach()
      throw nativeArgumentError(e)
    }
    if (signal?.aborted) cancel.cancel()
    return new Kind(handle, this.#inbox, this.#origin, detach)
  }

  /**
   * A WHATWG `fetch` for the SDKs (`new OpenAI({ fetch: client.fetch })`): requests to this
   * client's origin go through its pool, TLS, proxy, timeouts and retries; the body streams. See
   * the README for what it keeps and what it cannot.
   */
  fetch = (input, init) => fetchThrough(this.#native, this.#inbox, this.#origin, input, init)

  /**
   * Prometheus text exposition (format 0.0.4): counters (requests, errors by code, retries,
   * connections), pool gauges and histograms (time to headers, time to first token, request
   * duration, stream tokens per second), all labelled with the origin.
   */
  metrics() {
    return this.#native.metrics()
  }

  /**
   * Runs many calls through this client (its pool, retries and `limits`): resolves with the
   * results in input order, each `{ ok: true, value }` or `{ ok: false, error }` (one failure
   * never rejects the batch), and a summary `{ done, failed, tokens, elapsedMs }`. `call` picks the
   * endpoint (default `chat`); `onProgress(summary)` follows every item.
   */
  async batch(bodies, options = {}) {
    if (!Array.isArray(bodies)) throw invalidArg('batch() bodies must be an array')
    if (!isPlainObject(options)) throw invalidArg('batch() options must be an object')
    const { concurrency = 8, signal, onProgress, call = (body, o) => this.chat(body, o) } = options
    if (!(Number.isInteger(concurrency) && concurrency > 0)) throw invalidArg('concurrency must be a positive integer')
    if (typeof call !== 'function') throw invalidArg('call must be a function (body, options) => Promise')
    if (onProgress !== undefined && typeof onProgress !== 'function') throw invalidArg('onProgress must be a function')
    if (signal !== undefined && !isAbortSignal(signal)) throw invalidArg('signal must be an AbortSignal')
    const started = Date.now()
    const results = new Array(bodies.length)
    const summary = { done: 0, failed: 0, tokens: 0, elapsedMs: 0 }
    let next = 0
    const worker = async () => {
      while (next < bodies.length) {
        const i = next++
        try {
          const value = await call(bodies[i], signal ? { signal } : undefined)
          results[i] = { ok: true, value }
          summary.done++
          summary.tokens += value?.usage?.total_tokens ?? 0
        } catch (error) {
          results[i] = { ok: false, error }
          summary.failed++
        }
        summary.elapsedMs = Date.now() - started
        onProgress?.({ ...summary, total: bodies.length })
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, bodies.length) }, worker))
    summary.elapsedMs = Date.now() - started
    return { results, summary }
  }

  /**
   * The provider's rate limits as the last response that carried them reported (OpenAI/Groq
   * `x-ratelimit-*`, Anthropic `anthropic-ratelimit-*`), or null.
   */
  rateLimits(upstream) {
    const all = this.#native.rateLimits()
    if (upstream === undefined) return all[0]?.limits ?? null
    const found = all.find((u) => u.name === upstream)
    if (!found) throw invalidArg(`rateLimits() upstream ${JSON.stringify(upstream)} is not configured`)
    return found.limits ?? null
  }

  /** Every upstream's rate limits, by name (one entry, the origin, with `baseUrl`). */
  rateLimitsByUpstream() {
    return Object.fromEntries(this.#native.rateLimits().map((u) => [u.name, u.limits ?? null]))
  }

  /** Pool gauges (undici's `PoolStats` meanings) and counters. */
  stats() {
    return this.#native.stats()
  }

  /** Stops taking calls, waits for in-flight ones, closes every connection. */
  close() {
    return this.#native.close()
  }

  /** Aborts in-flight calls with `ERR_CLOSED` and closes every connection at once. */
  destroy() {
    this.#native.destroy()
    return Promise.resolve()
  }

  [inspect.custom]() {
    return `Client { origin: '${this.#origin}' }`
  }

  toJSON() {
    return { origin: this.#origin }
  }
}

/** What a chat stream's text view asks of its iterator (not public API). */
const TEXT_MODE = Symbol('llmpool.textMode')
const IN_TEXT_MODE = Symbol('llmpool.inTextMode')
const MERGED = Symbol('llmpool.merged')
const RAW = Symbol('llmpool.raw')
const STARTED = Symbol('llmpool.started')

/** Stream signals from Rust (numbers, see src/binding/mailbox.rs). */
const SIGNAL_DONE = 0
const SIGNAL_STALLED = 1
/** Between two stream payloads in one delivery (no payload contains it: see `src/binding/mailbox.rs`). */
const PAYLOAD_SEPARATOR = '\x1e'

/**
 * The async iterator of one chat stream. Rust pushes arrays of payloads as they arrive (merged
 * while this side is busy), each already checked (a JSON object, no error); they are parsed and
 * yielded one at a time. Every ending (complete, truncated, an error) is decided in Rust and
 * arrives as a signal or an error. Flow control: Rust stops reading the socket once
 * STREAM_WINDOW_EVENTS events (or its byte window) are delivered and not acknowledged; this side
 * acknowledges what it yielded every half window, and at once after Rust says it stalled, so a
 * fast consumer costs one call into Rust per ~128 chunks and a slow one holds Rust back.
 */
/**
 * The executor of every next() promise: one shared function, not a closure per call. It hands
 * the promise's resolve and reject over through these two variables, read at once by the caller.
 */
let heldResolve = null
let heldReject = null
function holdSettlers(resolve, reject) {
  heldResolve = resolve
  heldReject = reject
}

class NativeIterator {
  #native
  #inbox
  #origin
  #detach
  #id = -1
  /**
   * Delivered batches not yet fully yielded (arrays of payloads; in text mode, strings), and the
   * position in the first.
   */
  #queue = []
  #position = 0
  /** Events yielded and not yet acknowledged. */
  #used = 0
  /** Rust waits for acknowledgements. */
  #stalled = false
  /** The last delivery has arrived (or the stream was cancelled). */
  #ended = false
  /** An error to raise once the queued payloads are yielded. */
  #error = null
  /** Payloads are yielded as the JSON text they arrived as (`finalCompletion()` in object mode). */
  #raw = false
  /** Text mode: deliveries are strings, yielded as they are. */
  #text = false
  /**
   * The next() call waiting for a delivery: its promise's resolve and reject (one plain promise
   * per waiting call; no async frame, no array). Further calls made while one waits (rare) queue
   * in `#more`, flattened, in call order.
   *
   * Why fields and not one array: every open stream has a call waiting most of the time, a new
   * one per chunk; fields and a shared executor (`holdSettlers`) make no array store and no
   * closure for it. (The promise, its settlers and the consumer's `await` remain, alive at each
   * young-generation GC: see the README's Performance section.)
   */
  #resolve = null
  #reject = null
  #more = null
  /** `#serve` is running (an ending inside it must not settle calls out of order). */
  #serving = false
  /** Set once started: how the inbox reaches this stream (weakly, strongly while a call waits). */
  #holder = null

  constructor(native, inbox, origin, detach) {
    this.#native = native
    this.#inbox = inbox
    this.#origin = origin
    this.#detach = detach
  }

  [Symbol.asyncIterator]() {
    return this
  }

  /** Concurrent calls settle in call order, each with the next chunk (or the end). */
  next() {
    if (this.#resolve === null) {
      if (this.#ready()) {
        // Nothing is ahead and something is ready: settle now.
        try {
          return Promise.resolve(this.#settle())
        } catch (e) {
          return Promise.reject(e)
        }
      }
      if (this.#id === -1) {
        try {
          this.#start()
        } catch (e) {
          return Promise.reject(e)
        }
      }
      // While a call waits, the stream must stay reachable: the inbox holds it only weakly, and
      // a waiting consumer is not an abandoned one.
      this.#holder.strong = this
      const promise = new Promise(holdSettlers)
      this.#resolve = heldResolve
      this.#reject = heldReject
      heldResolve = heldReject = null
      return promise
    }
    const promise = new Promise(holdSettlers)
    ;(this.#more ??= []).push(heldResolve, heldReject)
    heldResolve = heldReject = null
    return promise
  }

  /** A call can be settled now: an item is queued, or the error or the end has come. */
  #ready() {
    return this.#queue.length > 0 || this.#error !== null || this.#ended
  }

  /** One call's result, when `#ready()`: the next item, else the error (thrown), else the end. */
  #settle() {
    if (this.#queue.length > 0) return { value: this.#take(), done: false }
    if (this.#error) {
      const error = this.#error
      this.#error = null
      this.#end()
      throw error
    }
    return { value: undefined, done: true }
  }

  /** Settles waiting calls, first first, while results are ready. */
  #serve() {
    if (this.#serving) return
    this.#serving = true
    try {
      while (this.#resolve !== null && this.#ready()) {
        const resolve = this.#resolve
        const reject = this.#reject
        const more = this.#more
        if (more !== null && more.length > 0) {
          this.#resolve = more.shift()
          this.#reject = more.shift()
        } else {
          this.#resolve = this.#reject = null
        }
        try {
          resolve(this.#settle())
        } catch (e) {
          reject(e)
        }
      }
    } finally {
      this.#serving = false
    }
    if (this.#resolve === null && this.#holder) this.#holder.strong = null
  }

  /** The next queued item (in text mode, everything queued), acknowledged as used. */
  #take() {
    if (this.#text) return this.#takeText()
    const head = this.#queue[0]
    const text = head[this.#position]
    head[this.#position++] = undefined
    if (this.#position === head.length) {
      this.#queue.shift()
      this.#position = 0
    }
    this.#consumed(1)
    return this.#parse(text)
  }

  /**
   * Text mode: everything queued, as one string. A consumer slower than the socket gets fewer,
   * longer pieces instead of one per chunk; each delivered string still counts for the ack.
   */
  #takeText() {
    const queue = this.#queue
    const text = queue.length === 1 ? queue[0] : queue.join('')
    this.#queue = []
    this.#consumed(queue.length)
    return text
  }

  /** `n` more items used: acknowledged every half window, and at once if Rust waits. */
  #consumed(n) {
    this.#used += n
    if (this.#used >= STREAM_WINDOW_EVENTS / 2 || this.#stalled) this.#ack()
  }

  /** Called by `break` and by a throw inside `for await`: cancels the request at once. */
  async return(value) {
    this.#end()
    return { value, done: true }
  }

  async throw(error) {
    this.#end()
    throw error
  }

  /** A web `ReadableStream` of the items; cancelling it cancels the request. */
  toReadableStream() {
    return new ReadableStream({
      pull: async (controller) => {
        try {
          const { value, done } = await this.next()
          if (done) controller.close()
          else controller.enqueue(value)
        } catch (e) {
          controller.error(e)
        }
      },
      cancel: () => this.return(),
    })
  }

  #start() {
    // The inbox holds the stream weakly: a stream the consumer dropped can be garbage-collected,
    // and its native half then cancels the request. While a call waits, `strong` holds it (a
    // field, not a table entry: set and cleared for every chunk of every stream).
    const holder = { strong: null, weak: new WeakRef(this) }
    this.#holder = holder
    const inbox = this.#inbox
    const id = inbox.subscribe((value) => {
      const live = holder.strong ?? holder.weak.deref()
      if (live) live.#receive(value)
      // A collected stream's last delivery (an end or an error) still ends its subscription.
      else if (typeof value !== 'string' && value !== SIGNAL_STALLED) inbox.unsubscribe(id)
    })
    this.#id = id
    try {
      this.#native.start(this.#id)
    } catch (e) {
      this.#end()
      throw nativeArgumentError(e)
    }
  }

  /**
   * A delivery from Rust: payloads (one string, PAYLOAD_SEPARATOR between them; in text mode,
   * text), a signal, or an error (which ends the stream).
   */
  #receive(value) {
    if (this.#ended) return
    if (typeof value === 'string') {
      this.#queue.push(this.#text ? value : value.split(PAYLOAD_SEPARATOR))
    } else if (value === SIGNAL_STALLED) {
      this.#stalled = true
      if (this.#used > 0) this.#ack()
    } else {
      if (value !== SIGNAL_DONE) this.#error = fromInfo(value)
      this.#finish()
    }
    this.#serve()
  }

  #ack() {
    if (!this.#ended) this.#native.ack(this.#used)
    this.#used = 0
    this.#stalled = false
  }

  /** Switches a stream not yet started to text mode (see `ChatStream.text()`). */
  [TEXT_MODE]() {
    if (this[STARTED]) throw invalidArg('text() must be called before the stream is iterated')
    this.#native.textMode()
    this.#text = true
  }

  /** Iteration began (or the stream already ended). */
  get [STARTED]() {
    return this.#id !== -1 || this.#ended || this.#resolve !== null
  }

  get [IN_TEXT_MODE]() {
    return this.#text
  }

  /** Text mode: the chunks so far, merged in Rust. */
  [MERGED]() {
    return JSON.parse(this.#native.finalCompletion())
  }

  /** From now on, payloads are yielded unparsed (their merge is Rust's). */
  [RAW]() {
    this.#raw = true
  }

  #parse(text) {
    if (this.#text || this.#raw) return text
    try {
      return this.decode(text)
    } catch (e) {
      // Rust checked every payload; only JSON that V8 refuses and serde accepted could land here.
      this.#end()
      throw llmpoolError('ERR_INVALID_RESPONSE', `stream from ${this.#origin} sent a chunk that is not JSON: ${e.message}`)
    }
  }

  /** Nothing more will arrive: stop listening (what is queued is still yielded). */
  #finish() {
    this.#ended = true
    if (this.#id !== -1) this.#inbox.unsubscribe(this.#id)
    this.#detach()
  }

  /** Stops the stream: nothing more is yielded, the request is cancelled. */
  #end() {
    this.#queue = []
    this.#position = 0
    this.#native.close()
    this.#finish()
    this.#serve()
  }

  [inspect.custom]() {
    return `${this.constructor.name} { origin: '${this.#origin}' }`
  }
}

/** A chat stream: `ChatCompletionChunk`s. */
class ChatStream extends NativeIterator {
  decode(text) {
    return JSON.parse(text)
  }

  /**
   * The text fast path: an async iterable of the first choice's content, as strings (each one
   * everything that arrived since the last `next()`, so a busy consumer gets few, long ones).
   * The chunks are parsed and merged in Rust and never cross into JS; `finalCompletion()` still
   * gives the whole completion (tool calls, usage, finish reason, reasoning). Call it before
   * iterating.
   */
  text() {
    this[TEXT_MODE]()
    return new TextStream(this)
  }

  /** Consumes the stream and returns one `ChatCompletion` merged from its chunks. */
  async finalCompletion() {
    if (this[IN_TEXT_MODE]) {
      for await (const _ of this) void _
      return this[MERGED]()
    }
    // Not started: Rust merges as the chunks arrive, and none crosses into JS.
    if (!this[STARTED]) {
      this[TEXT_MODE]()
      for await (const _ of this) void _
      return this[MERGED]()
    }
    // Already iterated: the rest arrives as JSON texts, merged in Rust in one call.
    this[RAW]()
    const texts = []
    for await (const text of this) texts.push(text)
    return JSON.parse(mergeChatChunks(texts.join(PAYLOAD_SEPARATOR)))
  }
}

/** `chatStream(body).text()`: the content strings of a chat stream. */
class TextStream {
  #stream

  constructor(stream) {
    this.#stream = stream
  }

  [Symbol.asyncIterator]() {
    return this.#stream
  }

  next() {
    return this.#stream.next()
  }

  return(value) {
    return this.#stream.return(value)
  }

  /** The rest of the stream, merged into one `ChatCompletion` (in Rust). */
  finalCompletion() {
    return this.#stream.finalCompletion()
  }

  /** A web `ReadableStream` of the strings; cancelling it cancels the request. */
  toReadableStream() {
    return this.#stream.toReadableStream()
  }

  [inspect.custom]() {
    return 'TextStream {}'
  }
}

/** Any SSE endpoint's events: `{ event, data }`, data parsed. */
class EventStream extends NativeIterator {
  decode(text) {
    const split = text.indexOf('\n')
    return { event: text.slice(0, split), data: JSON.parse(text.slice(split + 1)) }
  }

  /** Responses API: consumes the stream and returns the final `response` object. */
  async finalResponse() {
    let last
    for await (const { event, data } of this) {
      if (event === 'response.completed' || event === 'response.incomplete') last = data.response
    }
    if (last === undefined) throw llmpoolError('ERR_INVALID_RESPONSE', 'the stream ended without a response.completed event')
    return last
  }
}

/**
 * What `client.fetch` and `client.baseURL` name with `upstreams`: not a host, a base for API
 * paths that each upstream's own `baseUrl` prefixes (`new OpenAI({ baseURL: client.baseURL, … })`).
 */
const UPSTREAMS_ORIGIN = 'http://upstreams.llmpool.invalid'

/** A `withResponse` answer: the parsed body and its response (status, headers, limits, upstream). */
function withResponseOf(envelope) {
  const { response, data } = envelope
  return {
    data,
    response: {
      status: response.status,
      headers: new Headers(response.headers),
      rateLimit: response.rateLimit ?? null,
      upstream: response.upstream ?? null,
    },
  }
}

// ---- client.fetch ----

/** Statuses whose responses have no body (the Response constructor refuses one). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304])

/** A request body as bytes: strings and byte arrays directly, anything else through a Request. */
async function bodyBytes(body, headers) {
  if (body === null || body === undefined) return undefined
  if (typeof body === 'string') return Buffer.from(body)
  if (body instanceof ArrayBuffer) return Buffer.from(body)
  if (ArrayBuffer.isView(body)) return Buffer.from(body.buffer, body.byteOffset, body.byteLength)
  // Blob, FormData, URLSearchParams, ReadableStream: let the platform serialise it.
  const request = new Request('http://body.invalid/', { method: 'POST', body, duplex: 'half' })
  const type = request.headers.get('content-type')
  if (type && !headers.has('content-type')) headers.set('content-type', type)
  return Buffer.from(await request.arrayBuffer())
}

/** How fetch reports an abort: an error named AbortError (what SDKs test for). */
function abortError(err) {
  err.name = 'AbortError'
  return err
}

/** Methods fetch refuses to send (the Fetch standard's forbidden methods). */
const FORBIDDEN_METHODS = new Set(['CONNECT', 'TRACE', 'TRACK'])
/** Statuses that redirect (with a Location), and the most fetch follows. */
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308])
const MAX_REDIRECTS = 20

async function fetchThrough(native, inbox, origin, input, init = {}) {
  const request = typeof input === 'object' && input !== null && typeof input.url === 'string' && !(input instanceof URL) ? input : undefined
  let url = new URL(request ? request.url : input instanceof URL ? input.href : String(input))
  if (url.origin !== origin) {
    throw invalidArg(`client.fetch reaches ${origin} only, not ${url.origin}: use another client or the platform fetch`)
  }
  let method = String(init.method ?? request?.method ?? 'GET').toUpperCase()
  if (FORBIDDEN_METHODS.has(method)) throw invalidArg(`'${method}' HTTP method is unsupported.`)
  const redirect = init.redirect ?? request?.redirect ?? 'follow'
  if (!['follow', 'error', 'manual'].includes(redirect)) throw invalidArg(`redirect must be 'follow', 'error' or 'manual', not '${redirect}'`)
  const headers = new Headers(init.headers ?? request?.headers)
  // llmpool does not decompress: ask for identity, as the server would otherwise be entitled to.
  headers.delete('accept-encoding')
  const signal = init.signal ?? request?.signal ?? undefined
  const source = init.body !== undefined ? init.body : request?.body ? await request.arrayBuffer() : undefined
  let bytes
  try {
    bytes = await bodyBytes(source, headers)
  } catch (e) {
    throw invalidArg(`fetch body cannot be read: ${e.message}`)
  }
  for (let redirects = 0; ; redirects++) {
    const response = await fetchOnce(native, inbox, origin, method, url, headers, bytes, signal)
    const location = response.headers.get('location')
    if (redirect === 'manual' || !REDIRECT_STATUSES.has(response.status) || location === null) return response
    await response.body?.cancel()
    if (redirect === 'error') throw llmpoolTypeError(`fetch to ${url.pathname} was redirected (${response.status}) and redirect is 'error'`, 'ERR_REDIRECT')
    if (redirects === MAX_REDIRECTS) throw llmpoolTypeError(`fetch to ${url.pathname}: more than ${MAX_REDIRECTS} redirects`, 'ERR_REDIRECT')
    const next = new URL(location, url)
    if (next.origin !== origin) {
      throw llmpoolTypeError(`fetch to ${url.pathname} was redirected to ${next.origin}, which client.fetch does not reach: use redirect: 'manual'`, 'ERR_REDIRECT')
    }
    // The Fetch standard's method rewrite: 303 turns anything but HEAD into a GET without a
    // body, and so does a 301 or 302 of a POST; 307 and 308 keep the method and the body.
    if ((response.status === 303 && method !== 'HEAD') || ((response.status === 301 || response.status === 302) && method === 'POST')) {
      method = 'GET'
      bytes = undefined
      for (const name of ['content-type', 'content-length', 'content-encoding', 'content-language', 'content-location']) headers.delete(name)
    }
    url = next
  }
}

/** One request of a fetch (a redirect makes another). */
function fetchOnce(native, inbox, origin, method, url, headers, bytes, signal) {
  if (signal?.aborted) return Promise.reject(abortError(llmpoolError('ERR_ABORTED', `request to ${origin} was aborted`)))
  const { cancel, detach } = linkSignal(signal)
  let handle
  try {
    handle = native.fetch(method, url.pathname + url.search, JSON.stringify([...headers]), bytes, undefined, cancel)
  } catch (e) {
    detach()
    return Promise.reject(nativeArgumentError(e))
  }
  return new FetchBody(handle, inbox, detach).response(method)
}

/** A Response body dropped unread is collected: its request is cancelled then, as for streams. */
const abandonedBodies = new FinalizationRegistry((body) => body.abandon())

/**
 * The deliveries of one fetch: the head resolves the Response, byte chunks feed its body
 * stream under the same flow control as chat streams (acknowledged every half window, or at once
 * when Rust says it stalled).
 */
class FetchBody {
  #native
  #inbox
  #detach
  #id = -1
  #chunks = []
  #used = 0
  #stalled = false
  #ended = false
  #error = null
  #wake = null
  #head = null

  constructor(native, inbox, detach) {
    this.#native = native
    this.#inbox = inbox
    this.#detach = detach
  }

  response(method) {
    return new Promise((resolve, reject) => {
      this.#head = { resolve, reject, method }
      this.#id = this.#inbox.subscribe((value) => this.#receive(value))
      try {
        this.#native.start(this.#id)
      } catch (e) {
        this.#finish()
        reject(nativeArgumentError(e))
      }
    })
  }

  #receive(value) {
    if (Buffer.isBuffer(value)) {
      this.#chunks.push(value)
    } else if (value === SIGNAL_STALLED) {
      this.#stalled = true
      if (this.#used > 0) this.#ack()
    } else if (value !== null && typeof value === 'object' && typeof value.status === 'number' && value.code === undefined) {
      const { resolve, method } = this.#head
      this.#head = null
      const headers = new Headers()
      for (const [name, v] of value.headers) headers.append(name, v)
      const empty = NULL_BODY_STATUSES.has(value.status) || method === 'HEAD'
      if (empty) this.#close()
      resolve(new Response(empty ? null : this.#stream(), { status: value.status, headers }))
    } else {
      if (value !== SIGNAL_DONE) {
        const err = fromInfo(value)
        this.#error = err.code === 'ERR_ABORTED' ? abortError(err) : err
      }
      this.#finish()
      if (this.#head && this.#error) {
        this.#head.reject(this.#error)
        this.#head = null
      }
    }
    const wake = this.#wake
    this.#wake = null
    wake?.()
  }

  /** The body was collected unread: cancel the request and stop listening. */
  abandon() {
    if (!this.#ended) this.#close()
  }

  #stream() {
    const stream = new ReadableStream({
      pull: async (controller) => {
        for (;;) {
          const chunk = this.#chunks.shift()
          if (chunk !== undefined) {
            if (++this.#used >= STREAM_WINDOW_EVENTS / 2 || this.#stalled) this.#ack()
            return controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength))
          }
          if (this.#error) return controller.error(this.#error)
          if (this.#ended) return controller.close()
          await new Promise((resolve) => (this.#wake = resolve))
        }
      },
      cancel: () => this.#close(),
    })
    abandonedBodies.register(stream, this)
    return stream
  }

  #ack() {
    if (!this.#ended) this.#native.ack(this.#used)
    this.#used = 0
    this.#stalled = false
  }

  #finish() {
    this.#ended = true
    if (this.#id !== -1) this.#inbox.unsubscribe(this.#id)
    this.#detach()
  }

  /** The consumer is done with the body: the request is cancelled. */
  #close() {
    this.#chunks = []
    this.#native.close()
    this.#finish()
  }
}

module.exports = { Client, ChatStream, EventStream, LlmpoolError }
