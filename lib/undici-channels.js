'use strict'
// undici's diagnostics channels, published for llmpool's own HTTP requests, so that what watches
// undici (`@opentelemetry/instrumentation-undici`, Sentry, dd-trace) watches llmpool too: each
// request (each attempt) is `undici:request:create` (`{ request }`: origin, method, path,
// headers, `addHeader()`: a header added there, as `traceparent`, is sent on the wire), then
// `undici:request:bodySent`, `undici:request:headers` (`{ request, response }`),
// `undici:request:trailers` at its end or `undici:request:error`. Only while one of them has
// subscribers is a call watched; otherwise nothing here runs. The events are published in the
// async context of the call that made the request, so a tracer finds its parent span there.

const diagnostics = require('node:diagnostics_channel')
const { AsyncResource } = require('node:async_hooks')
const { STATUS_CODES } = require('node:http')
const { withNativeOption } = require('./args.js')

const create = diagnostics.channel('undici:request:create')
const bodySent = diagnostics.channel('undici:request:bodySent')
const headers = diagnostics.channel('undici:request:headers')
const trailers = diagnostics.channel('undici:request:trailers')
const error = diagnostics.channel('undici:request:error')

/** Whether anyone watches undici's requests now. */
function watched() {
  return create.hasSubscribers || headers.hasSubscribers || trailers.hasSubscribers || error.hasSubscribers
}

/** Native call options (JSON text or undefined) that name the watcher's id. */
function watchedOptions(native, watcher) {
  return watcher === null ? native : withNativeOption(native, 'observe', watcher.id)
}

/** One call's watcher: its requests' events arrive under its inbox id, one request at a time. */
class RequestWatcher {
  #inbox
  #native
  #resource = new AsyncResource('llmpool:request')
  #request = null
  id

  constructor(inbox, native) {
    this.#inbox = inbox
    this.#native = native
    this.id = inbox.listen((event) => this.#resource.runInAsyncScope(this.#receive, this, event))
  }

  #receive(event) {
    switch (event.event) {
      case 'create':
        return this.#create(event)
      case 'headers': {
        const request = this.#request
        if (request === null) return
        bodySent.publish({ request })
        const flat = []
        for (const [name, value] of event.headers) flat.push(Buffer.from(name), Buffer.from(value))
        headers.publish({ request, response: { statusCode: event.status, statusText: STATUS_CODES[event.status] ?? '', headers: flat } })
        return
      }
      case 'done': {
        const request = this.#request
        this.#request = null
        if (request !== null) {
          request.completed = true
          trailers.publish({ request, trailers: [] })
        }
        return
      }
      case 'error': {
        const request = this.#request
        this.#request = null
        if (request === null) return
        const err = new Error(`llmpool request to ${request.origin} failed: ${event.code}`)
        err.code = event.code
        if (event.code === 'ERR_ABORTED') {
          err.name = 'AbortError'
          request.aborted = true
        }
        error.publish({ request, error: err })
      }
    }
  }

  #create(event) {
    const list = event.headers.flat()
    const added = []
    const request = {
      origin: event.origin,
      method: event.method,
      path: event.path,
      headers: list,
      completed: false,
      aborted: false,
      addHeader(name, value) {
        list.push(String(name), String(value))
        added.push(String(name), String(value))
        return this
      },
    }
    this.#request = request
    try {
      create.publish({ request })
    } finally {
      // Always answered: the request waits for it.
      this.#native.observed(event.reply, added)
    }
  }

  /**
   * The call ended: nothing more arrives under this id. A request still open is ended here as
   * the call did (`outcome`: null complete, an error, or 'cancelled'), since its own end may
   * come after the call's (a stream delivers its end before its attempt returns).
   */
  close(outcome = null) {
    this.#inbox.unsubscribe(this.id)
    const request = this.#request
    if (request === null) return
    this.#resource.runInAsyncScope(() => {
      if (outcome === null) return this.#receive({ event: 'done' })
      const code = outcome === 'cancelled' ? 'ERR_ABORTED' : (outcome.code ?? 'ERR_INTERNAL')
      this.#receive({ event: 'error', code })
    })
  }
}

module.exports = { watched, watchedOptions, RequestWatcher }
