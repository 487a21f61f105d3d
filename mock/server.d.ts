// Types of `llmpool/mock`: the OpenAI-compatible mock server used by the demo and the tests.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

/** One request the mock received. */
export interface RecordedRequest {
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  /** The body as text, and parsed (undefined when it is not JSON). */
  raw: string
  body: any
}

/** What a handler receives for each request. */
export interface HandlerContext {
  req: IncomingMessage
  res: ServerResponse
  /** The parsed JSON body (undefined when it is not JSON). */
  body: any
  raw: string
  server: MockServer
  /** Index of this request among all the server received. */
  index: number
}

export type Handler = (ctx: HandlerContext) => unknown

export interface MockServerOptions {
  /** ms after a response after which the server closes an idle socket; default never. */
  idleClose?: number
  /** The `Keep-Alive` header to send; `null` sends none. */
  keepAliveHint?: string | null
  /** Serve https with this key and certificate (PEM). */
  tls?: { key: string | Buffer; cert: string | Buffer }
  /** Replaces the default handler. */
  handler?: Handler
  /** ms between streamed chunks of the default handler. */
  chunkDelay?: number
}

export declare class MockServer {
  constructor(options?: MockServerOptions)
  /** Set by `listen()`: e.g. `http://127.0.0.1:40123`, and `${origin}/v1`. */
  origin: string
  url: string
  port: number
  /** Connections accepted so far. */
  accepted: number
  requests: RecordedRequest[]
  sockets: Set<Socket>
  listen(): Promise<this>
  /** Replaces the handler (fault injection). */
  setHandler(handler: Handler): void
  close(): Promise<void>
}

/** Starts a mock server on 127.0.0.1 and a free port. */
export declare function startMockServer(options?: MockServerOptions): Promise<MockServer>
/** The default behaviour: a completion, or an SSE stream of it. */
export declare const openaiHandler: Handler
export declare function sendJson(res: ServerResponse, status: number, value: unknown, headers?: Record<string, string>): void
export declare function completion(body: any, content: string, extra?: Record<string, unknown>): Record<string, unknown>
export declare function chunk(body: any, delta: Record<string, unknown>, finishReason?: string | null): Record<string, unknown>
export declare function pieces(text: string): string[]
export declare function replyText(body: any): string

/** Handlers of servers that misbehave on purpose. */
export declare const hostile: {
  /** A stream whose first data event is an error quoting every request header. */
  streamErrorEchoingHeaders(): Handler
  /** A JSON body with a top-level error quoting every request header, under `status`. */
  errorBodyEchoingHeaders(status?: number): Handler
  /** A 429 with a retry header of any value. */
  retryHeader(name: string, value: string): Handler
  /** Reads the whole request, works for `ms`, then resets the connection without a byte. */
  resetAfterRead(ms?: number): Handler
  /** A 200 completion padded to about `bytes` bytes. */
  oversizedBody(bytes: number): Handler
  /** A stream with one data event of about `bytes` bytes. */
  bigEvent(bytes: number): Handler
}
