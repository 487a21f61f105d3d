// An HTTP/2 (TLS, ALPN h2 and http/1.1) server for the tests, answering with the mock's handlers:
// counts sessions and the streams open at once per session, and lets a test misbehave.
import http2 from 'node:http2'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { openaiHandler } = require('../mock/server.js')

export type H2Server = {
  url: string
  sessions: number
  /** Most streams open at once on any one session. */
  peak: number
  /** HTTP versions of the requests, in order. */
  versions: string[]
  handler: (ctx: { req: any; res: any; body: any }) => unknown
  raw: http2.Http2SecureServer
  close(): Promise<void>
}

export async function startH2(tls: { key: string; cert: string }, settings: http2.Settings = {}): Promise<H2Server> {
  const raw = http2.createSecureServer({ ...tls, allowHTTP1: true, settings })
  const state: H2Server = {
    url: '',
    sessions: 0,
    peak: 0,
    versions: [],
    handler: (ctx) => openaiHandler({ ...ctx, server: { options: { chunkDelay: 5 } } }),
    raw,
    close: () =>
      new Promise((resolve) => {
        for (const s of open) s.destroy()
        raw.close(() => resolve())
      }),
  }
  const open = new Set<http2.ServerHttp2Session>()
  raw.on('session', (session) => {
    state.sessions++
    open.add(session)
    session.on('close', () => open.delete(session))
    let streams = 0
    session.on('stream', (stream) => {
      state.peak = Math.max(state.peak, ++streams)
      stream.on('close', () => streams--)
    })
  })
  raw.on('request', async (req: any, res: any) => {
    state.versions.push(req.httpVersion)
    try {
      const chunks: Buffer[] = []
      // A stream the client resets (a refused or gone-away one) ends this read early.
      for await (const c of req) chunks.push(c)
      let body
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
      } catch {
        body = undefined
      }
      await state.handler({ req, res, body })
    } catch {
      res.destroy?.()
    }
  })
  await new Promise<void>((r) => raw.listen(0, '127.0.0.1', () => r()))
  state.url = `https://127.0.0.1:${(raw.address() as any).port}/v1`
  return state
}
