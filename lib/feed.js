'use strict'
// The one protocol every consumer of a native stream follows (chat and event iterators, fetch
// bodies): its subscription to the inbox, how a delivery is read, how credit goes back to Rust,
// and how it ends. The consumers differ only in what they make of the data.

const { STREAM_WINDOW_EVENTS } = require('../binding.js')
const { fromInfo } = require('../errors.js')
const { SIGNAL_DONE, SIGNAL_STALLED } = require('./inbox.js')

/** Acknowledge every half window: a fast consumer costs one call into Rust per half window. */
const ACK_EVERY = STREAM_WINDOW_EVENTS / 2

/** How a stream ended when its consumer left before its end. */
const CANCELLED = 'cancelled'

class Feed {
  native
  inbox
  detach
  /** The inbox subscription, -1 until started. */
  id = -1
  /** Items the consumer used and Rust has not been told of. */
  used = 0
  /** Rust waits for acknowledgements. */
  stalled = false
  /** The last delivery came, or the consumer closed: nothing more arrives. */
  ended = false
  /** The error the stream ended with, once it did. */
  error = null

  constructor(native, inbox, detach) {
    this.native = native
    this.inbox = inbox
    this.detach = detach
  }

  get started() {
    return this.id !== -1
  }

  /** Subscribes `receive` to the deliveries and starts the native stream; a refused start ends it. */
  start(receive) {
    this.id = this.inbox.subscribe(receive)
    try {
      this.native.start(this.id)
    } catch (e) {
      this.finish()
      throw e
    }
  }

  /**
   * Reads a delivery that is not data: a stall (credit goes back at once if any was used) or
   * the end, clean or with an error (kept in `error`); the subscription ends with it.
   */
  signal(value) {
    if (value === SIGNAL_STALLED) {
      this.stalled = true
      if (this.used > 0) this.ack()
      return
    }
    if (value !== SIGNAL_DONE) this.error = fromInfo(value)
    this.finish(this.error)
  }

  /** `n` more items used: acknowledged every half window, and at once while Rust waits. */
  consumed(n) {
    this.used += n
    if (this.used >= ACK_EVERY || this.stalled) this.ack()
  }

  ack() {
    if (!this.ended) this.native.ack(this.used)
    this.used = 0
    this.stalled = false
  }

  /**
   * Nothing more will arrive: stop listening. `outcome` tells `detach` how the stream ended:
   * null (complete), its error, or CANCELLED (the consumer left).
   */
  finish(outcome = null) {
    const first = !this.ended
    this.ended = true
    if (this.id !== -1) this.inbox.unsubscribe(this.id)
    if (first) this.detach(outcome)
  }

  /** The consumer is done: the request is cancelled, its connection closed. */
  close() {
    this.native.close()
    this.finish(this.ended ? null : CANCELLED)
  }
}

module.exports = { Feed, CANCELLED }
