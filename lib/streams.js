'use strict'
// The consumer side of native streams: the async iterators of chat streams, their text view and
// any SSE endpoint's events. Every outcome is decided and every chunk merged in Rust.

const { inspect } = require('node:util')
const { mergeChatChunks } = require('../binding.js')
const { llmpoolError } = require('../errors.js')
const { invalidArg, nativeArgumentError } = require('./args.js')
const { Feed, CANCELLED } = require('./feed.js')
const { SIGNAL_STALLED, PAYLOAD_SEPARATOR } = require('./inbox.js')
const { streamArrived, streamChunk, streamText, streamMerged, streamEnded } = require('./trace.js')

/** What a chat stream's text view asks of its iterator (not public API). */
const TEXT_MODE = Symbol('llmpool.textMode')
const IN_TEXT_MODE = Symbol('llmpool.inTextMode')
const MERGED = Symbol('llmpool.merged')
const RAW = Symbol('llmpool.raw')
const STARTED = Symbol('llmpool.started')


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
  /** The native stream, its subscription and its credit (see lib/feed.js). */
  #feed
  #origin
  /** The call's context on the `llmpool:call` tracing channel, while traced (else null). */
  #trace
  /**
   * Delivered batches not yet fully yielded (arrays of payloads; in text mode, strings), and the
   * position in the first.
   */
  #queue = []
  #position = 0
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

  constructor(native, inbox, origin, detach, trace = null) {
    this.#feed = new Feed(native, inbox, detach)
    this.#origin = origin
    this.#trace = trace
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
      if (!this.#feed.started) {
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
    return this.#queue.length > 0 || this.#error !== null || this.#feed.ended
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

  #consumed(n) {
    this.#feed.consumed(n)
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
    // The handler holds neither the stream nor its feed (which holds the native half): only
    // what a collected stream's last delivery needs to end its subscription.
    const inbox = this.#feed.inbox
    const detach = this.#feed.detach
    const holder = { strong: null, weak: new WeakRef(this), id: -1 }
    this.#holder = holder
    try {
      this.#feed.start((value) => {
        const live = holder.strong ?? holder.weak.deref()
        if (live) live.#receive(value)
        // A collected stream's last delivery (an end or an error) still ends its subscription.
        else if (typeof value !== 'string' && value !== SIGNAL_STALLED) {
          inbox.unsubscribe(holder.id)
          detach(CANCELLED)
        }
      })
      holder.id = this.#feed.id
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
    const feed = this.#feed
    if (feed.ended) return
    if (typeof value === 'string') {
      const items = this.#text ? value : value.split(PAYLOAD_SEPARATOR)
      this.#queue.push(items)
      if (this.#trace !== null) this.#traceArrived(items)
    } else {
      feed.signal(value)
      this.#error = feed.error
      if (feed.ended) this.#traceEnd(feed.error, false)
    }
    this.#serve()
  }

  /** Switches a stream not yet started to text mode (see `ChatStream.text()`). */
  [TEXT_MODE]() {
    if (this[STARTED]) throw invalidArg('text() must be called before the stream is iterated')
    this.#feed.native.textMode()
    this.#text = true
  }

  /** Iteration began (or the stream already ended). */
  get [STARTED]() {
    return this.#feed.started || this.#feed.ended || this.#resolve !== null
  }

  get [IN_TEXT_MODE]() {
    return this.#text
  }

  /** Text mode: the chunks so far, merged in Rust. */
  [MERGED]() {
    return JSON.parse(this.#feed.native.finalCompletion())
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

  /** Stops the stream: nothing more is yielded, the request is cancelled. */
  #end() {
    this.#queue = []
    this.#position = 0
    // Before the last delivery came: the consumer left (a break, a throw), not a failure.
    if (!this.#feed.ended) this.#traceEnd(null, true)
    this.#feed.close()
    this.#serve()
  }

  /**
   * A traced stream's delivery, read as it arrives (so that the span ends with the last chunk
   * and carries what it said, whatever pace the consumer reads at). Only while traced: each
   * payload is then parsed twice.
   */
  #traceArrived(items) {
    const trace = this.#trace
    if (this.#text) {
      streamArrived(trace, 1)
      streamText(trace, items)
      return
    }
    streamArrived(trace, items.length)
    for (const text of items) {
      try {
        streamChunk(trace, this.decode(text))
      } catch {
        // The consumer gets the error when it reaches this payload.
      }
    }
  }

  /** A traced stream ended: its context is published once, then dropped. */
  #traceEnd(error, cancelled) {
    const trace = this.#trace
    if (trace === null) return
    this.#trace = null
    if (this.#text) {
      try {
        streamMerged(trace, JSON.parse(this.#feed.native.finalCompletion()))
      } catch {
        // Nothing merged (the stream failed before its first chunk): nothing to add.
      }
    }
    streamEnded(trace, error, cancelled)
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

module.exports = { ChatStream, TextStream, EventStream }
