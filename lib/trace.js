'use strict'
// llmpool's own tracing channel: `diagnostics_channel.tracingChannel('llmpool:call')`, one
// start/end/asyncStart/asyncEnd (and error) per logical call, whatever its number of attempts.
// Nothing is built or published while nobody subscribes. `llmpool/otel` is one subscriber; any
// other tool can be another. The context object a call publishes:
//
//   operation   'chat' (chat(), chatStream(), /chat/completions, /responses), 'embeddings',
//               'text_completion', or 'request' / 'stream' / 'fetch' for other paths
//   method      the Client method called: 'chat', 'chatStream', 'request', 'stream', 'fetch'
//   model       the body's `model`, when it names one
//   body        the request body (the caller's object: read it, do not change it)
//   origin      the client's origin (a stand-in with `upstreams`)
//   stream      true for streams; they end with their last chunk, not when the call returns
//   result      (JSON calls) the answer, as the caller gets it; with it `attempts` (every
//               attempt, on every upstream), `upstream` (the one that answered, by name) and,
//               with a response cache, `cache` ('hit' or 'miss')
//   error       the LlmpoolError, when the call failed (code, attempts, upstreams)
//   cancelled   true when the caller aborted or left a stream early (not a failure)
//   and, for streams, set as chunks arrive: firstChunkAt / lastChunkAt (performance.now() ms),
//   chunks, responseId, responseModel, finishReasons, usage, and `content` (the first choice's
//   text) when a subscriber set `captureContent: true` on the context at start.

const diagnostics = require('node:diagnostics_channel')
const { performance } = require('node:perf_hooks')

const calls = diagnostics.tracingChannel('llmpool:call')

/** What a path of the OpenAI API does, in the GenAI conventions' operation names. */
function operationOf(path, fallback) {
  const bare = String(path).split('?')[0].replace(/\/+$/, '')
  if (bare.endsWith('/chat/completions') || bare.endsWith('/responses')) return 'chat'
  if (bare.endsWith('/embeddings')) return 'embeddings'
  if (bare.endsWith('/completions')) return 'text_completion'
  return fallback
}

/** A call's context, or null when nobody listens (the common case costs one property read). */
function callContext(method, operation, body, origin, stream) {
  if (!calls.hasSubscribers) return null
  const model = body !== null && typeof body === 'object' && typeof body.model === 'string' ? body.model : undefined
  return { operation, method, model, body, origin, stream }
}

/**
 * Runs `run` (returning a promise) as one traced call when `context` is not null. A subscriber
 * may set `context.runInScope(fn)` at start (llmpool/otel does: the call's span is active in
 * it), so that what the call does next (its HTTP requests' events) happens in that scope.
 */
function traced(context, run) {
  if (context === null) return run()
  return calls.tracePromise(() => inScope(context, run), context)
}

/** `fn()` in the scope a subscriber gave the call, if any. */
function inScope(context, fn) {
  return typeof context?.runInScope === 'function' ? context.runInScope(fn) : fn()
}

/** A stream's call: published at once (start, end); `ended` publishes the rest. */
function streamStarted(context) {
  calls.start.publish(context)
  calls.end.publish(context)
}

/** `n` chunks of a traced stream arrived from Rust. */
function streamArrived(context, n) {
  const now = performance.now()
  if (context.chunks === undefined) {
    context.chunks = 0
    context.firstChunkAt = now
  }
  context.chunks += n
  context.lastChunkAt = now
}

/** One chunk of a traced stream as it arrived, parsed (object mode). */
function streamChunk(context, chunk) {
  if (chunk === null || typeof chunk !== 'object') return
  // Chat chunks carry these; an event stream's data may carry a `response` that does.
  const source = typeof chunk.data === 'object' && chunk.data !== null ? (chunk.data.response ?? chunk.data) : chunk
  if (typeof source.id === 'string') context.responseId = source.id
  if (typeof source.model === 'string') context.responseModel = source.model
  if (source.usage) context.usage = source.usage
  if (Array.isArray(source.choices)) {
    for (const choice of source.choices) {
      if (choice?.finish_reason) (context.finishReasons ??= []).push(choice.finish_reason)
      if (context.captureContent && choice?.index === 0 && typeof choice.delta?.content === 'string') {
        context.content = (context.content ?? '') + choice.delta.content
      }
    }
  }
}

/** Text mode: one delivery's text. */
function streamText(context, text) {
  if (context.captureContent) context.content = (context.content ?? '') + text
}

/** Text mode, at the end: what the chunks merged in Rust say (id, model, usage, finish). */
function streamMerged(context, completion) {
  if (typeof completion.id === 'string' && completion.id !== '') context.responseId = completion.id
  if (typeof completion.model === 'string' && completion.model !== '') context.responseModel = completion.model
  if (completion.usage) context.usage = completion.usage
  const reasons = (completion.choices ?? []).map((c) => c?.finish_reason).filter(Boolean)
  if (reasons.length > 0) context.finishReasons = reasons
}

/** The stream ended: `error` (or null), `cancelled` when the consumer left or aborted. */
function streamEnded(context, error, cancelled) {
  if (cancelled) context.cancelled = true
  if (error) {
    if (error.code === 'ERR_ABORTED') context.cancelled = true
    context.error = error
    calls.error.publish(context)
  }
  calls.asyncStart.publish(context)
  calls.asyncEnd.publish(context)
}

module.exports = { calls, operationOf, callContext, traced, inScope, streamStarted, streamArrived, streamChunk, streamText, streamMerged, streamEnded }
