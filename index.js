'use strict'
// The public `Client`: argument checks, AbortSignal wiring and JSON parsing in JS; pooling,
// timeouts and I/O in the native core (see src/).

const { inspect } = require('node:util')
const { NativeClient, CancelToken } = require('./binding.js')
const { LlmpoolError, fromInfo, llmpoolError } = require('./errors.js')

const CALL_OPTIONS = new Set(['signal', 'timeout', 'headers'])

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

function readCallOptions(options) {
  if (options === undefined || options === null) return {}
  if (typeof options !== 'object') throw new TypeError('call options must be an object')
  for (const key of Object.keys(options)) {
    if (!CALL_OPTIONS.has(key)) throw new TypeError(`${key} is not a known call option`)
  }
  const { signal, timeout, headers } = options
  if (signal !== undefined && !isAbortSignal(signal)) {
    throw new TypeError('signal must be an AbortSignal')
  }
  if (timeout !== undefined && !(Number.isInteger(timeout) && timeout >= 0)) {
    throw new TypeError('timeout must be a non-negative integer number of milliseconds (0 disables it)')
  }
  if (headers !== undefined && !isPlainObject(headers)) {
    throw new TypeError('headers must be an object of header names to string values')
  }
  return {
    signal,
    timeout,
    headers: headers === undefined ? undefined : JSON.stringify(headers),
  }
}

function nativeArgumentError(e) {
  return e && e.code === 'InvalidArg' ? new TypeError(e.message) : e
}

class Client {
  #native
  #origin

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
      this.#native = new NativeClient(json)
    } catch (e) {
      throw nativeArgumentError(e)
    }
    this.#origin = new URL(options.baseUrl).origin
  }

  /** One chat completion; resolves with the parsed `ChatCompletion`. */
  async chat(body, options) {
    const json = serializeBody(body, 'chat')
    if (body.stream === true) {
      throw new TypeError('chat() body.stream must not be true: use chatStream() to stream')
    }
    const { signal, timeout, headers } = readCallOptions(options)
    if (signal?.aborted) throw llmpoolError('ERR_ABORTED', `request to ${this.#origin} was aborted`)
    let cancel
    let onAbort
    if (signal) {
      cancel = new CancelToken()
      onAbort = () => cancel.cancel()
      signal.addEventListener('abort', onAbort, { once: true })
    }
    let outcome
    try {
      outcome = await this.#native.chat(json, timeout, headers, cancel)
    } catch (e) {
      throw nativeArgumentError(e)
    } finally {
      if (signal) signal.removeEventListener('abort', onAbort)
    }
    if (outcome.error) throw fromInfo(outcome.error)
    return this.#parseCompletion(outcome.body)
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

module.exports = { Client, LlmpoolError }
