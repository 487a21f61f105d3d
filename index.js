'use strict'
// The public `Client`: argument checks, AbortSignal wiring and JSON parsing in JS; pooling,
// timeouts and I/O in the native core (see src/).

const { inspect } = require('node:util')
const { NativeClient, CancelToken, STREAM_WINDOW_EVENTS } = require('./binding.js')
const { LlmpoolError, fromInfo, llmpoolError } = require('./errors.js')

const CALL_OPTIONS = new Set(['signal', 'timeout', 'headers', 'maxRetries'])
const STREAM_CALL_OPTIONS = new Set([...CALL_OPTIONS, 'firstTokenTimeout', 'tokenTimeout'])

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

function isPlainObject(value) {
  if (value === null || typeof value !== 'object') return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

function serializeBody(body, method) {
  if (!isPlainObject(body)) throw new TypeError(`${method}() body must be a plain object`)
  let json
  try {
    json = JSON.stringify(body)
  } catch (e) {
    throw new TypeError(`${method}() body must be JSON-serialisable: ${e.message}`)
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

function checkLimit(name, value) {
  if (value !== undefined && !(Number.isInteger(value) && value >= 0)) {
    throw new TypeError(`${name} must be a non-negative integer number of milliseconds (0 disables it)`)
  }
}

/** Checks per-call options; returns the signal and the options the native layer takes. */
function readCallOptions(options, known) {
  if (options === undefined || options === null) return { signal: undefined, native: undefined }
  if (typeof options !== 'object') throw new TypeError('call options must be an object')
  for (const key of Object.keys(options)) {
    if (!known.has(key)) throw new TypeError(`${key} is not a known call option`)
  }
  const { signal, timeout, headers, firstTokenTimeout, tokenTimeout, maxRetries } = options
  if (signal !== undefined && !isAbortSignal(signal)) {
    throw new TypeError('signal must be an AbortSignal')
  }
  checkLimit('timeout', timeout)
  checkLimit('firstTokenTimeout', firstTokenTimeout)
  checkLimit('tokenTimeout', tokenTimeout)
  if (maxRetries !== undefined && !(Number.isInteger(maxRetries) && maxRetries >= 0 && maxRetries <= 100)) {
    throw new TypeError('maxRetries must be an integer from 0 to 100')
  }
  if (headers !== undefined && !isPlainObject(headers)) {
    throw new TypeError('headers must be an object of header names to string values')
  }
  return {
    signal,
    native: {
      timeout,
      firstTokenTimeout,
      tokenTimeout,
      maxRetries,
      headers: headers === undefined ? undefined : JSON.stringify(headers),
    },
  }
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
  return e && e.code === 'InvalidArg' ? new TypeError(e.message) : e
}

/**
 * Results come back from Rust through one callback, `deliver(ids, values)`, under ids chosen
 * here; this table maps each id to the function that settles its call. It also keeps Node's
 * event loop alive while anything is in flight (the native side does not, so that an idle client
 * never holds a process open).
 */
class Inbox {
  #handlers = new Map()
  #pinned = new Map()
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
    this.#pinned.delete(id)
    this.#idle()
  }

  /** Keeps `owner` reachable until `unpin(id)` (see `ChatStream.next`). */
  pin(id, owner) {
    this.#pinned.set(id, owner)
  }

  unpin(id) {
    this.#pinned.delete(id)
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
  #inbox = new Inbox()

  /** @param {import('./index').ClientOptions} options */
  constructor(options) {
    if (!isPlainObject(options)) throw new TypeError('options must be an object')
    let json
    try {
      json = JSON.stringify(options, optionReplacer)
    } catch (e) {
      throw new TypeError(`options must be JSON-serialisable: ${e.message}`)
    }
    try {
      this.#native = new NativeClient(json, this.#inbox.deliver)
    } catch (e) {
      throw nativeArgumentError(e)
    }
    this.#origin = new URL(options.baseUrl).origin
  }

  /** One chat completion; resolves with the parsed `ChatCompletion`. */
  chat(body, options) {
    return new Promise((resolve, reject) => {
      const json = serializeBody(body, 'chat')
      if (body.stream === true) {
        throw new TypeError('chat() body.stream must not be true: use chatStream() to stream')
      }
      const { signal, native } = readCallOptions(options, CALL_OPTIONS)
      if (signal?.aborted) throw llmpoolError('ERR_ABORTED', `request to ${this.#origin} was aborted`)
      const { cancel, detach } = linkSignal(signal)
      const id = this.#inbox.expect((value) => {
        detach()
        if (typeof value !== 'string') return reject(fromInfo(value))
        try {
          resolve(this.#parseCompletion(value))
        } catch (e) {
          reject(e)
        }
      })
      try {
        this.#native.chat(id, json, native, cancel)
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
    serializeBody(body, 'chatStream')
    const { signal, native } = readCallOptions(options, STREAM_CALL_OPTIONS)
    // A shallow copy: the caller's object is never touched.
    const json = JSON.stringify({ ...body, stream: true })
    const { cancel, detach } = linkSignal(signal)
    let handle
    try {
      handle = this.#native.chatStream(json, native, cancel)
    } catch (e) {
      detach()
      throw nativeArgumentError(e)
    }
    if (signal?.aborted) cancel.cancel()
    return new ChatStream(handle, this.#inbox, this.#origin, detach)
  }

  #parseCompletion(text) {
    let value
    try {
      value = JSON.parse(text)
    } catch {
      throw llmpoolError('ERR_INVALID_RESPONSE', `${this.#origin} sent a body that is not JSON`)
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw llmpoolError('ERR_INVALID_RESPONSE', `${this.#origin} sent JSON that is not a completion object`)
    }
    return value
  }

  /**
   * Prometheus text exposition (format 0.0.4): counters (requests, errors by code, retries,
   * connections), pool gauges and histograms (time to headers, time to first token, request
   * duration, stream tokens per second), all labelled with the origin.
   */
  metrics() {
    return this.#native.metrics()
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

/** Merges streamed chunks into one `ChatCompletion`, the way the server would have answered. */
function accumulate(chunks) {
  const completion = { id: '', object: 'chat.completion', created: 0, model: '', choices: [] }
  for (const chunk of chunks) {
    for (const key of ['id', 'created', 'model', 'system_fingerprint', 'service_tier']) {
      if (chunk[key] !== undefined && chunk[key] !== null) completion[key] = chunk[key]
    }
    if (chunk.usage) completion.usage = chunk.usage
    for (const delta of chunk.choices ?? []) mergeChoice(completion.choices, delta)
  }
  completion.choices = completion.choices.filter(Boolean)
  return completion
}

function mergeChoice(choices, { index = 0, delta = {}, finish_reason, logprobs }) {
  const choice = (choices[index] ??= {
    index,
    message: { role: 'assistant', content: null },
    logprobs: null,
    finish_reason: null,
  })
  const message = choice.message
  if (delta.role) message.role = delta.role
  if (typeof delta.content === 'string') message.content = (message.content ?? '') + delta.content
  if (typeof delta.refusal === 'string') message.refusal = (message.refusal ?? '') + delta.refusal
  for (const call of delta.tool_calls ?? []) {
    const calls = (message.tool_calls ??= [])
    const merged = (calls[call.index ?? calls.length] ??= { id: '', type: 'function', function: { name: '', arguments: '' } })
    if (call.id) merged.id = call.id
    if (call.type) merged.type = call.type
    // Some servers repeat the name in every delta; it is set once, arguments are concatenated.
    if (call.function?.name && !merged.function.name) merged.function.name = call.function.name
    if (typeof call.function?.arguments === 'string') merged.function.arguments += call.function.arguments
  }
  if (logprobs?.content) {
    choice.logprobs ??= { content: [] }
    choice.logprobs.content.push(...logprobs.content)
  }
  if (finish_reason) choice.finish_reason = finish_reason
}

/** A pending end without [DONE], judged after the chunks before it (see `ChatStream.next`). */
const UNMARKED_END = Symbol('unmarked end')

/** Stream signals from Rust (numbers, see src/binding/mailbox.rs). */
const SIGNAL_DONE = 0
const SIGNAL_UNMARKED_END = 1
const SIGNAL_STALLED = 2

/**
 * The async iterator of one chat stream. Rust pushes arrays of payloads as they arrive (merged
 * while this side is busy); they are parsed and yielded one at a time. Flow control: Rust stops
 * reading the socket once STREAM_WINDOW_EVENTS events (or its byte window) are delivered and not
 * acknowledged; this side acknowledges what it yielded every half window, and at once after Rust
 * says it stalled, so a fast consumer costs one call into Rust per ~128 chunks and a slow one
 * holds Rust back.
 */
class ChatStream {
  #native
  #inbox
  #origin
  #detach
  #id = -1
  /** Delivered payload arrays not yet fully yielded, and the position in the first. */
  #queue = []
  #position = 0
  /** Events yielded and not yet acknowledged. */
  #used = 0
  /** Rust waits for acknowledgements. */
  #stalled = false
  /** The last delivery has arrived (or the stream was cancelled). */
  #ended = false
  /** An error (or UNMARKED_END) to raise once the queued payloads are yielded. */
  #error = null
  /** Some chunk carried a finish_reason: an end without [DONE] is then still complete. */
  #finished = false
  /** The pending next() waiting for a delivery. */
  #wake = null

  constructor(native, inbox, origin, detach) {
    this.#native = native
    this.#inbox = inbox
    this.#origin = origin
    this.#detach = detach
  }

  [Symbol.asyncIterator]() {
    return this
  }

  async next() {
    for (;;) {
      const head = this.#queue[0]
      if (head !== undefined) {
        const text = head[this.#position]
        head[this.#position++] = undefined
        if (this.#position === head.length) {
          this.#queue.shift()
          this.#position = 0
        }
        if (++this.#used >= STREAM_WINDOW_EVENTS / 2 || this.#stalled) this.#ack()
        return { value: this.#parse(text), done: false }
      }
      if (this.#error === UNMARKED_END) {
        // Ended without [DONE]: complete only if a chunk had a finish_reason (real servers end
        // an empty stream this way on context overflow, and a cut connection looks the same).
        this.#error = this.#finished
          ? null
          : llmpoolError('ERR_STREAM_TRUNCATED', `stream from ${this.#origin} ended before it was complete (no [DONE] and no finish_reason)`)
      }
      if (this.#error) {
        const error = this.#error
        this.#error = null
        this.#end()
        throw error
      }
      if (this.#ended) return { value: undefined, done: true }
      if (this.#id === -1) this.#start()
      // While a next() waits, the stream must stay reachable: the inbox holds it only weakly,
      // and a waiting consumer is not an abandoned one.
      this.#inbox.pin(this.#id, this)
      await new Promise((resolve) => (this.#wake = resolve))
      this.#inbox.unpin(this.#id)
    }
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

  /** Consumes the stream and returns one `ChatCompletion` merged from its chunks. */
  async finalCompletion() {
    const chunks = []
    for await (const chunk of this) chunks.push(chunk)
    return accumulate(chunks)
  }

  /** A web `ReadableStream` of the chunks; cancelling it cancels the request. */
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
    // and its native half then cancels the request.
    const stream = new WeakRef(this)
    const inbox = this.#inbox
    const id = inbox.subscribe((value) => {
      const live = stream.deref()
      if (live) live.#receive(value)
      // A collected stream's last delivery (an end or an error) still ends its subscription.
      else if (!Array.isArray(value) && value !== SIGNAL_STALLED) inbox.unsubscribe(id)
    })
    this.#id = id
    try {
      this.#native.start(this.#id)
    } catch (e) {
      this.#end()
      throw nativeArgumentError(e)
    }
  }

  /** A delivery from Rust: payloads, a signal, or an error (which ends the stream). */
  #receive(value) {
    if (this.#ended) return
    if (Array.isArray(value)) {
      this.#queue.push(value)
    } else if (value === SIGNAL_STALLED) {
      this.#stalled = true
      if (this.#used > 0) this.#ack()
    } else {
      if (value === SIGNAL_UNMARKED_END) this.#error = UNMARKED_END
      else if (value !== SIGNAL_DONE) this.#error = fromInfo(value)
      this.#finish()
    }
    const wake = this.#wake
    this.#wake = null
    wake?.()
  }

  #ack() {
    if (!this.#ended) this.#native.ack(this.#used)
    this.#used = 0
    this.#stalled = false
  }

  #parse(text) {
    let chunk
    try {
      chunk = JSON.parse(text)
    } catch {
      chunk = undefined
    }
    if (chunk === null || typeof chunk !== 'object') {
      this.#end()
      throw llmpoolError('ERR_INVALID_RESPONSE', `stream from ${this.#origin} sent a chunk that is not a JSON object`)
    }
    if (chunk.error != null) {
      this.#end()
      const message = typeof chunk.error === 'string' ? chunk.error : (chunk.error.message ?? 'no message')
      const err = llmpoolError('ERR_STREAM_ERROR', `${this.#origin} sent an error in the stream: ${message}`)
      err.error = chunk.error
      throw err
    }
    if (!this.#finished) {
      const choices = chunk.choices
      if (Array.isArray(choices)) for (const choice of choices) if (choice?.finish_reason) this.#finished = true
    }
    return chunk
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
    const wake = this.#wake
    this.#wake = null
    wake?.()
  }

  [inspect.custom]() {
    return `ChatStream { origin: '${this.#origin}' }`
  }
}

module.exports = { Client, ChatStream, LlmpoolError }
