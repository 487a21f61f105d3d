'use strict'
// The public `Client`: it shapes arguments, AbortSignals and errors, and hands every call to the
// native core (see src/), which decides every outcome. The stream iterators are lib/streams.js,
// client.fetch is lib/fetch.js, argument checks lib/args.js, deliveries lib/inbox.js.

const { inspect } = require('node:util')
const { NativeClient } = require('./binding.js')
const { LlmpoolError, fromInfo, llmpoolError } = require('./errors.js')
const {
  optionReplacer,
  invalidArg,
  isPlainObject,
  serializeBody,
  isAbortSignal,
  readCallOptions,
  linkSignal,
  nativeArgumentError,
  withNativeOption,
} = require('./lib/args.js')
const { Inbox } = require('./lib/inbox.js')
const { ChatStream, EventStream } = require('./lib/streams.js')
const { fetchThrough } = require('./lib/fetch.js')
const { callContext, operationOf, traced, inScope, streamStarted, streamEnded, calls } = require('./lib/trace.js')
const { watched, watchedOptions, RequestWatcher } = require('./lib/undici-channels.js')

class Client {
  #native
  #origin
  #baseURL
  #inbox = new Inbox()

  /** @param {import('./index').ClientOptions} options */
  constructor(options) {
    if (!isPlainObject(options)) throw invalidArg('options must be an object')
    const { logger, ...coreOptions } = options
    const log = logger === undefined ? null : logFunction(logger)
    let json
    try {
      json = JSON.stringify(coreOptions, optionReplacer)
    } catch (e) {
      throw invalidArg(`options must be JSON-serialisable: ${e.message}`)
    }
    try {
      this.#native = new NativeClient(json, this.#inbox.deliver)
    } catch (e) {
      throw nativeArgumentError(e)
    }
    if (log !== null) this.#native.setLogger(log)
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
    const context = callContext('chat', 'chat', body, this.#origin, false)
    if (context === null) return this.#callJson('chat', body, options, null, this.#sendChat)
    return traced(context, () => this.#callJson('chat', body, options, context, this.#sendChat))
  }

  /**
   * Any JSON endpoint under `baseUrl` (`/embeddings`, `/responses`, `/completions`,
   * `/moderations`, …): `POST {baseUrl}{path}` with `body`, resolving with the parsed answer, with
   * the same pool, retries, limits, redaction and errors as `chat()`.
   */
  request(path, body, options) {
    if (typeof path !== 'string') return Promise.reject(invalidArg('request() path must be a string such as "/embeddings"'))
    const context = callContext('request', operationOf(path, 'request'), body, this.#origin, false)
    return traced(context, () => this.#callJson('request', body, options, context, (id, json, native, cancel) => this.#native.request(id, path, json, native, cancel)))
  }

  /** `POST {baseUrl}/embeddings`: a `CreateEmbeddingResponse`. */
  embeddings(body, options) {
    return this.request('/embeddings', body, options)
  }

  /** `chat()`'s native call, made once (not a closure per call). */
  #sendChat = (id, json, native, cancel) => this.#native.chat(id, json, native, cancel)

  #callJson(method, body, options, trace, send) {
    return new Promise((resolve, reject) => {
      const json = serializeBody(body, method)
      if (method === 'chat' && body.stream === true) {
        throw invalidArg('chat() body.stream must not be true: use chatStream() to stream')
      }
      const { signal, native } = readCallOptions(options)
      if (signal?.aborted) throw llmpoolError('ERR_ABORTED', `request to ${this.#origin} was aborted`)
      const { cancel, detach } = linkSignal(signal)
      const withResponse = options?.withResponse === true
      // Traced: the answer comes with its response envelope, whose attempts and upstream go
      // on the trace's context (the caller gets what it asked for).
      const envelope = withResponse || trace !== null
      const watcher = watched() ? new RequestWatcher(this.#inbox, this.#native) : null
      const id = this.#inbox.expect((value) => {
        detach()
        watcher?.close()
        // Rust decided the outcome: a string is the answer, checked to be a JSON object.
        if (typeof value !== 'string') return reject(fromInfo(value))
        try {
          if (!envelope) return resolve(JSON.parse(value))
          const answer = JSON.parse(value)
          if (trace !== null) {
            trace.attempts = answer.response.attempts
            trace.upstream = answer.response.upstream ?? undefined
            if (answer.response.cache) trace.cache = answer.response.cache
          }
          resolve(withResponse ? withResponseOf(answer) : answer.data)
        } catch (e) {
          // Only JSON that V8 refuses and serde accepted (none is known) could land here.
          reject(llmpoolError('ERR_INVALID_RESPONSE', `${this.#origin} sent a body that is not JSON: ${e.message}`))
        }
      })
      try {
        const asked = envelope && !withResponse ? withNativeOption(native, 'withResponse', true) : native
        send(id, json, watchedOptions(asked, watcher), cancel)
      } catch (e) {
        // The native call could not even start: nothing will be delivered under `id`.
        this.#inbox.unsubscribe(id)
        detach()
        watcher?.close()
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
    return this.#openStream('chatStream', 'chat', body, options, ChatStream, (json, native, cancel) => this.#native.chatStream(json, native, cancel))
  }

  /**
   * Any SSE endpoint under `baseUrl`: an async iterable of `{ event, data }` (data parsed as
   * JSON), on the same decoder, flow control and timeouts as `chatStream()`. `stream: true` is
   * added to the body unless it has a `stream` member. `[DONE]`, `response.completed` and
   * `response.incomplete` end it; `error` and `response.failed` events fail it.
   */
  stream(path, body, options) {
    if (typeof path !== 'string') throw invalidArg('stream() path must be a string such as "/responses"')
    return this.#openStream('stream', operationOf(path, 'stream'), body, options, EventStream, (json, native, cancel) => this.#native.stream(path, json, native, cancel))
  }

  /** `POST {baseUrl}/responses` streamed: the Responses API's typed events. */
  responsesStream(body, options) {
    return this.stream('/responses', body, options)
  }

  #openStream(method, operation, body, options, Kind, open) {
    serializeBody(body, method)
    const { signal, native } = readCallOptions(options)
    // A shallow copy: the caller's object is never touched.
    const json = JSON.stringify(method === 'chatStream' || !('stream' in body) ? { ...body, stream: true } : body)
    const { cancel, detach } = linkSignal(signal)
    const context = callContext(method, operation, body, this.#origin, true)
    if (context !== null) streamStarted(context)
    // Made in the call's scope (its span, when traced): the requests' events are published there.
    const watcher = watched() ? inScope(context, () => new RequestWatcher(this.#inbox, this.#native)) : null
    let handle
    try {
      handle = open(json, watchedOptions(native, watcher), cancel)
    } catch (e) {
      detach()
      watcher?.close()
      const error = nativeArgumentError(e)
      if (context !== null) streamEnded(context, error, false)
      throw error
    }
    if (signal?.aborted) cancel.cancel()
    if (watcher === null) return new Kind(handle, this.#inbox, this.#origin, detach, context)
    const finish = (outcome) => (detach(), watcher.close(outcome))
    const stream = new Kind(handle, this.#inbox, this.#origin, finish, context)
    // A stream dropped without being iterated never finishes: its watcher goes with it.
    unfinishedStreams.register(stream, finish)
    return stream
  }

  /**
   * A WHATWG `fetch` for the SDKs (`new OpenAI({ fetch: client.fetch })`): requests to this
   * client's origin go through its pool, TLS, proxy, timeouts and retries; the body streams. See
   * the README for what it keeps and what it cannot.
   */
  fetch = (input, init) => {
    if (!calls.hasSubscribers) return fetchThrough(this.#native, this.#inbox, this.#origin, input, init)
    const path = typeof input === 'string' ? input : (input?.url ?? String(input))
    const context = callContext('fetch', operationOf(new URL(path, this.#origin).pathname, 'fetch'), requestOf(init?.body), this.#origin, false)
    return traced(context, () => fetchThrough(this.#native, this.#inbox, this.#origin, input, init))
  }

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

/**
 * What `client.fetch` and `client.baseURL` name with `upstreams`: not a host, a base for API
 * paths that each upstream's own `baseUrl` prefixes (`new OpenAI({ baseURL: client.baseURL, … })`).
 */
const UPSTREAMS_ORIGIN = 'http://upstreams.llmpool.invalid'

/** Watched streams' `finish`, run if the stream is collected (finishing twice does nothing). */
const unfinishedStreams = new FinalizationRegistry((finish) => finish('cancelled'))

const LOG_LEVELS = ['debug', 'info', 'warn', 'error']

/**
 * The `logger` option (pino's shape: `logger.warn(fields, message)`) as the function the native
 * side calls with each event; a logger that throws never breaks a call.
 */
function logFunction(logger) {
  if (logger === null || typeof logger !== 'object' || !LOG_LEVELS.some((level) => typeof logger[level] === 'function')) {
    throw invalidArg('logger must be an object with debug, info, warn and error methods (pino, or one shaped like it)')
  }
  return (level, message, fields) => {
    const method = typeof logger[level] === 'function' ? logger[level] : logger.info
    if (typeof method !== 'function') return
    try {
      method.call(logger, JSON.parse(fields), message)
    } catch {
      // The application's logger failed: llmpool's calls go on.
    }
  }
}

/** A fetch body's JSON, for a traced call's model (only read while someone traces). */
function requestOf(body) {
  if (typeof body !== 'string') return undefined
  try {
    return JSON.parse(body)
  } catch {
    return undefined
  }
}

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
      attempts: response.attempts,
      cache: response.cache ?? null,
    },
  }
}

module.exports = { Client, ChatStream, EventStream, LlmpoolError }
