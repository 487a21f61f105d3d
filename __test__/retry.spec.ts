// Retries with backoff and Retry-After, and the circuit breaker, through the public API.
// Waits are asserted from below only ("never sooner than asked"); the upper bounds of the
// backoff formula are unit-tested in src/retry.rs, where time is not noisy.
import { body, client, completion, eventually, rejection, sendJson, server, sleep } from './helpers'
import type { MockServer } from './helpers'

/** Answers with the given statuses in turn (then 200), recording when each request arrived. */
function script(s: MockServer, answers: Array<{ status: number; headers?: Record<string, string> }>) {
  const arrivals: number[] = []
  s.setHandler(({ res, body: b, index }) => {
    arrivals.push(Date.now())
    const answer = answers[index]
    if (!answer) return sendJson(res, 200, completion(b, 'finally'))
    sendJson(res, answer.status, { error: { message: `failure ${index + 1}`, type: 'server_error' } }, answer.headers ?? {})
  })
  return arrivals
}

const gaps = (arrivals: number[]) => arrivals.slice(1).map((t, i) => t - arrivals[i])
const fast = { minTimeout: 20, maxTimeout: 1000, timeoutFactor: 2 }

describe('Retry-After', () => {
  test('in seconds', async () => {
    const s = await server()
    const arrivals = script(s, [{ status: 429, headers: { 'retry-after': '1' } }])
    const c = client(s, { retry: fast })
    await expect(c.chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    expect(arrivals).toHaveLength(2)
    expect(gaps(arrivals)[0]).toBeGreaterThanOrEqual(990)
    expect(c.stats().retries).toBe(1)
  })

  test('as an HTTP date', async () => {
    const s = await server()
    const date = new Date(Date.now() + 2000).toUTCString()
    const arrivals = script(s, [{ status: 503, headers: { 'retry-after': date } }])
    await client(s, { retry: { ...fast, maxTimeout: 5000 } }).chat(body())
    // The date has whole seconds: the wait is between 1 and 2 s.
    expect(gaps(arrivals)[0]).toBeGreaterThanOrEqual(990)
  })

  test('retry-after-ms', async () => {
    const s = await server()
    const arrivals = script(s, [{ status: 429, headers: { 'retry-after-ms': '300', 'retry-after': '9' } }])
    await client(s, { retry: fast }).chat(body())
    expect(gaps(arrivals)[0]).toBeGreaterThanOrEqual(295)
  })

  test('longer than maxTimeout: fail at once with the 429 and its retryAfter', async () => {
    const s = await server()
    const arrivals = script(s, [{ status: 429, headers: { 'retry-after': '60' } }])
    const err = await rejection(client(s, { retry: { maxTimeout: 30_000 } }).chat(body()))
    expect(err).toMatchObject({ code: 'ERR_HTTP_STATUS', status: 429, retryAfter: 60_000, attempts: 1 })
    expect(arrivals).toHaveLength(1)
  })

  test('retryAfter: false ignores the hint and backs off by the formula', async () => {
    const s = await server()
    const arrivals = script(s, [{ status: 429, headers: { 'retry-after': '60' } }])
    await client(s, { retry: { ...fast, retryAfter: false } }).chat(body())
    expect(arrivals).toHaveLength(2)
  })
})

describe('backoff and which failures are retried', () => {
  test('delays grow by the factor up to maxTimeout', async () => {
    const s = await server()
    const arrivals = script(s, [{ status: 500 }, { status: 502 }, { status: 503 }, { status: 504 }])
    const c = client(s, { retry: { maxRetries: 4, minTimeout: 100, timeoutFactor: 2, maxTimeout: 250 } })
    await c.chat(body())
    const [g1, g2, g3, g4] = gaps(arrivals)
    expect(g1).toBeGreaterThanOrEqual(95)
    expect(g2).toBeGreaterThanOrEqual(195)
    expect(g3).toBeGreaterThanOrEqual(245)
    expect(g4).toBeGreaterThanOrEqual(245)
    expect(c.stats().retries).toBe(4)
  })

  test('gives up after maxRetries with the last error and the number of attempts', async () => {
    const s = await server()
    const arrivals = script(s, Array(10).fill({ status: 503 }))
    const err = await rejection(client(s, { retry: { ...fast, maxRetries: 2 } }).chat(body()))
    expect(err).toMatchObject({ code: 'ERR_HTTP_STATUS', status: 503, attempts: 3, error: { message: 'failure 3' } })
    expect(arrivals).toHaveLength(3)
  })

  test.each([400, 401, 403, 404, 422])('%i is never retried', async (status) => {
    const s = await server()
    const arrivals = script(s, [{ status }, { status }])
    const err = await rejection(client(s, { retry: { ...fast, statusCodes: [status, 429] } }).chat(body()))
    expect(err).toMatchObject({ status, attempts: 1 })
    expect(arrivals).toHaveLength(1)
  })

  test('x-should-retry: false stops a retryable status; true retries a status not in the list', async () => {
    const s = await server()
    const arrivals = script(s, [{ status: 503, headers: { 'x-should-retry': 'false' } }])
    expect(await rejection(client(s, { retry: fast }).chat(body()))).toMatchObject({ status: 503, attempts: 1 })
    expect(arrivals).toHaveLength(1)
    const s2 = await server()
    const arrivals2 = script(s2, [{ status: 418, headers: { 'x-should-retry': 'true' } }])
    await expect(client(s2, { retry: fast }).chat(body())).resolves.toBeDefined()
    expect(arrivals2).toHaveLength(2)
  })

  test('maxRetries: 0, retry: false and a per-call maxRetries: 0 make one attempt', async () => {
    for (const [options, call] of [[{ retry: { maxRetries: 0 } }, undefined], [{ retry: false }, undefined], [{ retry: fast }, { maxRetries: 0 }]] as const) {
      const s = await server()
      const arrivals = script(s, [{ status: 503 }])
      expect(await rejection(client(s, options as never).chat(body(), call as never))).toMatchObject({ status: 503, attempts: 1 })
      expect(arrivals).toHaveLength(1)
    }
  })

  test('a per-call maxRetries raises the client limit', async () => {
    const s = await server()
    const arrivals = script(s, [{ status: 503 }, { status: 503 }])
    await expect(client(s, { retry: { ...fast, maxRetries: 1 } }).chat(body(), { maxRetries: 2 })).resolves.toBeDefined()
    expect(arrivals).toHaveLength(3)
  })

  test('statusCodes overrides the retried statuses', async () => {
    const s = await server()
    const arrivals = script(s, [{ status: 418 }])
    await expect(client(s, { retry: { ...fast, statusCodes: [418] } }).chat(body())).resolves.toBeDefined()
    expect(arrivals).toHaveLength(2)
    const s2 = await server()
    const arrivals2 = script(s2, [{ status: 500 }])
    expect(await rejection(client(s2, { retry: { ...fast, statusCodes: [418] } }).chat(body()))).toMatchObject({ status: 500 })
    expect(arrivals2).toHaveLength(1)
  })

  test('a refused connection is retried (errorCodes) and reports its attempts', async () => {
    const s = await server()
    const url = s.url
    await s.close()
    const c = client({ url }, { retry: { ...fast, maxRetries: 2 } })
    expect(await rejection(c.chat(body()))).toMatchObject({ code: 'ERR_CONNECT', attempts: 3 })
    expect(c.stats().retries).toBe(2)
  })

  test('POST chat calls are retried after a reset before the answer', async () => {
    const s = await server()
    s.setHandler(({ res, body: b, index }) => (index === 0 ? res.socket.destroy() : sendJson(res, 200, completion(b, 'ok'))))
    await expect(client(s, { retry: fast }).chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    expect(s.requests).toHaveLength(2)
  })
})

describe('streams', () => {
  const sse = (res: any, lines: string[]) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    for (const l of lines) res.write(l)
  }
  const chunkLine = (content: string) =>
    `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`

  test('retried before the first chunk (a 503)', async () => {
    const s = await server()
    s.setHandler(({ res, index }) => {
      if (index === 0) return sendJson(res, 503, { error: { message: 'busy' } })
      sse(res, [chunkLine('ok'), 'data: [DONE]\n\n'])
      res.end()
    })
    let text = ''
    for await (const c of client(s, { retry: fast }).chatStream(body())) text += c.choices[0].delta.content
    expect(text).toBe('ok')
    expect(s.requests).toHaveLength(2)
  })

  test('retried after a first-token timeout', async () => {
    const s = await server()
    s.setHandler(({ res, index }) => {
      if (index === 0) return sse(res, [': thinking…\n\n'])
      sse(res, [chunkLine('ok'), 'data: [DONE]\n\n'])
      res.end()
    })
    let text = ''
    for await (const c of client(s, { retry: fast, firstTokenTimeout: 150 }).chatStream(body())) text += c.choices[0].delta.content
    expect(text).toBe('ok')
    expect(s.requests).toHaveLength(2)
  })

  test('never retried after the first chunk', async () => {
    const s = await server()
    s.setHandler(async ({ res }) => {
      sse(res, [chunkLine('partial')])
      await sleep(30)
      res.socket.destroy()
    })
    const got: string[] = []
    const err = await rejection(
      (async () => {
        for await (const c of client(s, { retry: fast }).chatStream(body())) got.push(c.choices[0].delta.content)
      })(),
    )
    expect(got).toEqual(['partial'])
    expect(err).toMatchObject({ code: 'ERR_SOCKET', attempts: 1 })
    await sleep(100)
    expect(s.requests).toHaveLength(1)
  })
})

describe('a backoff sleep ends at once on', () => {
  test('abort', async () => {
    const s = await server()
    script(s, [{ status: 503 }])
    const c = client(s, { retry: { minTimeout: 20_000, maxTimeout: 30_000 } })
    const ac = new AbortController()
    const p = c.chat(body(), { signal: ac.signal })
    await eventually(() => s.requests.length === 1)
    ac.abort()
    // Far less than the 20 s backoff.
    const outcome = await Promise.race([rejection(p), sleep(5000).then(() => 'still sleeping')])
    expect(outcome).toMatchObject({ code: 'ERR_ABORTED' })
    expect(c.stats()).toMatchObject({ running: 0, queued: 0 })
  })

  test('destroy()', async () => {
    const s = await server()
    script(s, [{ status: 503 }])
    const c = client(s, { retry: { minTimeout: 20_000, maxTimeout: 30_000 } })
    const p = c.chat(body())
    await eventually(() => s.requests.length === 1)
    await c.destroy()
    const outcome = await Promise.race([rejection(p), sleep(5000).then(() => 'still sleeping')])
    expect(outcome).toMatchObject({ code: 'ERR_CLOSED' })
  })
})

describe('circuit breaker', () => {
  test('opens after consecutive failures, fails fast, half-opens, and a good probe closes it', async () => {
    const s = await server()
    let healthy = false
    s.setHandler(({ res, body: b }) => (healthy ? sendJson(res, 200, completion(b, 'up')) : sendJson(res, 503, { error: { message: 'down' } })))
    const c = client(s, { retry: false, circuitBreaker: { failureThreshold: 3, resetTimeout: 300 } })
    expect(c.stats().circuit).toBe('closed')
    for (let i = 0; i < 3; i++) expect(await rejection(c.chat(body()))).toMatchObject({ status: 503 })
    expect(c.stats().circuit).toBe('open')
    const fastFail = await rejection(c.chat(body()))
    expect(fastFail.code).toBe('ERR_CIRCUIT_OPEN')
    expect(fastFail.message).toContain(s.origin)
    expect(s.requests).toHaveLength(3)
    await sleep(350)
    expect(c.stats().circuit).toBe('half-open')
    healthy = true
    await expect(c.chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    expect(c.stats().circuit).toBe('closed')
    await expect(c.chat(body())).resolves.toBeDefined()
  })

  test('a failing probe reopens the circuit', async () => {
    const s = await server()
    s.setHandler(({ res }) => sendJson(res, 503, { error: { message: 'down' } }))
    const c = client(s, { retry: false, circuitBreaker: { failureThreshold: 1, resetTimeout: 200 } })
    await rejection(c.chat(body()))
    expect(c.stats().circuit).toBe('open')
    await sleep(250)
    expect(await rejection(c.chat(body()))).toMatchObject({ status: 503 })
    expect(c.stats().circuit).toBe('open')
    expect(await rejection(c.chat(body()))).toMatchObject({ code: 'ERR_CIRCUIT_OPEN' })
    expect(s.requests).toHaveLength(2)
  })

  test('400s prove the server is up and do not open it', async () => {
    const s = await server()
    s.setHandler(({ res }) => sendJson(res, 400, { error: { message: 'bad' } }))
    const c = client(s, { retry: false, circuitBreaker: { failureThreshold: 1, resetTimeout: 10_000 } })
    for (let i = 0; i < 3; i++) expect(await rejection(c.chat(body()))).toMatchObject({ status: 400 })
    expect(c.stats().circuit).toBe('closed')
  })

  test('without circuitBreaker there is no circuit in stats()', async () => {
    const s = await server()
    expect(client(s).stats().circuit).toBeUndefined()
  })
})
