// Connection pooling through the public API: reuse, the cap, the FIFO queue, pool timeouts and
// stale keep-alive sockets.
import { answerAfter, body, client, eventually, rejection, sendJson, completion, server, sleep } from './helpers'

describe('connection reuse', () => {
  test('100 sequential chat() calls use exactly one connection', async () => {
    const s = await server()
    const c = client(s)
    for (let i = 0; i < 100; i++) {
      const res = await c.chat(body(`n${i}`))
      expect(res.choices[0].message.content).toBe(`Hello from the mock! You said: n${i}`)
    }
    expect(s.accepted).toBe(1)
    expect(c.stats()).toMatchObject({ connectionsOpened: 1, reused: 99, requests: 100, errors: 0, free: 1, running: 0 })
  })

  test('sends POST {baseUrl path}/chat/completions with auth, JSON and the default headers', async () => {
    const s = await server()
    const c = client(s, { apiKey: 'sk-test-123456', headers: { 'x-team': 'a' } })
    await c.chat(body(), { headers: { 'x-call': 'b' } })
    const [req] = s.requests
    expect(req.method).toBe('POST')
    expect(req.url).toBe('/v1/chat/completions')
    expect(req.headers.authorization).toBe('Bearer sk-test-123456')
    expect(req.headers['content-type']).toBe('application/json')
    expect(req.headers['x-team']).toBe('a')
    expect(req.headers['x-call']).toBe('b')
    expect(req.body).toEqual(body())
  })

  test('unknown request fields pass through and the caller body is not mutated', async () => {
    const s = await server()
    const c = client(s)
    const b = { ...body(), vendor_extension: { a: [1, 2] }, temperature: 0 }
    const before = JSON.stringify(b)
    await c.chat(b)
    expect(JSON.stringify(b)).toBe(before)
    expect(s.requests[0].body).toEqual(b)
  })

  test('a Connection: close answer is honoured: the next call opens a new connection', async () => {
    const s = await server()
    s.setHandler(({ res, body: b }) => sendJson(res, 200, completion(b, 'x'), { connection: 'close' }))
    const c = client(s)
    await c.chat(body())
    await c.chat(body())
    expect(s.accepted).toBe(2)
  })

  test('pipelining: 0 opens a connection per request', async () => {
    const s = await server()
    const c = client(s, { pipelining: 0 })
    await c.chat(body())
    await c.chat(body())
    expect(s.accepted).toBe(2)
    await eventually(() => c.stats().connected === 0)
  })
})

describe('the connection cap', () => {
  test('200 concurrent calls with connections: 10 use at most 10 sockets and all succeed', async () => {
    const s = await server()
    s.setHandler(answerAfter(20, 'ok'))
    const c = client(s, { connections: 10 })
    const calls = Array.from({ length: 200 }, (_, i) => c.chat(body(String(i))))
    await sleep(30)
    const mid = c.stats()
    expect(mid.queued).toBeGreaterThan(0)
    expect(mid.running).toBeLessThanOrEqual(10)
    expect(mid.size).toBe(mid.queued + mid.pending + mid.running)
    const results = await Promise.all(calls)
    expect(results).toHaveLength(200)
    expect(s.accepted).toBeLessThanOrEqual(10)
    expect(c.stats()).toMatchObject({ queued: 0, running: 0, pending: 0, requests: 200, errors: 0 })
  })

  test('ERR_POOL_TIMEOUT while saturated; the timed-out request never reaches the server', async () => {
    const s = await server()
    s.setHandler(answerAfter(400, 'slow'))
    const c = client(s, { connections: 2, poolTimeout: 100 })
    const slow = [c.chat(body('a')), c.chat(body('b'))]
    // Calls run on a multi-threaded runtime: wait until both hold a connection.
    await eventually(() => s.requests.length === 2)
    const err = await rejection(c.chat(body('late')))
    expect(err).toMatchObject({ code: 'ERR_POOL_TIMEOUT' })
    expect(err.message).toContain(s.origin)
    await Promise.all(slow)
    await sleep(100)
    expect(s.requests.map((r) => r.body.messages[0].content).sort()).toEqual(['a', 'b'])
    expect(c.stats()).toMatchObject({ queued: 0, running: 0 })
  })
})

describe('stale keep-alive sockets', () => {
  test('Keep-Alive: timeout=1 with the server closing at ~1.05 s: 200 calls at random gaps, zero failures', async () => {
    const s = await server({ keepAliveHint: 'timeout=1', idleClose: 1050 })
    // A small threshold makes us reuse sockets right up to the edge, where the race lives.
    const c = client(s, { keepAliveTimeoutThreshold: 50 })
    const failures: unknown[] = []
    // 10 independent sequences of 20 calls, each waiting a random 0–1.5 s between calls.
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        for (let i = 0; i < 20; i++) {
          await sleep(Math.random() * 1500)
          await c.chat(body()).catch((e) => failures.push(e))
        }
      }),
    )
    expect(failures).toEqual([])
    expect(c.stats().reused).toBeGreaterThan(0)
  }, 120_000)

  test('server drops idle sockets after 1 s without a hint: a call after 1.5 s idle succeeds', async () => {
    const s = await server({ keepAliveHint: null, idleClose: 1000 })
    const c = client(s)
    await c.chat(body())
    await sleep(1500)
    await expect(c.chat(body('again'))).resolves.toMatchObject({ object: 'chat.completion' })
    expect(s.accepted).toBe(2)
  })

  test('a reused connection reset after the request was written is not resent with retries off', async () => {
    const s = await server()
    s.setHandler(({ res, body: b, index }) => {
      // The second request arrives on the reused socket: the server read it, so it may be at
      // work on it; kill the socket without answering.
      if (index === 1) return res.socket.destroy()
      sendJson(res, 200, completion(b, 'ok'))
    })
    const c = client(s)
    await c.chat(body())
    expect(await rejection(c.chat(body()))).toMatchObject({ code: 'ERR_SOCKET', attempts: 1 })
    expect(s.requests).toHaveLength(2)
    // The pool goes on with a fresh connection.
    await expect(c.chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    expect(s.accepted).toBe(2)
  })

  test('a fresh connection reset before the response is not resent', async () => {
    const s = await server()
    s.setHandler(({ res }) => res.socket.destroy())
    const c = client(s)
    const err = await rejection(c.chat(body()))
    expect(err.code).toBe('ERR_SOCKET')
    expect(s.requests).toHaveLength(1)
  })
})
