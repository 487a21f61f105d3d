'use strict'
// `llmpool/otel`: an OpenTelemetry instrumentation built on the `llmpool:call` tracing channel
// (lib/trace.js). One span per logical call, after the GenAI semantic conventions (status:
// development): `{gen_ai.operation.name} {gen_ai.request.model}`, kind CLIENT, a child of the
// span active where the call was made; a stream's span ends with its last chunk. Attempts and
// failovers are attributes of the call's span (`llmpool.attempts`, `llmpool.upstreams`) when the
// call failed; each HTTP request is the undici instrumentation's business. The four GenAI client
// histograms are recorded with the conventions' bucket boundaries.
//
// `@opentelemetry/api` and `@opentelemetry/instrumentation` are optional peer dependencies: only
// this file loads them.

const diagnostics = require('node:diagnostics_channel')
const { performance } = require('node:perf_hooks')
const { context, trace, SpanKind, SpanStatusCode } = require('@opentelemetry/api')
const { InstrumentationBase } = require('@opentelemetry/instrumentation')
const { version } = require('./package.json')

/** Bucket boundaries the GenAI conventions give. */
const DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
const TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
const CHUNK_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]

/** Where the instrumentation keeps its state on a call's context (not the publisher's). */
const STATE = Symbol('llmpool.otel')

/** Request parameters the conventions name, by body member. */
const REQUEST_ATTRIBUTES = [
  ['max_tokens', 'gen_ai.request.max_tokens'],
  ['max_completion_tokens', 'gen_ai.request.max_tokens'],
  ['max_output_tokens', 'gen_ai.request.max_tokens'],
  ['temperature', 'gen_ai.request.temperature'],
  ['top_p', 'gen_ai.request.top_p'],
  ['frequency_penalty', 'gen_ai.request.frequency_penalty'],
  ['presence_penalty', 'gen_ai.request.presence_penalty'],
  ['seed', 'gen_ai.request.seed'],
]

class LlmpoolInstrumentation extends InstrumentationBase {
  /**
   * @param {{ enabled?: boolean, captureContent?: boolean, providerName?: string }} config
   * `captureContent` (off by default) records prompts and completions; `providerName` is
   * `gen_ai.provider.name` (default `openai`).
   */
  constructor(config = {}) {
    super('llmpool', version, config)
  }

  init() {
    return []
  }

  enable() {
    if (this._llmpoolHandlers) return
    this._llmpoolHandlers = {
      start: (ctx) => this._onStart(ctx),
      end: () => {},
      asyncStart: () => {},
      asyncEnd: (ctx) => this._onEnd(ctx),
      error: (ctx) => this._onError(ctx),
    }
    diagnostics.tracingChannel('llmpool:call').subscribe(this._llmpoolHandlers)
  }

  disable() {
    if (!this._llmpoolHandlers) return
    diagnostics.tracingChannel('llmpool:call').unsubscribe(this._llmpoolHandlers)
    this._llmpoolHandlers = null
  }

  _updateMetricInstruments() {
    const meter = this.meter
    this._histograms = {
      duration: meter.createHistogram('gen_ai.client.operation.duration', {
        description: 'GenAI operation duration.',
        unit: 's',
        advice: { explicitBucketBoundaries: DURATION_BUCKETS },
      }),
      tokens: meter.createHistogram('gen_ai.client.token.usage', {
        description: 'Number of input and output tokens used.',
        unit: '{token}',
        advice: { explicitBucketBoundaries: TOKEN_BUCKETS },
      }),
      firstChunk: meter.createHistogram('gen_ai.client.operation.time_to_first_chunk', {
        description: 'Time to receive the first chunk of a streamed response.',
        unit: 's',
        advice: { explicitBucketBoundaries: DURATION_BUCKETS },
      }),
      perChunk: meter.createHistogram('gen_ai.client.operation.time_per_output_chunk', {
        description: 'Time between consecutive chunks of a streamed response.',
        unit: 's',
        advice: { explicitBucketBoundaries: CHUNK_BUCKETS },
      }),
    }
  }

  _onStart(ctx) {
    const config = this.getConfig()
    const common = {
      'gen_ai.operation.name': ctx.operation,
      'gen_ai.provider.name': config.providerName ?? 'openai',
    }
    if (ctx.model !== undefined) common['gen_ai.request.model'] = ctx.model
    const server = serverOf(ctx.origin)
    if (server) {
      common['server.address'] = server.address
      common['server.port'] = server.port
    }
    const attributes = { ...common, 'llmpool.method': ctx.method }
    const body = ctx.body
    if (body !== null && typeof body === 'object') {
      for (const [member, name] of REQUEST_ATTRIBUTES) {
        if (typeof body[member] === 'number') attributes[name] = body[member]
      }
      if (config.captureContent && body.messages !== undefined) attributes['gen_ai.input.messages'] = JSON.stringify(body.messages)
      if (config.captureContent && body.input !== undefined) attributes['gen_ai.input.messages'] = JSON.stringify(body.input)
    }
    if (config.captureContent) ctx.captureContent = true
    const name = ctx.model === undefined ? ctx.operation : `${ctx.operation} ${ctx.model}`
    // Made where the call was made: the active span there is its parent.
    const parent = context.active()
    const span = this.tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, parent)
    ctx[STATE] = { span, started: performance.now(), common }
    // What the call does next runs with its span active: each HTTP request's span (from the
    // undici instrumentation) is then its child.
    const scope = trace.setSpan(parent, span)
    ctx.runInScope = (fn) => context.with(scope, fn)
  }

  _onError(ctx) {
    const state = ctx[STATE]
    const error = ctx.error
    if (!state || !error) return
    const cancelled = ctx.cancelled === true || error.code === 'ERR_ABORTED'
    const type = cancelled ? 'cancelled' : (error.code ?? error.name ?? '_OTHER')
    state.errorType = type
    state.span.setAttribute('error.type', type)
    if (typeof error.attempts === 'number') state.span.setAttribute('llmpool.attempts', error.attempts)
    if (Array.isArray(error.upstreams) && error.upstreams.length > 0) state.span.setAttribute('llmpool.upstreams', error.upstreams)
    if (typeof error.status === 'number') state.span.setAttribute('http.response.status_code', error.status)
    // A cancellation is the caller's choice, not a failure of the call.
    if (!cancelled) state.span.setStatus({ code: SpanStatusCode.ERROR, message: error.message })
  }

  _onEnd(ctx) {
    const state = ctx[STATE]
    if (!state) return
    ctx[STATE] = undefined
    const { span, common } = state
    if (ctx.cancelled && state.errorType === undefined) {
      state.errorType = 'cancelled'
      span.setAttribute('error.type', 'cancelled')
    }
    const answer = ctx.error ? undefined : responseOf(ctx)
    if (typeof ctx.attempts === 'number') span.setAttribute('llmpool.attempts', ctx.attempts)
    if (ctx.upstream) span.setAttribute('llmpool.upstream', ctx.upstream)
    if (ctx.cache) span.setAttribute('llmpool.cache', ctx.cache)
    if (answer) {
      if (answer.id) span.setAttribute('gen_ai.response.id', answer.id)
      if (answer.model) span.setAttribute('gen_ai.response.model', answer.model)
      if (answer.finishReasons?.length) span.setAttribute('gen_ai.response.finish_reasons', answer.finishReasons)
      if (answer.upstream) span.setAttribute('llmpool.upstream', answer.upstream)
      if (this.getConfig().captureContent && answer.output !== undefined) span.setAttribute('gen_ai.output.messages', answer.output)
    }
    const usage = answer?.usage
    const input = usage?.prompt_tokens ?? usage?.input_tokens
    const output = usage?.completion_tokens ?? usage?.output_tokens
    const cached = usage?.prompt_tokens_details?.cached_tokens ?? usage?.input_tokens_details?.cached_tokens
    if (typeof input === 'number') span.setAttribute('gen_ai.usage.input_tokens', input)
    if (typeof output === 'number') span.setAttribute('gen_ai.usage.output_tokens', output)
    if (typeof cached === 'number') span.setAttribute('gen_ai.usage.cache_read.input_tokens', cached)
    if (ctx.firstChunkAt !== undefined) span.setAttribute('llmpool.time_to_first_chunk_ms', ctx.firstChunkAt - state.started)
    span.end()

    const histograms = this._histograms
    if (!histograms) return
    const attributes = { ...common }
    if (answer?.model) attributes['gen_ai.response.model'] = answer.model
    if (state.errorType !== undefined) attributes['error.type'] = state.errorType
    histograms.duration.record((performance.now() - state.started) / 1000, attributes)
    if (state.errorType === undefined) {
      if (typeof input === 'number') histograms.tokens.record(input, { ...attributes, 'gen_ai.token.type': 'input' })
      if (typeof output === 'number') histograms.tokens.record(output, { ...attributes, 'gen_ai.token.type': 'output' })
    }
    if (ctx.firstChunkAt !== undefined) {
      histograms.firstChunk.record((ctx.firstChunkAt - state.started) / 1000, attributes)
      if (ctx.chunks > 1) histograms.perChunk.record((ctx.lastChunkAt - ctx.firstChunkAt) / 1000 / (ctx.chunks - 1), attributes)
    }
  }
}

/** What the answer says: a JSON call's result (or its `withResponse` form), or a stream's context. */
function responseOf(ctx) {
  if (ctx.stream) {
    return {
      id: ctx.responseId,
      model: ctx.responseModel,
      finishReasons: ctx.finishReasons,
      usage: ctx.usage,
      output: ctx.content === undefined ? undefined : JSON.stringify([{ role: 'assistant', content: ctx.content }]),
    }
  }
  let result = ctx.result
  let upstream
  if (result && typeof result === 'object' && 'data' in result && 'response' in result) {
    upstream = result.response?.upstream ?? undefined
    result = result.data
  }
  if (!result || typeof result !== 'object' || typeof result.status === 'number') return { upstream }
  const choices = Array.isArray(result.choices) ? result.choices : []
  return {
    id: typeof result.id === 'string' ? result.id : undefined,
    model: typeof result.model === 'string' ? result.model : undefined,
    finishReasons: choices.map((c) => c?.finish_reason).filter(Boolean),
    usage: result.usage,
    upstream,
    output: choices.length ? JSON.stringify(choices.map((c) => c?.message ?? null)) : undefined,
  }
}

/** `server.address` and `server.port` of an origin (none for the `upstreams` stand-in). */
function serverOf(origin) {
  if (typeof origin !== 'string' || origin.endsWith('.llmpool.invalid')) return null
  try {
    const url = new URL(origin)
    return { address: url.hostname, port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)) }
  } catch {
    return null
  }
}

module.exports = { LlmpoolInstrumentation }
