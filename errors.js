'use strict'
// Turns the plain error data the native layer resolves with into real `Error`s made in the
// caller's realm, so `instanceof Error` and `err.code` both work.

/** Every rejection of llmpool is an `LlmpoolError` with a stable string `code`. */
class LlmpoolError extends Error {
  constructor(message, code) {
    super(message)
    this.name = 'LlmpoolError'
    this.code = code
  }
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

module.exports = { LlmpoolError, fromInfo, llmpoolError }
