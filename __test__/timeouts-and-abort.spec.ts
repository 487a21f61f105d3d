// Every timeout fires with its own code, and an AbortSignal ends a call at every stage; either
// way the pool is left clean and the next call works.
import net from 'node:net'
import { answerAfter, body, client, eventually, rejection, server, sleep } from './helpers'

/** A TCP server that accepts and never says a word (a TLS handshake to it hangs). */
async function silentTcpServer(): Promise<{ port: number; close: () => void }> {
  const sockets = new Set<net.Socket>()
  const srv = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy()
      srv.close()
    },
  }
}

const stall = () => new Promise(() => {})

function expectIdlePool(stats: { running: number; pending: number; queued: number }) {
  expect(stats).toMatchObject({ running: 0, pending: 0, queued: 0 })
}

describe('timeouts', () => {
  test('headersTimeout → ERR_HEADERS_TIMEOUT', async () => {
    const s = await server()
    s.setHandler(stall)
    const c = client(s, { headersTimeout: 150 })
    const err = await rejection(c.chat(body()))
    expect(err).toMatchObject({ code: 'ERR_HEADERS_TIMEOUT' })
    expect(err.message).toContain(s.origin)
    expectIdlePool(c.stats())
  })

  test('bodyTimeout → ERR_BODY_TIMEOUT when the body stalls after the headers', async () => {
    const s = await server()
    s.setHandler(({ res }) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{"id":')
    })
    const c = client(s, { bodyTimeout: 150 })
    expect(await rejection(c.chat(body()))).toMatchObject({ code: 'ERR_BODY_TIMEOUT' })
    expectIdlePool(c.stats())
  })

  test('timeout → ERR_TIMEOUT when a trickling body never ends (bodyTimeout never fires)', async () => {
    const s = await server()
    s.setHandler(({ res }) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      const t = setInterval(() => res.write(' '), 30)
      res.on('close', () => clearInterval(t))
    })
    const c = client(s, { timeout: 300, bodyTimeout: 1000 })
    expect(await rejection(c.chat(body()))).toMatchObject({ code: 'ERR_TIMEOUT' })
    expectIdlePool(c.stats())
  })

  test('a per-call timeout overrides the client timeout', async () => {
    const s = await server()
    s.setHandler(answerAfter(300, 'late'))
    const c = client(s, { timeout: 100 })
    expect(await rejection(c.chat(body()))).toMatchObject({ code: 'ERR_TIMEOUT' })
    await expect(c.chat(body(), { timeout: 2000 })).resolves.toMatchObject({ object: 'chat.completion' })
  })

  test('connectTimeout → ERR_CONNECT_TIMEOUT when the TLS handshake hangs', async () => {
    const silent = await silentTcpServer()
    try {
      const c = client({ url: `https://127.0.0.1:${silent.port}/v1` }, { connectTimeout: 150 })
      expect(await rejection(c.chat(body()))).toMatchObject({ code: 'ERR_CONNECT_TIMEOUT' })
      expectIdlePool(c.stats())
    } finally {
      silent.close()
    }
  })

  test('a refused connection → ERR_CONNECT', async () => {
    const s = await server()
    const url = s.url
    await s.close()
    const c = client({ url })
    const err = await rejection(c.chat(body()))
    expect(err.code).toBe('ERR_CONNECT')
    expect(err.message).toMatch(/could not connect to http:\/\/127\.0\.0\.1:\d+/)
  })
})

describe('AbortSignal', () => {
  test('already aborted: rejects at once and sends nothing', async () => {
    const s = await server()
    const c = client(s)
    const err = await rejection(c.chat(body(), { signal: AbortSignal.abort() }))
    expect(err.code).toBe('ERR_ABORTED')
    expect(s.requests).toHaveLength(0)
  })

  test('while queued for a connection', async () => {
    const s = await server()
    s.setHandler(answerAfter(300, 'x'))
    const c = client(s, { connections: 1 })
    const first = c.chat(body('first'))
    // Calls run on a multi-threaded runtime: wait until the first holds the connection.
    await eventually(() => s.requests.length === 1)
    const ac = new AbortController()
    const queued = c.chat(body('queued'), { signal: ac.signal })
    await eventually(() => c.stats().queued === 1)
    ac.abort()
    expect(await rejection(queued)).toMatchObject({ code: 'ERR_ABORTED' })
    expect(c.stats().queued).toBe(0)
    await first
    await sleep(50)
    expect(s.requests.map((r) => r.body.messages[0].content)).toEqual(['first'])
    expectIdlePool(c.stats())
  })

  test('while connecting', async () => {
    const silent = await silentTcpServer()
    try {
      const c = client({ url: `https://127.0.0.1:${silent.port}/v1` })
      const ac = new AbortController()
      const p = c.chat(body(), { signal: ac.signal })
      await eventually(() => c.stats().pending === 1)
      ac.abort()
      expect(await rejection(p)).toMatchObject({ code: 'ERR_ABORTED' })
      expectIdlePool(c.stats())
    } finally {
      silent.close()
    }
  })

  test('while waiting for headers: the connection is closed, not reused', async () => {
    const s = await server()
    s.setHandler(stall)
    const c = client(s)
    const ac = new AbortController()
    const p = c.chat(body(), { signal: ac.signal })
    await eventually(() => s.requests.length === 1)
    ac.abort()
    expect(await rejection(p)).toMatchObject({ code: 'ERR_ABORTED' })
    expectIdlePool(c.stats())
    await eventually(() => s.sockets.size === 0)
    expect(c.stats()).toMatchObject({ connected: 0, free: 0 })
  })

  test('while reading the body', async () => {
    const s = await server()
    s.setHandler(({ res }) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{"id":')
    })
    const c = client(s)
    const ac = new AbortController()
    const p = c.chat(body(), { signal: ac.signal })
    await eventually(() => s.requests.length === 1)
    await sleep(50)
    ac.abort()
    expect(await rejection(p)).toMatchObject({ code: 'ERR_ABORTED' })
    expectIdlePool(c.stats())
    await eventually(() => s.sockets.size === 0)
  })

  test('after the call settled, aborting does nothing', async () => {
    const s = await server()
    const c = client(s)
    const ac = new AbortController()
    await c.chat(body(), { signal: ac.signal })
    ac.abort()
    await expect(c.chat(body())).resolves.toBeDefined()
    expect(c.stats().errors).toBe(0)
  })
})
