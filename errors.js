'use strict'
// Turns the plain error data the native layer resolves with into real `Error`s made in the
// caller's realm, so `instanceof Error` and `err.code` both work.

/** Marks every error llmpool makes (see `LlmpoolError[Symbol.hasInstance]`). */
const MADE_BY_LLMPOOL = Symbol('llmpool.error')

/**
 * Every rejection of llmpool is an `LlmpoolError` with a stable string `code`. Invalid arguments
 * are `TypeError`s (as in Node and undici: `code: 'ERR_INVALID_ARG'`), and `instanceof
 * LlmpoolError` holds for them too, so one `catch` branch on `LlmpoolError` sees every failure.
 */
class LlmpoolError extends Error {
  constructor(message, code) {
    super(message)
    this.name = 'LlmpoolError'
    this.code = code
  }

  static [Symbol.hasInstance](value) {
    return value !== null && (typeof value === 'object' || typeof value === 'function') && value[MADE_BY_LLMPOOL] === true
  }
}
Object.defineProperty(LlmpoolError.prototype, MADE_BY_LLMPOOL, { value: true })

/** A `TypeError` with a code, that is also an `LlmpoolError` by `instanceof`. */
function llmpoolTypeError(message, code) {
  const err = new TypeError(message)
  err.code = code
  Object.defineProperty(err, MADE_BY_LLMPOOL, { value: true })
  return err
}

/** The provider's error: the `error` member of an OpenAI-style body, else the parsed body. */
function providerError(body) {
  if (body === undefined || body === null || body === '') return undefined
  try {
    const parsed = JSON.parse(body)
    if (parsed && typeof parsed === 'object' && 'error' in parsed) return parsed.error
    return parsed
  } catch {
    return body
  }
}

function fromInfo(info) {
  const err = new LlmpoolError(info.message, info.code)
  if (info.status != null) {
    err.status = info.status
    err.headers = info.headers ?? {}
  }
  if (info.body != null) err.error = providerError(info.body)
  err.attempts = info.attempts
  if (info.retryAfter != null) err.retryAfter = info.retryAfter
  if (info.rateLimit != null) err.rateLimit = info.rateLimit
  if (info.upstreams != null) err.upstreams = info.upstreams
  if (info.causeMessage != null) {
    // What the OS or TLS library said, as Node's own network errors carry it.
    const cause = new Error(info.causeMessage)
    if (info.causeCode != null) cause.code = info.causeCode
    err.cause = cause
  }
  return err
}

function llmpoolError(code, message) {
  const err = new LlmpoolError(message, code)
  err.attempts = 1
  return err
}

module.exports = { LlmpoolError, fromInfo, llmpoolError, llmpoolTypeError }
