// Types of llmpool's public API, written by hand. Option defaults and units are stated here and in
// the README's option tables; `__test__/options-truth.spec.ts` holds the option names of both to
// what the native validator accepts.

/** TCP and TLS settings of new connections. */
export interface ConnectOptions {
  /** Send TCP keep-alive probes on idle sockets. Default `true`. */
  keepAlive?: boolean
  /** Idle time before the first TCP keep-alive probe, in ms. Default `60000`. */
  keepAliveInitialDelay?: number
  /** Extra trusted CA certificates (PEM), added to the built-in web PKI roots. Default none. */
  ca?: string | Buffer | Array<string | Buffer>
  /**
   * Verify the server's certificate. Default `true`. **Dangerous** when `false`: any server can
   * pretend to be the endpoint; only for tests and closed networks.
   */
  rejectUnauthorized?: boolean
  /**
   * Also trust the operating system's certificate store (and `SSL_CERT_FILE` / `SSL_CERT_DIR`),
   * in addition to the bundled roots, `ca` and `NODE_EXTRA_CA_CERTS`; in the spirit of Node's
   * `--use-system-ca`. Default `false`.
   */
  useSystemCA?: boolean
  /** Client certificate chain (PEM), for servers that demand one (mTLS). Needs `key`. Default none. */
  cert?: string | Buffer
  /** The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted). Needs `cert`. Default none. */
  key?: string | Buffer
  /** The name sent as SNI and checked against the server's certificate, instead of the host. Default the host. */
  servername?: string
}

/** Client-side limits of one client. */
export interface LimitsOptions {
  /** Requests per minute. */
  rpm?: number
  /** Tokens per minute. */
  tpm?: number
  /** Calls in flight at once. */
  concurrency?: number
}

/** The DNS cache of new connections (undici's dns interceptor names). */
export interface DnsOptions {
  /** How long resolved addresses are reused, in ms; `0` = no cache. Default `10000`. */
  maxTTL?: number
  /** Most host names kept. Default `1000`. */
  maxItems?: number
}

/** Retry policy; names and meanings follow undici's `RetryHandler`. */
export interface RetryOptions {
  /** Retries after the first attempt. Default `3`. */
  maxRetries?: number
  /** First backoff delay, in ms. Default `1000`. */
  minTimeout?: number
  /** Longest backoff delay, in ms. Default `30000`. */
  maxTimeout?: number
  /** Growth factor of the delay between retries. Default `2`. */
  timeoutFactor?: number
  /** Honour `Retry-After` / `retry-after-ms`. Default `true`. */
  retryAfter?: boolean
  /**
   * Statuses that are retried. Default `[408, 409, 429, 500, 502, 503, 504]`. 400, 401, 403, 404
   * and 422 are never retried. A server's `x-should-retry: true|false` overrides this list.
   */
  statusCodes?: number[]
  /**
   * Failures other than HTTP statuses that are retried. Default
   * `['ERR_CONNECT', 'ERR_CONNECT_TIMEOUT', 'ERR_SOCKET', 'ERR_STREAM_TRUNCATED']` (refused,
   * connect timeout, a connection that broke, a stream that ended before its first chunk).
   * Streams retry only before their first chunk.
   */
  errorCodes?: RetryableErrorCode[]
}

export type RetryableErrorCode =
  | 'ERR_CONNECT'
  | 'ERR_CONNECT_TIMEOUT'
  | 'ERR_SOCKET'
  | 'ERR_TLS'
  | 'ERR_HEADERS_TIMEOUT'
  | 'ERR_BODY_TIMEOUT'
  | 'ERR_TIMEOUT'
  | 'ERR_FIRST_TOKEN_TIMEOUT'
  | 'ERR_STREAM_TRUNCATED'
  | 'ERR_STREAM_ERROR'
  | 'ERR_PROVIDER_ERROR'
  | 'ERR_INVALID_RESPONSE'
  | 'ERR_PROXY'

/** Opt-in circuit breaker for the origin. */
export interface CircuitBreakerOptions {
  /** Consecutive retryable failures that open the circuit. Default `5`. */
  failureThreshold?: number
  /** How long the circuit stays open (calls fail with `ERR_CIRCUIT_OPEN`) before one probe call goes through, in ms. Default `30000`. */
  resetTimeout?: number
}

/** Pool and transport options: the client's, and any upstream of `upstreams` may override them. */
export interface PoolOptions {
  /** Most connections to the origin at once; `null` = unlimited. Default `100`. */
  connections?: number | null
  /** `1` keeps connections alive; `0` opens a new connection per request. Default `1`. */
  pipelining?: 0 | 1
  /** Idle time after which a kept-alive connection is closed when the server gives no hint. Default `90000`. */
  keepAliveTimeout?: number
  /** Upper bound of a server's `Keep-Alive: timeout=` hint. Default `120000`. */
  keepAliveMaxTimeout?: number
  /** Taken off a server's `Keep-Alive` hint so that we stop before the server does. Default `1000`. */
  keepAliveTimeoutThreshold?: number
  /** TCP connect plus TLS handshake. Default `10000`. */
  connectTimeout?: number
  /** Request sent → response headers; `0` = none. Default `300000`. */
  headersTimeout?: number
  /** Longest gap between two body chunks; `0` = none. Default `300000`. */
  bodyTimeout?: number
  /** Race IPv6 and IPv4 addresses (happy eyeballs). Default `true`. */
  autoSelectFamily?: boolean
  /** Delay before the next address is tried while one is still connecting. Default `250`. */
  autoSelectFamilyAttemptTimeout?: number
  /** TCP and TLS settings. */
  connect?: ConnectOptions
  /** Longest wait for a free connection, then `ERR_POOL_TIMEOUT`; `0` = none. Default `10000`. */
  poolTimeout?: number
  /** Deadline of one attempt, start to last byte; `0` = none. Default `600000`. */
  timeout?: number
  /** Streaming: request start → first data event; `0` = none. Default `60000`. */
  firstTokenTimeout?: number
  /** Streaming: longest gap between data events (comments do not count); `0` = none. Default `30000`. */
  tokenTimeout?: number
  /**
   * Largest non-stream response body, in bytes, then `ERR_RESPONSE_TOO_LARGE` (the connection is
   * closed); `-1` = unlimited. Default `33554432` (32 MiB).
   */
  maxResponseSize?: number
  /**
   * The proxy: `'http://[user:pass@]host:port'` or `'https://…'` (TLS to the proxy itself, with
   * the same trusted roots), or `false` for none whatever the environment says. Unset: the
   * environment decides, as curl and undici's `EnvHttpProxyAgent` do (`HTTPS_PROXY` for https
   * targets, `HTTP_PROXY` for http ones, lowercase names first, `NO_PROXY` exempts hosts).
   * https targets go through a `CONNECT` tunnel; http ones are forwarded in absolute form.
   */
  proxy?: string | false
  /**
   * Offer HTTP/2 by ALPN on TLS connections (undici's name) and use what the server picks: many
   * requests share one connection as streams. Default `false` (see the README's HTTP/2 section).
   */
  allowH2?: boolean
  /**
   * Most streams on one HTTP/2 connection, never more than the server allows; a new connection
   * opens (up to `connections`) only when every open one is full. Default `100`.
   */
  maxConcurrentStreams?: number
}

/**
 * One upstream of `upstreams`: its endpoint and key, how routing sees it, its own limits, and
 * any pool option, which overrides the client's for this upstream.
 */
export interface UpstreamOptions extends PoolOptions {
  /** Its name in stats, metrics, errors and `rateLimits(name)`. Default: its origin. Unique. */
  name?: string
  /** The API root, e.g. `https://my-resource.openai.azure.com/openai/v1`. Required. */
  baseUrl: string
  /** Its key (default: the client's `apiKey`). */
  apiKey?: string
  /** Headers added to the client's (its own win). */
  headers?: Record<string, string>
  /** Share of calls under `routing: 'weighted'` (1–1000000). Default `1`. */
  weight?: number
  /**
   * The models it serves: names, or a map from the model a call asks for to the upstream's own
   * name for it (an Azure deployment): `{ 'gpt-4o-mini': 'my-deployment' }`. Absent = every model.
   */
  models?: string[] | Record<string, string>
  /** Its own limits, on top of the client-wide `limits`. */
  limits?: LimitsOptions | false
}

/** Where limiter state is shared across processes. */
export interface StoreOptions {
  /**
   * `redis://[user:password@]host[:port][/db]`, or `rediss://…` for Redis over TLS; with
   * `cluster: true`, one or more seed URLs of the cluster.
   */
  redis: string | string[]
  /** A Redis Cluster: the slot map is read from the seeds, MOVED/ASK followed. Default `false`. */
  cluster?: boolean
  /** TLS settings of `rediss://` (the system's trust store and checked certificates when absent). */
  tls?: StoreTlsOptions
  /** Key prefix, so that services can share one Redis. Default `'llmpool'`. */
  prefix?: string
}

/** How the store's TLS connection trusts Redis and shows itself (`rediss://` only). */
export interface StoreTlsOptions {
  /** Trusted roots (PEM) instead of the system's trust store. */
  ca?: string | Buffer | Array<string | Buffer>
  /** Client certificate chain (PEM), for mTLS; needs `key`. */
  cert?: string | Buffer
  /** Client private key (PEM, unencrypted); needs `cert`. */
  key?: string | Buffer
  /** The name sent as SNI and checked against the certificate instead of the URL's host (one Redis only). */
  servername?: string
  /** `false` accepts any certificate: for tests and private networks only. Default `true`. */
  rejectUnauthorized?: boolean
}

/**
 * The response cache: a call sent again with the same body (keys in any order), path, headers and
 * client keys is answered from it without the network. Only complete successes are kept. A
 * sampled request (`temperature > 0`) gets the same answer again, not a new sample.
 */
export interface CacheOptions {
  /** How long an entry is kept, in ms. Default `3600000` (an hour). */
  ttl?: number
  /** Memory for entries, in bytes; least recently used out first. Default `67108864` (64 MiB). */
  maxBytes?: number
  /** Keep entries in the client's `store` (Redis) too, with their TTL, so that a fleet shares them. Default `false`. */
  shared?: boolean
}

/** How a call picks among the healthy upstreams that serve its model. */
export type Routing = 'least-busy' | 'latency' | 'weighted'

/** Options of `new Client(options)`. Durations are in milliseconds. */
export interface ClientOptions extends PoolOptions {
  /** The API root, e.g. `https://api.openai.com/v1`. Required unless `upstreams` is given. Its path prefix is kept. */
  baseUrl?: string
  /**
   * Several upstreams instead of `baseUrl` (keys, deployments or providers), each with its own
   * pool; calls are routed among the healthy ones that serve their model and fail over.
   */
  upstreams?: UpstreamOptions[]
  /** Default `'least-busy'` (see the README's Upstreams section for the measurement). */
  routing?: Routing
  /** With `upstreams`: consecutive retryable failures (429, 5xx, connect errors) before an upstream cools down. Default `3`. */
  allowedFails?: number
  /** With `upstreams`: how long an upstream cools down, in ms; a 429's `Retry-After` sets it too. Default `5000`. */
  cooldown?: number
  /** Models to try when every upstream of a model failed: `{ 'gpt-4o': ['gpt-4o-mini'] }`. */
  fallbacks?: Record<string, string[]>
  /** Models to try when the prompt does not fit (`context_length_exceeded`). */
  contextWindowFallbacks?: Record<string, string[]>
  /** Share limiter state and provider pauses across processes through Redis. */
  store?: StoreOptions | false
  /** Opt-in response cache (`true`: the defaults); absent or `false` = none. */
  cache?: boolean | CacheOptions
  /**
   * Where llmpool's events go (retries, failovers, cooldowns, the store going down and back,
   * failed calls) as structured fields: pino, or any object shaped like it. `LLMPOOL_LOG` still
   * prints to stderr.
   */
  logger?: LlmpoolLogger
  /** Sent as `Authorization: Bearer …`. Never logged, never in errors or stats. */
  apiKey?: string
  /** Extra headers sent with every request. */
  headers?: Record<string, string>
  /** Streaming: largest SSE event, in bytes, then `ERR_SSE_EVENT_TOO_LARGE`. Default `16777216` (16 MiB). */
  maxEventSize?: number
  /**
   * More header names whose values are secrets, redacted (with the API key and the values of
   * `authorization`, `proxy-authorization`, `api-key`, `x-api-key` and `cookie`) from every error,
   * client-level or per call. Default none.
   */
  redactHeaders?: string[]
  /**
   * Client-side limits: a call reserves one request and its estimated tokens (prompt characters
   * ÷ 4 + `max_tokens`; corrected by the answer's `usage`, or a stream's chunk count) before it
   * is sent, and waits its turn (FIFO, abortable) when a limit is reached. GCRA: a rate of n per
   * minute allows one second's worth at once, then one every 60 s / n. Default none.
   */
  limits?: LimitsOptions | false
  /** Longest wait for a client-side limit, then `ERR_LIMIT_TIMEOUT`; `0` = no bound. Default `60000`. */
  limitTimeout?: number
  /** The DNS cache of new connections, or `false` to resolve every time. Default `{ maxTTL: 10000, maxItems: 1000 }`. */
  dns?: DnsOptions | false
  /**
   * Retry policy, or `false` for none. Delay before retry n: `min(minTimeout · timeoutFactor^(n−1),
   * maxTimeout)` times `1 + J` with J uniform in [0, 0.25), capped at `maxTimeout`; or exactly
   * what `Retry-After` / `retry-after-ms` asks (a longer ask than `maxTimeout` fails at once).
   * POST chat calls are retried; streams only before their first chunk. A request the
   * connection proves it never wrote is sent again on a fresh connection without counting as a
   * retry, even with `retry: false`; nothing else is.
   */
  retry?: RetryOptions | false
  /** Opt-in circuit breaker; absent or `false` = none. */
  circuitBreaker?: CircuitBreakerOptions | false
}

/** Per-call options of `chat()` and `chatStream()`. */
export interface CallOptions {
  /** Aborts the call at any stage with `ERR_ABORTED`. */
  signal?: AbortSignal
  /** Overrides `timeout` for this call, in ms; `0` = none. */
  timeout?: number
  /** Extra headers for this call; they override the client's. */
  headers?: Record<string, string>
  /** Overrides `retry.maxRetries` for this call (0–100). */
  maxRetries?: number
  /** With a client `cache`: `false` neither looks up nor keeps this call; `{ ttl }` keeps its answer that long. */
  cache?: false | { ttl: number }
}

/** Per-call options of `chat()`, `request()` and `embeddings()`. */
export interface JsonCallOptions extends CallOptions {
  /** Resolve with `{ data, response }`: the parsed body and its response's status, headers and limits. */
  withResponse?: boolean
}

/** What `withResponse: true` adds: the response behind the parsed body. */
export interface ResponseInfo {
  status: number
  headers: Headers
  /** The rate limits its headers reported, or null. */
  rateLimit: RateLimits | null
  /** The upstream that answered (with `upstreams`), else null. */
  upstream: string | null
  /** Attempts the call made before this answer, on every upstream (1: no retry, no failover; 0: from the cache). */
  attempts: number
  /** With a client `cache`: whether the answer came from it; null when the call was not cached. */
  cache: 'hit' | 'miss' | null
}

export interface WithResponse<T> {
  data: T
  response: ResponseInfo
}

/** Per-call options of `chatStream()`. */
export interface StreamCallOptions extends CallOptions {
  /** Overrides `firstTokenTimeout` for this call, in ms; `0` = none. */
  firstTokenTimeout?: number
  /** Overrides `tokenTimeout` for this call, in ms; `0` = none. */
  tokenTimeout?: number
}

// ---- Requests (OpenAI Chat Completions compatible; unknown fields are sent as given) ----

export type ChatRole = 'system' | 'developer' | 'user' | 'assistant' | 'tool' | 'function'

export interface TextContentPart {
  type: 'text'
  text: string
}

export interface ImageContentPart {
  type: 'image_url'
  image_url: { url: string; detail?: 'auto' | 'low' | 'high' }
}

export interface InputAudioContentPart {
  type: 'input_audio'
  input_audio: { data: string; format: 'wav' | 'mp3' }
}

export interface FileContentPart {
  type: 'file'
  file: { file_data?: string; file_id?: string; filename?: string }
}

export interface RefusalContentPart {
  type: 'refusal'
  refusal: string
}

export type UserContentPart = TextContentPart | ImageContentPart | InputAudioContentPart | FileContentPart

/** A function the model called. */
export interface ToolCall {
  id: string
  type: 'function'
  function: { name: string; arguments: string }
}

/** A custom (free-form input) tool the model called. */
export interface CustomToolCall {
  id: string
  type: 'custom'
  custom: { name: string; input: string }
}

export interface SystemMessage {
  role: 'system'
  content: string | TextContentPart[]
  name?: string
}

export interface DeveloperMessage {
  role: 'developer'
  content: string | TextContentPart[]
  name?: string
}

export interface UserMessage {
  role: 'user'
  content: string | UserContentPart[]
  name?: string
}

export interface AssistantMessage {
  role: 'assistant'
  content?: string | Array<TextContentPart | RefusalContentPart> | null
  refusal?: string | null
  name?: string
  tool_calls?: Array<ToolCall | CustomToolCall>
  audio?: { id: string } | null
  /** Deprecated by OpenAI in favour of `tool_calls`. */
  function_call?: { name: string; arguments: string } | null
}

export interface ToolMessage {
  role: 'tool'
  content: string | TextContentPart[]
  tool_call_id: string
}

/** Deprecated by OpenAI in favour of tool messages. */
export interface FunctionMessage {
  role: 'function'
  content: string | null
  name: string
}

export type ChatMessage =
  | SystemMessage
  | DeveloperMessage
  | UserMessage
  | AssistantMessage
  | ToolMessage
  | FunctionMessage

export interface FunctionDefinition {
  name: string
  description?: string
  /** A JSON Schema object. */
  parameters?: Record<string, unknown>
  strict?: boolean | null
}

export interface Tool {
  type: 'function'
  function: FunctionDefinition
}

/** A custom tool (free-form text input, optionally constrained by a grammar). */
export interface CustomTool {
  type: 'custom'
  custom: { name: string; description?: string; format?: { type: string } }
}

export type ToolChoice =
  | 'none'
  | 'auto'
  | 'required'
  | { type: 'function'; function: { name: string } }
  | { type: string }

export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | {
      type: 'json_schema'
      json_schema: { name: string; description?: string; schema?: { [k: string]: unknown }; strict?: boolean | null }
    }
  | { type: string }

/**
 * The fields of a `POST /chat/completions` body that llmpool knows. The methods take any object
 * that has them (openai-node's own `ChatCompletionCreateParams` included); other fields (a
 * provider's own, such as `top_k`) pass through untouched.
 */
export interface ChatCompletionCreateParamsBase {
  model: string
  messages: ChatMessage[]
  max_tokens?: number | null
  max_completion_tokens?: number | null
  temperature?: number | null
  top_p?: number | null
  n?: number | null
  stop?: string | string[] | null
  presence_penalty?: number | null
  frequency_penalty?: number | null
  logit_bias?: Record<string, number> | null
  logprobs?: boolean | null
  top_logprobs?: number | null
  seed?: number | null
  user?: string
  tools?: Array<Tool | CustomTool>
  tool_choice?: ToolChoice
  parallel_tool_calls?: boolean
  response_format?: ResponseFormat
  /** `'minimal' | 'low' | 'medium' | 'high'` and what providers add. */
  reasoning_effort?: string | null
  metadata?: { [key: string]: string } | null
  store?: boolean | null
  service_tier?: string | null
  modalities?: Array<'text' | 'audio'> | null
  /** `chat()` sends the body as given (and refuses `stream: true`); `chatStream()` sets `stream: true`. */
  stream?: boolean | null
  stream_options?: { include_usage?: boolean; include_obfuscation?: boolean } | null
}

/** A chat body to annotate your own variables with: the known fields, and any other. */
export interface ChatCompletionCreateParams extends ChatCompletionCreateParamsBase {
  [extra: string]: unknown
}

// ---- Responses ----

export interface CompletionUsage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
  prompt_tokens_details?: { cached_tokens?: number; audio_tokens?: number; [k: string]: unknown }
  completion_tokens_details?: { reasoning_tokens?: number; audio_tokens?: number; [k: string]: unknown }
  [extra: string]: unknown
}

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'function_call'

/** One token's log probability, with the most likely alternatives. */
export interface TokenLogprob {
  token: string
  bytes: number[] | null
  logprob: number
  top_logprobs: Array<{ token: string; bytes: number[] | null; logprob: number }>
}

export interface ChoiceLogprobs {
  content: TokenLogprob[] | null
  refusal: TokenLogprob[] | null
}

export interface ChatCompletionMessage {
  role: 'assistant'
  content: string | null
  /** OpenAI always sends it (null when there is no refusal); some servers omit it. */
  refusal: string | null
  tool_calls?: Array<ToolCall | CustomToolCall>
  function_call?: { name: string; arguments: string } | null
  [extra: string]: unknown
}

export interface ChatCompletionChoice {
  index: number
  message: ChatCompletionMessage
  /** Always set in a completion (a merged stream that never sent one reports `'stop'`). */
  finish_reason: FinishReason
  /** `null` unless `logprobs: true` was asked; some servers omit it. */
  logprobs: ChoiceLogprobs | null
  [extra: string]: unknown
}

export type ServiceTier = 'auto' | 'default' | 'flex' | 'scale' | 'priority' | null

/** The response of `POST /chat/completions`. Fields not listed are kept as the server sent them. */
export interface ChatCompletion {
  id: string
  object: 'chat.completion'
  created: number
  model: string
  choices: ChatCompletionChoice[]
  usage?: CompletionUsage
  system_fingerprint?: string
  service_tier?: ServiceTier
  [extra: string]: unknown
}

// ---- Streaming ----

export interface ChatCompletionChunkToolCall {
  /** Position of the tool call in the message; deltas with the same index belong together. */
  index: number
  id?: string
  type?: 'function'
  function?: { name?: string; arguments?: string }
  [extra: string]: unknown
}

export interface ChatCompletionChunkDelta {
  role?: 'assistant' | 'developer' | 'system' | 'user' | 'tool'
  content?: string | null
  refusal?: string | null
  tool_calls?: ChatCompletionChunkToolCall[]
  function_call?: { name?: string; arguments?: string }
  [extra: string]: unknown
}

export interface ChatCompletionChunkChoice {
  index: number
  delta: ChatCompletionChunkDelta
  finish_reason: FinishReason | null
  logprobs?: ChoiceLogprobs | null
  [extra: string]: unknown
}

/** One SSE data event of a streamed completion. Fields not listed are kept as sent. */
export interface ChatCompletionChunk {
  id: string
  object: 'chat.completion.chunk'
  created: number
  model: string
  choices: ChatCompletionChunkChoice[]
  /** Present on the last chunk when `stream_options: { include_usage: true }` was sent. */
  usage?: CompletionUsage | null
  system_fingerprint?: string
  service_tier?: ServiceTier
  [extra: string]: unknown
}

/**
 * A streamed chat completion. The request is sent when iteration starts (the first `next()`);
 * a stream that is never iterated sends nothing. `break`, a throw in the loop, the signal, a
 * timeout or `destroy()` cancel it at once and close its connection.
 */
export declare class ChatStream implements AsyncIterableIterator<ChatCompletionChunk> {
  [Symbol.asyncIterator](): ChatStream
  next(): Promise<IteratorResult<ChatCompletionChunk, undefined>>
  return(value?: unknown): Promise<IteratorResult<ChatCompletionChunk, undefined>>
  throw(error?: unknown): Promise<IteratorResult<ChatCompletionChunk, undefined>>
  /**
   * Consumes the stream and returns one `ChatCompletion`: content concatenated, tool-call deltas
   * merged by index, `finish_reason` and `usage` filled in.
   */
  finalCompletion(): Promise<ChatCompletion>
  /** A web `ReadableStream` of the chunks; cancelling it cancels the request. */
  toReadableStream(): ReadableStream<ChatCompletionChunk>
  /**
   * The text fast path: the first choice's content as strings (each one everything that arrived
   * since the last `next()`: one chunk's text when the consumer keeps up, many when it is busy).
   * The chunks are parsed and merged in Rust and never become JS objects;
   * `finalCompletion()` still returns the whole completion. Call it before iterating (a
   * `TypeError` after); the stream then yields strings.
   */
  text(): TextStream
}

/** `chatStream(body).text()`: the content of a chat stream, as strings. */
export declare class TextStream implements AsyncIterable<string> {
  [Symbol.asyncIterator](): AsyncIterator<string, undefined>
  next(): Promise<IteratorResult<string, undefined>>
  /** Ends the stream: the request is cancelled. */
  return(value?: unknown): Promise<IteratorResult<string, undefined>>
  /** Consumes the rest and returns the whole `ChatCompletion`, merged in Rust (tool calls, usage, finish reason, reasoning). */
  finalCompletion(): Promise<ChatCompletion>
  /** A web `ReadableStream` of the strings; cancelling it cancels the request. */
  toReadableStream(): ReadableStream<string>
}

// ---- Errors and stats ----

// ---- Embeddings, the Responses API, any SSE endpoint ----

/** The body of `POST /embeddings`. Fields not listed are passed through untouched. */
export interface EmbeddingCreateParams {
  model: string
  input: string | string[] | number[] | number[][]
  dimensions?: number
  encoding_format?: 'float' | 'base64'
  user?: string
}

export interface Embedding {
  object: 'embedding'
  index: number
  embedding: number[]
}

/** The answer of `POST /embeddings`. */
export interface CreateEmbeddingResponse {
  object: 'list'
  data: Embedding[]
  model: string
  usage: { prompt_tokens: number; total_tokens: number }
  [extra: string]: unknown
}

/** The body of `POST /responses` (the Responses API). Fields not listed are passed through. */
export interface ResponseCreateParams {
  model?: string
  input?: unknown
  instructions?: string | null
  max_output_tokens?: number | null
}

/** One event of a Responses API stream (`response.created`, `response.output_text.delta`, …). */
export interface ResponseStreamEvent {
  type: string
  sequence_number?: number
  /** `response.output_text.delta`: the text added. */
  delta?: string
  /** `response.created` / `response.completed` / …: the response object. */
  response?: { id: string; status?: string; output?: unknown[]; usage?: unknown; [k: string]: unknown }
  [extra: string]: unknown
}

/** One event of `client.stream()`: the SSE event name (`message` when none) and its JSON data. */
export interface StreamEvent<T = unknown> {
  event: string
  data: T
}

/** The events of any SSE endpoint; cancellation and flow control as `ChatStream`. */
export declare class EventStream<T = unknown> implements AsyncIterableIterator<StreamEvent<T>> {
  [Symbol.asyncIterator](): EventStream<T>
  next(): Promise<IteratorResult<StreamEvent<T>, undefined>>
  return(value?: unknown): Promise<IteratorResult<StreamEvent<T>, undefined>>
  throw(error?: unknown): Promise<IteratorResult<StreamEvent<T>, undefined>>
  /** Responses API: consumes the stream and resolves with the `response` of its final event. */
  finalResponse(): Promise<NonNullable<ResponseStreamEvent['response']>>
  /** A web `ReadableStream` of the events; cancelling it cancels the request. */
  toReadableStream(): ReadableStream<StreamEvent<T>>
}

/** Stable error codes; match on `err.code`. */
export type ErrorCode =
  | 'ERR_POOL_TIMEOUT'
  | 'ERR_CONNECT_TIMEOUT'
  | 'ERR_HEADERS_TIMEOUT'
  | 'ERR_BODY_TIMEOUT'
  | 'ERR_TIMEOUT'
  | 'ERR_FIRST_TOKEN_TIMEOUT'
  | 'ERR_TOKEN_TIMEOUT'
  | 'ERR_ABORTED'
  | 'ERR_CLOSED'
  | 'ERR_CONNECT'
  | 'ERR_SOCKET'
  | 'ERR_TLS'
  | 'ERR_PROXY'
  | 'ERR_HTTP_STATUS'
  | 'ERR_INVALID_RESPONSE'
  | 'ERR_PROVIDER_ERROR'
  | 'ERR_RESPONSE_TOO_LARGE'
  | 'ERR_STREAM_ERROR'
  | 'ERR_STREAM_TRUNCATED'
  | 'ERR_SSE_EVENT_TOO_LARGE'
  | 'ERR_CIRCUIT_OPEN'
  | 'ERR_LIMIT_TIMEOUT'
  | 'ERR_NO_UPSTREAM'
  | 'ERR_INTERNAL'

/**
 * Codes of the `TypeError`s llmpool makes: `ERR_INVALID_ARG` for an option or argument that
 * breaks its rule (thrown by the constructor and by the methods that return synchronously —
 * `chatStream()`, `stream()`, `responsesStream()`, `text()`, `rateLimits()`; the promise of
 * `chat()`, `request()`, `embeddings()`, `batch()` and `fetch()` rejects with it), `ERR_REDIRECT`
 * for a redirect `client.fetch` may not follow, and `ERR_LLMPOOL_NATIVE_MISSING` when `require`
 * finds no native binary for the platform.
 */
export type ThrownErrorCode = 'ERR_INVALID_ARG' | 'ERR_REDIRECT' | 'ERR_LLMPOOL_NATIVE_MISSING'

/**
 * The `TypeError` of an invalid option or argument (its message names the option), or of a
 * redirect `client.fetch` refuses. `err instanceof LlmpoolError` is true for it too.
 */
export interface InvalidArgumentError extends TypeError {
  code: 'ERR_INVALID_ARG' | 'ERR_REDIRECT'
}

/** The lower-level failure behind an error, as Node's own network errors carry it. */
export interface LlmpoolErrorCause extends Error {
  /** What the OS said (`ECONNRESET`, `ECONNREFUSED`, `EPIPE`, `ETIMEDOUT`, …), when it said. */
  code?: string
}

/**
 * Every rejection of llmpool: `err instanceof LlmpoolError` holds for all of them, the
 * `InvalidArgumentError` `TypeError`s included (which are not made by this class), and each has
 * a stable `code`.
 */
export declare class LlmpoolError extends Error {
  name: 'LlmpoolError'
  code: ErrorCode
  /** HTTP status, for `ERR_HTTP_STATUS`, and the proxy's for `ERR_PROXY` (407: authentication failed). */
  status?: number
  /** Response headers (lowercase names), for `ERR_HTTP_STATUS`. */
  headers?: Record<string, string>
  /**
   * The provider's error, for `ERR_HTTP_STATUS`, `ERR_STREAM_ERROR` and `ERR_PROVIDER_ERROR`: the
   * `error` member of its JSON body, the parsed body, or its text. Secrets are redacted.
   */
  error?: unknown
  /** What the OS or TLS library said, for failures that came from there (redacted). */
  cause?: LlmpoolErrorCause
  /** Attempts made before this error was final (1 without retries). */
  attempts: number
  /** The wait the server asked for (`Retry-After` / `retry-after-ms`), in ms, when it sent one. */
  retryAfter?: number
  /** The rate limits the failed answer's headers reported, when it carried any. */
  rateLimit?: RateLimits
  /** With `upstreams`: the upstreams the call tried, in order (`"name (model)"` for a fallback model). */
  upstreams?: string[]
}

/** One provider limit, as its headers said it. */
export interface RateLimitWindow {
  limit?: number
  remaining?: number
  /** When the window resets, in ms since the epoch (`Date.now()` units). */
  resetAt?: number
}

/** The provider's request and token limits as a response reported them. */
export interface RateLimits {
  requests?: RateLimitWindow
  tokens?: RateLimitWindow
  /** When that response arrived, in ms since the epoch. */
  updatedAt: number
}

export interface BatchSummary {
  done: number
  failed: number
  /** Sum of the answers' `usage.total_tokens`. */
  tokens: number
  elapsedMs: number
}

export type BatchResult<R> = { ok: true; value: R } | { ok: false; error: LlmpoolError }

export interface BatchOptions<B, R> {
  /** Calls in flight at once. Default `8`. */
  concurrency?: number
  /** Aborts the calls not yet settled. */
  signal?: AbortSignal
  /** After every item. */
  onProgress?: (summary: BatchSummary & { total: number }) => void
  /** The call for one body. Default `client.chat`. */
  call?: (body: B, options?: CallOptions) => Promise<R>
}

/** `client.stats()`: undici's `PoolStats` meanings plus counters since the client was made. */
export interface PoolStats {
  /** Open connections. */
  connected: number
  /** Open connections without a request. */
  free: number
  /** Requests whose new connection is being opened. */
  pending: number
  /** Requests waiting for a free connection. */
  queued: number
  /** Requests holding a connection. */
  running: number
  /** `pending + queued + running`. */
  size: number
  /** Calls started. */
  requests: number
  /** Calls that failed. A call the caller aborted is not a failure: it counts in `aborted`. */
  errors: number
  /** Calls the caller aborted (its `signal`); kept apart so that an error-rate alert does not fire when users leave. */
  aborted: number
  connectionsOpened: number
  connectionsClosed: number
  /** Requests served by an already open connection. */
  reused: number
  /** Retries made (attempts after the first). */
  retries: number
  /** Open HTTP/2 connections (counted in `connected` too). */
  multiplexed: number
  /** Requests in flight as HTTP/2 streams (counted in `running` too). */
  streams: number
  /** Calls waiting for a client-side limit (`limits`) now. */
  limited: number
  /** Calls that ever had to wait for a client-side limit. */
  limitWaits: number
  /** Calls held back until the provider's reset because it reported a limit used up. */
  paced: number
  /** Circuit breaker state, when `circuitBreaker` is set. */
  circuit?: 'closed' | 'open' | 'half-open'
  /** Host name lookups made for new connections. */
  dnsLookups: number
  /** New connections whose addresses came from the DNS cache. */
  dnsHits: number
  /** With `upstreams`: each upstream's state, in the configured order. */
  upstreams?: UpstreamState[]
  /** With `store`: whether Redis answered last time, round trips that failed, and limit decisions made locally meanwhile. */
  store?: { up: boolean; errors: number; fallbacks: number }
  /** With `cache`: calls answered from it, cached calls sent, and the entries and bytes in memory. */
  cache?: { hits: number; misses: number; entries: number; bytes: number }
}

/** A logger in pino's shape: each method takes the event's fields, then its message. */
export interface LlmpoolLogger {
  debug?(fields: Record<string, unknown>, message: string): unknown
  info?(fields: Record<string, unknown>, message: string): unknown
  warn?(fields: Record<string, unknown>, message: string): unknown
  error?(fields: Record<string, unknown>, message: string): unknown
}

/** One upstream in `stats().upstreams`. */
export interface UpstreamState {
  name: string
  /** `closed` (healthy), `open` (cooling down) or `half-open` (one probe allowed). */
  circuit: 'closed' | 'open' | 'half-open'
  /** Calls running on it now. */
  inFlight: number
  /** Attempts it received, and those that failed. */
  requests: number
  errors: number
  /** Recent time to response headers, once it answered. */
  latencyMs?: number
  /** The provider reported a limit used up whose reset is still ahead. */
  paced: boolean
}

export declare class Client {
  /** Throws a `TypeError` naming the option when an option is invalid. `baseUrl` or `upstreams` is required. */
  constructor(options: ClientOptions)
  /**
   * One chat completion. Rejects with an `LlmpoolError` (`instanceof` holds for every rejection);
   * invalid arguments reject too, never throw, with the `InvalidArgumentError` `TypeError`.
   */
  chat<P extends ChatCompletionCreateParamsBase>(body: P, options: JsonCallOptions & { withResponse: true }): Promise<WithResponse<ChatCompletion>>
  chat<P extends ChatCompletionCreateParamsBase>(body: P, options?: JsonCallOptions): Promise<ChatCompletion>
  /**
   * A streamed chat completion (`stream: true` is set on the wire; the body object is not
   * touched). Invalid arguments throw a `TypeError` synchronously; failures reject `next()`.
   */
  chatStream<P extends ChatCompletionCreateParamsBase>(body: P, options?: StreamCallOptions): ChatStream
  /**
   * Any JSON endpoint under `baseUrl` (`/embeddings`, `/responses`, `/completions`,
   * `/moderations`, …): `POST {baseUrl}{path}` with `body`, resolving with the parsed answer,
   * with the same pool, retries, redaction and errors as `chat()`. `path` starts with `/`.
   */
  request<T = unknown>(path: string, body: object, options: JsonCallOptions & { withResponse: true }): Promise<WithResponse<T>>
  request<T = unknown>(path: string, body: object, options?: JsonCallOptions): Promise<T>
  /** `POST {baseUrl}/embeddings`. */
  embeddings<P extends EmbeddingCreateParams>(body: P, options: JsonCallOptions & { withResponse: true }): Promise<WithResponse<CreateEmbeddingResponse>>
  embeddings<P extends EmbeddingCreateParams>(body: P, options?: JsonCallOptions): Promise<CreateEmbeddingResponse>
  /**
   * Any SSE endpoint under `baseUrl`: `{ event, data }` items, data parsed as JSON, on the same
   * decoder, flow control and timeouts as `chatStream()`. `stream: true` is added to the body
   * unless it has a `stream` member. `[DONE]`, `response.completed` and `response.incomplete`
   * end it; `error` and `response.failed` events reject with `ERR_STREAM_ERROR`.
   */
  stream<T = unknown>(path: string, body: object, options?: StreamCallOptions): EventStream<T>
  /** `POST {baseUrl}/responses` streamed: the Responses API's typed events. */
  responsesStream<P extends ResponseCreateParams>(body: P, options?: StreamCallOptions): EventStream<ResponseStreamEvent>
  /**
   * A WHATWG `fetch` that sends through this client (pool, TLS, proxy, timeouts, retries,
   * redaction): `new OpenAI({ baseURL, apiKey, fetch: client.fetch, maxRetries: 0 })`. Only this
   * client's origin; the response body streams. A final non-2xx answer resolves as that response
   * (so the SDK raises its own error class); failures reject with an `LlmpoolError`
   * (`name: 'AbortError'` for an abort).
   */
  fetch: (input: string | URL | Request, init?: RequestInit) => Promise<Response>
  /**
   * The base URL to give an SDK on `client.fetch`: `baseUrl`, or with `upstreams` a stand-in
   * (`http://upstreams.llmpool.invalid`) whose paths go to the upstream the router picks by the
   * body's model (each upstream sends its own key; the SDK's is dropped).
   */
  readonly baseURL: string
  stats(): PoolStats
  /**
   * The provider's rate limits as the last response that carried them reported (OpenAI and Groq
   * `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, Anthropic
   * `anthropic-ratelimit-*`), or `null` before any did.
   */
  rateLimits(): RateLimits | null
  /** One upstream's rate limits (a `TypeError` for a name not configured). */
  rateLimits(upstream: string): RateLimits | null
  /** Every upstream's rate limits by name (with `baseUrl`, one entry: its origin). */
  rateLimitsByUpstream(): Record<string, RateLimits | null>
  /**
   * Runs many calls through this client (pool, retries, `limits`): results in input order, one
   * failure never rejects the batch. `call` picks the endpoint (default `chat`), e.g.
   * `call: (body, o) => client.embeddings(body, o)`.
   */
  batch<B = ChatCompletionCreateParams, R = ChatCompletion>(
    bodies: B[],
    options?: BatchOptions<B, R>,
  ): Promise<{ results: Array<BatchResult<R>>; summary: BatchSummary }>
  /**
   * Prometheus text exposition (format 0.0.4): `llmpool_requests_total`, `llmpool_errors_total`
   * by `code`, `llmpool_retries_total`, `llmpool_connections_{opened,closed,reused}_total`,
   * `llmpool_pool_*` gauges, and histograms `llmpool_time_to_headers_seconds`,
   * `llmpool_time_to_first_token_seconds`, `llmpool_request_duration_seconds`,
   * `llmpool_stream_tokens_per_second`; every series has an `origin` label.
   */
  metrics(): string
  /** Graceful: refuses new calls, waits for in-flight ones, then closes every connection. */
  close(): Promise<void>
  /** Abrupt: in-flight calls reject with `ERR_CLOSED`, every connection closes. */
  destroy(): Promise<void>
}
