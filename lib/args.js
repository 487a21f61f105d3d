'use strict'
// Argument shaping for the public methods: option serialisation, body and call-option checks,
// AbortSignal wiring, and the TypeErrors of bad arguments. Nothing here decides an outcome.

const { CancelToken } = require('../binding.js')
const { llmpoolError, llmpoolTypeError } = require('../errors.js')

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

/** A broken rule of the caller's: a `TypeError` with a stable code, as Node's own. */
function invalidArg(message) {
  return llmpoolTypeError(message, 'ERR_INVALID_ARG')
}

function isPlainObject(value) {
  if (value === null || typeof value !== 'object') return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

function serializeBody(body, method) {
  if (!isPlainObject(body)) throw invalidArg(`${method}() body must be a plain object`)
  let json
  try {
    json = JSON.stringify(body)
  } catch (e) {
    throw invalidArg(`${method}() body must be JSON-serialisable: ${e.message}`)
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

/**
 * Splits per-call options into the signal (wired here) and the rest as JSON for the native
 * validator, which checks them by the same rules as the client's options.
 */
function readCallOptions(options) {
  if (options === undefined || options === null) return { signal: undefined, native: undefined }
  if (!isPlainObject(options)) throw invalidArg('call options must be an object')
  const { signal, ...rest } = options
  if (signal !== undefined && !isAbortSignal(signal)) throw invalidArg('signal must be an AbortSignal')
  let native
  for (const _ in rest) {
    native = JSON.stringify(rest, optionReplacer)
    break
  }
  return { signal, native }
}

/** Native call options (JSON text of an object, or undefined) with one more member. */
function withNativeOption(native, name, value) {
  const member = `${JSON.stringify(name)}:${JSON.stringify(value)}`
  if (native === undefined) return `{${member}}`
  return `${native.slice(0, -1)}${native === '{}' ? '' : ','}${member}}`
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
  if (e && e.code === 'InvalidArg') return invalidArg(e.message)
  // Anything else the binding throws is a bug, but still an LlmpoolError with a code.
  return llmpoolError('ERR_INTERNAL', String(e?.message ?? e))
}

module.exports = {
  withNativeOption,
  optionReplacer,
  invalidArg,
  isPlainObject,
  serializeBody,
  isAbortSignal,
  readCallOptions,
  linkSignal,
  nativeArgumentError,
}
