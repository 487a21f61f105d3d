'use strict'
// `client.fetch`: a WHATWG fetch on the client's transport (the Fetch standard's forbidden
// methods and redirect modes), and the Response body fed by native deliveries under the same
// flow control as chat streams.

const { llmpoolError, llmpoolTypeError } = require('../errors.js')
const { invalidArg, linkSignal, nativeArgumentError } = require('./args.js')
const { Feed } = require('./feed.js')
const { watched, watchedOptions, RequestWatcher } = require('./undici-channels.js')

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
  const watcher = watched() ? new RequestWatcher(inbox, native) : null
  const finish = watcher === null ? detach : (outcome) => (detach(), watcher.close(outcome))
  let handle
  try {
    handle = native.fetch(method, url.pathname + url.search, JSON.stringify([...headers]), bytes, watchedOptions(undefined, watcher), cancel)
  } catch (e) {
    finish()
    return Promise.reject(nativeArgumentError(e))
  }
  return new FetchBody(handle, inbox, finish).response(method)
}

/** A Response body dropped unread is collected: its request is cancelled then, as for streams. */
const abandonedBodies = new FinalizationRegistry((body) => body.abandon())

/**
 * The deliveries of one fetch: the head resolves the Response, byte chunks feed its body
 * stream under the same protocol and flow control as chat streams (lib/feed.js).
 */
class FetchBody {
  #feed
  #chunks = []
  #error = null
  #wake = null
  #head = null

  constructor(native, inbox, detach) {
    this.#feed = new Feed(native, inbox, detach)
  }

  response(method) {
    return new Promise((resolve, reject) => {
      this.#head = { resolve, reject, method }
      try {
        this.#feed.start((value) => this.#receive(value))
      } catch (e) {
        reject(nativeArgumentError(e))
      }
    })
  }

  #receive(value) {
    if (Buffer.isBuffer(value)) {
      this.#chunks.push(value)
    } else if (value !== null && typeof value === 'object' && typeof value.status === 'number' && value.code === undefined) {
      const { resolve, method } = this.#head
      this.#head = null
      const headers = new Headers()
      for (const [name, v] of value.headers) headers.append(name, v)
      const empty = NULL_BODY_STATUSES.has(value.status) || method === 'HEAD'
      if (empty) this.#close()
      resolve(new Response(empty ? null : this.#stream(), { status: value.status, headers }))
    } else {
      this.#feed.signal(value)
      const err = this.#feed.error
      if (err) this.#error = err.code === 'ERR_ABORTED' ? abortError(err) : err
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
    if (!this.#feed.ended) this.#close()
  }

  #stream() {
    const stream = new ReadableStream({
      pull: async (controller) => {
        for (;;) {
          const chunk = this.#chunks.shift()
          if (chunk !== undefined) {
            this.#feed.consumed(1)
            return controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength))
          }
          if (this.#error) return controller.error(this.#error)
          if (this.#feed.ended) return controller.close()
          await new Promise((resolve) => (this.#wake = resolve))
        }
      },
      cancel: () => this.#close(),
    })
    abandonedBodies.register(stream, this)
    return stream
  }

  /** The consumer is done with the body: the request is cancelled. */
  #close() {
    this.#chunks = []
    this.#feed.close()
  }
}

module.exports = { fetchThrough }
