// HTTP/2 against Node's http2 server (nghttp2 inside), made to misbehave: a low stream limit,
// GOAWAY in the middle of running streams, refused streams, a stalled consumer beside fast ones.
import http2 from 'node:http2'
import { TestCA } from './certs'
import { body, client, sleep } from './helpers'
import { startH2 } from './h2-helper'
import type { H2Server } from './h2-helper'

let ca: TestCA
let tls: { key: string; cert: string }
const servers: H2Server[] = []

beforeAll(() => {
  ca = new TestCA()
  tls = ca.issue(['localhost', '127.0.0.1'])
})
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()))
  ca.remove()
})

async function h2(settings: http2.Settings = {}) {
  const s = await startH2(tls, settings)
  servers.push(s)
  return s
}

const h2Client = (s: H2Server, options = {}) => client(s, { allowH2: true, connect: { ca: ca.pem }, ...options })
const text = async (stream: AsyncIterable<any>) => {
  let out = ''
  for await (const chunk of stream) out += chunk.choices[0]?.delta?.content ?? ''
  return out
}

test('allowH2 negotiates h2 by ALPN and multiplexes calls on one connection', async () => {
  const s = await h2()
  const c = h2Client(s)
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => c.chat(body(`call ${i}`))))
  expect(answers.map((a) => a.choices[0].message.content)).toEqual(Array.from({ length: 20 }, (_, i) => `Hello from the mock! You said: call ${i}`))
  expect(s.versions.every((v) => v === '2.0')).toBe(true)
  expect(s.sessions).toBe(1)
  expect(c.stats()).toMatchObject({ connected: 1, multiplexed: 1, connectionsOpened: 1 })
})

test('without allowH2 the same server is spoken to in HTTP/1.1', async () => {
  const s = await h2()
  await client(s, { connect: { ca: ca.pem } }).chat(body())
  expect(s.versions).toEqual(['1.1'])
})

test('SETTINGS_MAX_CONCURRENT_STREAMS 2 with 10 concurrent streams: more connections open, nothing is refused', async () => {
  const s = await h2({ maxConcurrentStreams: 2 })
  const c = h2Client(s)
  const texts = await Promise.all(Array.from({ length: 10 }, (_, i) => text(c.chatStream(body(`stream ${i}`)))))
  expect(texts).toEqual(Array.from({ length: 10 }, (_, i) => `Hello from the mock! You said: stream ${i}`))
  expect(s.peak).toBeLessThanOrEqual(2)
  expect(s.sessions).toBe(5)
  expect(c.stats()).toMatchObject({ errors: 0, retries: 0 })
})

test('GOAWAY in the middle of running streams: they finish, and new calls go to a new connection with no failure', async () => {
  const s = await h2()
  const c = h2Client(s)
  let started = 0
  const base = s.handler
  s.handler = async (ctx) => {
    if (++started === 4) {
      // Four streams are running on the first session: the server will take no more.
      ctx.req.stream.session.goaway(http2.constants.NGHTTP2_NO_ERROR, ctx.req.stream.id)
    }
    return base(ctx)
  }
  const running = Array.from({ length: 4 }, (_, i) => text(c.chatStream(body(`before ${i}`))))
  // Sent while the GOAWAY is on its way or has arrived: never lost, never counted as a retry.
  await sleep(30)
  const after = Array.from({ length: 4 }, (_, i) => c.chat(body(`after ${i}`)))
  expect(await Promise.all(running)).toEqual(Array.from({ length: 4 }, (_, i) => `Hello from the mock! You said: before ${i}`))
  expect((await Promise.all(after)).map((a) => a.choices[0].message.content)).toEqual(Array.from({ length: 4 }, (_, i) => `Hello from the mock! You said: after ${i}`))
  expect(s.sessions).toBe(2)
  expect(c.stats()).toMatchObject({ errors: 0, retries: 0 })
})

test('streams opened past a GOAWAY go again on another connection at once', async () => {
  const s = await h2()
  const c = h2Client(s, { retry: false })
  await c.chat(body('warm'))
  const base = s.handler
  let goneAway = false
  s.handler = (ctx) => {
    if (!goneAway) {
      goneAway = true
      // Processes this stream, and tells the client that nothing after it will be.
      ctx.req.stream.session.goaway(http2.constants.NGHTTP2_NO_ERROR, ctx.req.stream.id)
    }
    return base(ctx)
  }
  const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => c.chat(body(`burst ${i}`))))
  expect(answers).toHaveLength(6)
  expect(c.stats()).toMatchObject({ errors: 0, retries: 0 })
  expect(s.sessions).toBeGreaterThanOrEqual(2)
})

test('a REFUSED_STREAM reset: the call goes again at once, on the same connection (one refusal retires nothing), not counted', async () => {
  const s = await h2()
  const c = h2Client(s, { retry: false })
  let calls = 0
  const base = s.handler
  s.handler = (ctx) => (calls++ === 0 ? ctx.req.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM) : base(ctx))
  await expect(c.chat(body('refused once'))).resolves.toMatchObject({ object: 'chat.completion' })
  expect(calls).toBe(2)
  expect(s.sessions).toBe(1)
  expect(c.stats()).toMatchObject({ retries: 0, errors: 0 })
})

test('five refusals in a row: delivered all the same; three in a row retire the connection', async () => {
  const s = await h2()
  const c = h2Client(s, { retry: false })
  let calls = 0
  const base = s.handler
  s.handler = (ctx) => (calls++ < 5 ? ctx.req.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM) : base(ctx))
  await expect(c.chat(body('refused five times'))).resolves.toMatchObject({ object: 'chat.completion' })
  expect(calls).toBe(6)
  expect(s.sessions).toBe(2)
  expect(c.stats()).toMatchObject({ retries: 0, errors: 0 })
})

test('a server that refuses every stream: the call ends after 10 sends, uncounted, with the refusal', async () => {
  const s = await h2()
  const c = h2Client(s, { retry: false })
  let calls = 0
  s.handler = (ctx) => {
    calls++
    ctx.req.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM)
  }
  const err: any = await c.chat(body('never')).catch((e) => e)
  expect(err.code).toBe('ERR_SOCKET')
  expect(err.message).toMatch(/refused the stream/)
  expect(calls).toBe(10)
  expect(c.stats()).toMatchObject({ retries: 0 })
})

test('SETTINGS_MAX_CONCURRENT_STREAMS 0: the call waits in the pool and fails ERR_POOL_TIMEOUT, no stream opened', async () => {
  const s = await h2({ maxConcurrentStreams: 0 })
  const c = h2Client(s, { poolTimeout: 300 })
  const err: any = await c.chat(body('no room')).catch((e) => e)
  expect(err.code).toBe('ERR_POOL_TIMEOUT')
  expect(s.versions).toHaveLength(0)
  expect(c.stats()).toMatchObject({ streams: 0, running: 0, queued: 0, connectionsOpened: 1 })
})

test('a stalled consumer does not stall 20 fast streams on the same connection; cancelling it resets only its stream', async () => {
  const s = await h2()
  const c = h2Client(s)
  const base = s.handler
  s.handler = async (ctx) => {
    if (ctx.body?.messages?.[0]?.content !== 'slow') return base(ctx)
    ctx.res.writeHead(200, { 'content-type': 'text/event-stream' })
    const piece = `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content: 'x'.repeat(1000) }, finish_reason: null }] })}\n\n`
    for (let i = 0; i < 5000 && !ctx.res.destroyed; i++) {
      if (!ctx.res.write(piece)) await new Promise((r) => ctx.res.once('drain', r))
    }
    ctx.res.end('data: [DONE]\n\n')
  }
  const slow = c.chatStream(body('slow'))[Symbol.asyncIterator]()
  await slow.next() // one chunk, then the consumer stalls
  const fast = await Promise.all(Array.from({ length: 20 }, (_, i) => text(c.chatStream(body(`fast ${i}`)))))
  expect(fast).toHaveLength(20)
  expect(s.sessions).toBe(1)
  await slow.return!()
  await expect(c.chat(body('still fine'))).resolves.toMatchObject({ object: 'chat.completion' })
  expect(s.sessions).toBe(1)
  expect(c.stats()).toMatchObject({ connectionsOpened: 1, errors: 0 })
}, 30_000)

test('through a proxy: ALPN inside the CONNECT tunnel, h2 to the origin', async () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { startProxy } = require('./proxy-helper')
  const proxy = await startProxy()
  try {
    const s = await h2()
    const c = h2Client(s, { proxy: proxy.url })
    await Promise.all(Array.from({ length: 5 }, (_, i) => c.chat(body(`tunnelled ${i}`))))
    expect(s.versions).toEqual(Array(5).fill('2.0'))
    expect(proxy.seen.filter((r: any) => r.method === 'CONNECT')).toHaveLength(1)
    expect(c.stats()).toMatchObject({ multiplexed: 1, connectionsOpened: 1 })
  } finally {
    await proxy.close()
  }
})

test("today's guarantees over h2: a first-token timeout retried, a token timeout, redaction, destroy()", async () => {
  const s = await h2()
  const key = 'sk-h2-secret-0123456789'
  const c = h2Client(s, { apiKey: key, retry: { minTimeout: 10, maxTimeout: 50 }, firstTokenTimeout: 200, tokenTimeout: 200 })
  const base = s.handler
  let calls = 0
  s.handler = async (ctx) => {
    calls++
    const said = ctx.body?.messages?.[0]?.content
    if (said === 'silent first' && calls === 1) {
      ctx.res.writeHead(200, { 'content-type': 'text/event-stream' })
      return // never a token: the first-token timeout fires and the stream is retried
    }
    if (said === 'stall') {
      ctx.res.writeHead(200, { 'content-type': 'text/event-stream' })
      ctx.res.write(`data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content: 'one' }, finish_reason: null }] })}\n\n`)
      return // then nothing: the token timeout fires
    }
    if (said === 'echo') return ctx.res.writeHead(401, { 'content-type': 'application/json' }), ctx.res.end(JSON.stringify({ error: { message: `bad ${ctx.req.headers.authorization}` } }))
    return base(ctx)
  }
  expect(await text(c.chatStream(body('silent first')))).toBe('Hello from the mock! You said: silent first')
  expect(c.stats().retries).toBe(1)
  const stalled = await text(c.chatStream(body('stall'))).catch((e) => e)
  expect(stalled.code).toBe('ERR_TOKEN_TIMEOUT')
  const echoed = await c.chat(body('echo')).catch((e) => e)
  expect(echoed.status).toBe(401)
  expect(JSON.stringify({ m: echoed.message, e: echoed.error })).not.toContain(key)
  // destroy() ends a running stream with ERR_CLOSED.
  s.handler = async (ctx) => {
    ctx.res.writeHead(200, { 'content-type': 'text/event-stream' })
    ctx.res.write(`data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content: 'x' }, finish_reason: null }] })}\n\n`)
  }
  const it = c.chatStream(body('forever'), { tokenTimeout: 0 })[Symbol.asyncIterator]()
  await it.next()
  const pending = it.next()
  await c.destroy()
  expect((await pending.catch((e) => e)).code).toBe('ERR_CLOSED')
  expect(c.metrics()).toMatch(/llmpool_errors_total\{[^}]*code="ERR_TOKEN_TIMEOUT"[^}]*\} 1/)
})
