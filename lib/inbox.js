'use strict'
// Where the native side's deliveries arrive: the table of calls waiting under ids, and the
// signals a stream delivery may carry.

/** Stream signals from Rust (numbers, see src/binding/mailbox.rs). */
const SIGNAL_DONE = 0
const SIGNAL_STALLED = 1
/** Between two stream payloads in one delivery (no payload contains it: see `src/binding/mailbox.rs`). */
const PAYLOAD_SEPARATOR = '\x1e'

/**
 * Results come back from Rust through one callback, `deliver(ids, values)`, under ids chosen
 * here; this table maps each id to the function that settles its call. It also keeps Node's
 * event loop alive while anything is in flight (the native side does not, so that an idle client
 * never holds a process open).
 */
class Inbox {
  #handlers = new Map()
  /** Handlers that do not keep the event loop alive (see `listen`). */
  #listeners = new Map()
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

  /**
   * Like `subscribe`, but the handler does not keep the event loop alive: it listens alongside a
   * call that does (a request watcher beside its call), and must not hold the process open when
   * that call was never started.
   */
  listen(handler) {
    const id = this.#nextId
    this.#nextId = (this.#nextId + 1) >>> 0
    this.#listeners.set(id, handler)
    return id
  }

  unsubscribe(id) {
    this.#handlers.delete(id)
    this.#listeners.delete(id)
    this.#idle()
  }

  deliver = (ids, values) => {
    for (let i = 0; i < ids.length; i++) {
      const handler = this.#handlers.get(ids[i]) ?? this.#listeners.get(ids[i])
      if (handler !== undefined) handler(values[i])
    }
    this.#idle()
  }

  #idle() {
    if (this.#handlers.size === 0 && this.#keepAlive) this.#keepAlive.unref()
  }
}

module.exports = { Inbox, SIGNAL_DONE, SIGNAL_STALLED, PAYLOAD_SEPARATOR }
