// Servers that misbehave on purpose: they echo secrets back, send absurd values, reset at the
// worst moment, send more than asked. Every case must end in a typed error (or a success), never
// a leak, a panic (ERR_INTERNAL), a duplicate request or a hang.
import { inspect } from 'node:util'
import { body, client, rejection, server, sendJson, completion, sleep } from './helpers'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { hostile } = require('../mock/server.js')

const KEY = 'sk-hostile-test-0123456789'

/** Everything an error shows a user or a logger. */
function everything(err: any): string {
  return [err.message, JSON.stringify(err), inspect(err, { depth: 10 }), JSON.stringify(err.error), JSON.stringify(err.headers), String(err.cause?.message)].join('\n')
}

describe('secrets never come back out', () => {
  test('a stream whose first event quotes the Authorization header', async () => {
    const s = await server()
    s.setHandler(hostile.streamErrorEchoingHeaders())
    const c = client(s, { apiKey: KEY })
    const err = await rejection(c.chatStream(body()).finalCompletion())
    expect(err.code).toBe('ERR_STREAM_ERROR')
    expect(s.requests[0].headers.authorization).toBe(`Bearer ${KEY}`)
    expect(everything(err)).not.toContain(KEY)
    expect(err.message).toContain('[REDACTED]')
    expect(err.error.message).toContain('[REDACTED]')
  })

  test('a 200 non-stream body that is an error rejects, redacted', async () => {
    const s = await server()
    s.setHandler(hostile.errorBodyEchoingHeaders(200))
    const err = await rejection(client(s, { apiKey: KEY }).chat(body()))
    expect(err.code).toBe('ERR_PROVIDER_ERROR')
    expect(err.error.message).toContain('[REDACTED]')
    expect(everything(err)).not.toContain(KEY)
  })

  test('api-key and x-api-key values, client-level and per call, are redacted from a 401 that echoes them', async () => {
    const s = await server()
    s.setHandler(hostile.errorBodyEchoingHeaders(401))
    const c = client(s, { headers: { 'api-key': 'azure-client-level-key' } })
    const err = await rejection(c.chat(body(), { headers: { 'x-api-key': 'gateway-per-call-key', cookie: 'session=abcdef123' } }))
    expect(err.status).toBe(401)
    const text = everything(err)
    for (const secret of ['azure-client-level-key', 'gateway-per-call-key', 'session=abcdef123']) expect(text).not.toContain(secret)
    // Echoed into response headers too: secret-valued headers are masked whatever their name.
    expect(err.headers['x-echo-x-api-key']).toBe('[REDACTED]')
    expect(err.headers['x-echo-api-key']).toBe('[REDACTED]')
  })

  test('redactHeaders adds header names whose values are secrets', async () => {
    const s = await server()
    s.setHandler(hostile.errorBodyEchoingHeaders(403))
    const c = client(s, { headers: { 'x-tenant-token': 'tenant-secret-42' }, redactHeaders: ['X-Tenant-Token'] })
    const err = await rejection(c.chat(body()))
    expect(everything(err)).not.toContain('tenant-secret-42')
    // Without the option the same value is an ordinary header and may be shown.
    const plain = await rejection(client(s, { headers: { 'x-tenant-token': 'tenant-secret-42' } }).chat(body()))
    expect(everything(plain)).toContain('tenant-secret-42')
  })

  test('a password in baseUrl is refused without printing it', () => {
    let err: any
    try {
      client({ url: 'http://user:hunter2-password@127.0.0.1:1/v1' })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(TypeError)
    expect(err.code).toBe('ERR_INVALID_ARG')
    expect(err.message).toMatch(/^baseUrl/)
    expect(everything(err)).not.toContain('hunter2')
  })
})

describe('absurd retry hints', () => {
  test.each([
    ['retry-after', '1e20'],
    ['retry-after-ms', '1e30'],
    ['retry-after', 'Fri, 31 Dec 9999 23:59:59 GMT'],
  ])('%s: %s fails at once with the 429 and a clamped retryAfter', async (name, value) => {
    const s = await server()
    s.setHandler(hostile.retryHeader(name, value))
    const started = Date.now()
    const err = await rejection(client(s, { retry: { maxTimeout: 1000 } }).chat(body()))
    expect(err).toMatchObject({ code: 'ERR_HTTP_STATUS', status: 429, attempts: 1 })
    expect(err.retryAfter).toBe(2 ** 31 - 1)
    expect(Date.now() - started).toBeLessThan(5000)
    expect(s.requests).toHaveLength(1)
  })

  test.each([
    ['retry-after', 'NaN'],
    ['retry-after', '-Infinity'],
    ['retry-after', 'Sun, 06 Nov 99999 08:49:37 GMT'],
    ['retry-after-ms', '-1'],
    ['retry-after', 'soon'],
  ])('%s: %s is ignored: the policy backs off by its own formula', async (name, value) => {
    const s = await server()
    let calls = 0
    s.setHandler((ctx: any) => (calls++ === 0 ? hostile.retryHeader(name, value)(ctx) : sendJson(ctx.res, 200, completion(ctx.body, 'ok'))))
    const c = client(s, { retry: { minTimeout: 10, maxTimeout: 100 } })
    await expect(c.chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    expect(c.stats().retries).toBe(1)
  })
})

describe('a reset after the server read the request', () => {
  test('with retry: false the request is sent once and fails with ERR_SOCKET (ECONNRESET)', async () => {
    const s = await server()
    s.setHandler(hostile.resetAfterRead(200))
    const c = client(s, { retry: false })
    await c.chat(body()).catch(() => {}) // a first call leaves a reused connection behind…
    s.setHandler(hostile.resetAfterRead(200))
    const before = s.requests.length
    const err = await rejection(c.chat(body()))
    expect(err.code).toBe('ERR_SOCKET')
    expect(err.attempts).toBe(1)
    expect(err.cause?.code).toBe('ECONNRESET')
    // …and still the server sees the request exactly once: never a second generation.
    expect(s.requests.length - before).toBe(1)
    expect(c.stats().retries).toBe(0)
  })

  test('with retries it is an ordinary retry, counted', async () => {
    const s = await server()
    let calls = 0
    s.setHandler((ctx: any) => (calls++ === 0 ? hostile.resetAfterRead(50)(ctx) : sendJson(ctx.res, 200, completion(ctx.body, 'ok'))))
    const c = client(s, { retry: { minTimeout: 10, maxTimeout: 100 } })
    await expect(c.chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    expect(s.requests).toHaveLength(2)
    expect(c.stats().retries).toBe(1)
  })

  test('a refused connection carries ECONNREFUSED as its cause', async () => {
    const s = await server()
    const url = s.url
    await s.close()
    const err = await rejection(client({ url }).chat(body()))
    expect(err.code).toBe('ERR_CONNECT')
    expect(err.cause).toBeInstanceOf(Error)
    expect(err.cause.code).toBe('ECONNREFUSED')
  })
})

describe('sizes', () => {
  test('a body over maxResponseSize → ERR_RESPONSE_TOO_LARGE; the pool goes on', async () => {
    const s = await server()
    s.setHandler(hostile.oversizedBody(200_000))
    const c = client(s, { maxResponseSize: 100_000 })
    const err = await rejection(c.chat(body()))
    expect(err.code).toBe('ERR_RESPONSE_TOO_LARGE')
    expect(c.stats().connectionsClosed).toBe(1)
    s.setHandler(hostile.oversizedBody(50_000))
    await expect(c.chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    // -1 lifts the limit.
    s.setHandler(hostile.oversizedBody(200_000))
    await expect(client(s, { maxResponseSize: -1 }).chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
  })

  test.each([2_000_000, 5_000_000])('one SSE event of %i bytes (over the 1 MiB flow-control window) never hangs', async (bytes) => {
    const s = await server()
    s.setHandler(hostile.bigEvent(bytes))
    const c = client(s, { tokenTimeout: 0, firstTokenTimeout: 0, timeout: 30_000 })
    for (let round = 0; round < 3; round++) {
      const chunks: any[] = []
      for await (const chunk of c.chatStream(body())) {
        chunks.push(chunk)
        await sleep(5) // a consumer slower than the socket, so the reader really waits for credit
      }
      expect(chunks).toHaveLength(3)
      expect(chunks[1].choices[0].delta.content).toHaveLength(bytes)
    }
  })
})

describe('stream outcomes are decided in Rust, counted and retryable before the first chunk', () => {
  test('ERR_STREAM_TRUNCATED, ERR_STREAM_ERROR and a bad chunk count in stats() and metrics()', async () => {
    const s = await server()
    const c = client(s)
    const cases: Array<[string, string]> = [
      ['ERR_STREAM_TRUNCATED', `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'a' }, finish_reason: null }] })}\n\n`],
      ['ERR_STREAM_ERROR', 'event: error\ndata: {"error":{"message":"overloaded"}}\n\n'],
      ['ERR_INVALID_RESPONSE', 'data: [1, 2]\n\n'],
    ]
    for (const [code, text] of cases) {
      s.setHandler(({ res }: any) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        res.end(text)
      })
      expect((await rejection(c.chatStream(body()).finalCompletion())).code).toBe(code)
    }
    expect(c.stats()).toMatchObject({ requests: 3, errors: 3 })
    const metrics = c.metrics()
    for (const [code] of cases) expect(metrics).toMatch(new RegExp(`llmpool_errors_total\\{[^}]*code="${code}"[^}]*\\} 1`))
  })

  test('an empty 200 stream is retried under the policy, then succeeds', async () => {
    const s = await server()
    let calls = 0
    s.setHandler((ctx: any) => {
      if (calls++ > 0) return require('../mock/server.js').openaiHandler(ctx)
      ctx.res.writeHead(200, { 'content-type': 'text/event-stream' })
      ctx.res.end()
    })
    const c = client(s, { retry: { minTimeout: 10, maxTimeout: 100 } })
    const completionText = (await c.chatStream(body('x')).finalCompletion()).choices[0].message.content
    expect(completionText).toContain('You said: x')
    expect(c.stats().retries).toBe(1)
  })
})

describe('the separator between payloads in one delivery (U+001E) cannot be smuggled in', () => {
  test('escaped in JSON it stays content; raw in a payload the chunk is refused; in an event name it is replaced', async () => {
    const s = await server()
    const c = client(s)
    const content = 'a\u001eb'
    const line = (delta: object) => `data: ${JSON.stringify({ choices: [{ index: 0, delta, finish_reason: null }] })}\n\n`
    // Several chunks in one write, so that they cross into JS as one delivery.
    s.setHandler(({ res }: any) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.end(line({ content }) + line({ content: '{"x":1}' }) + line({ content }) + 'data: [DONE]\n\n')
    })
    const seen: string[] = []
    for await (const chunk of c.chatStream(body())) seen.push(chunk.choices[0].delta.content)
    expect(seen).toEqual([content, '{"x":1}', content])
    expect((await c.chatStream(body()).text().finalCompletion()).choices[0].message.content).toBe(`${content}{"x":1}${content}`)

    // JSON forbids the raw character inside a string: the chunk is refused, never split in two.
    s.setHandler(({ res }: any) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.end(`data: {"choices":[{"index":0,"delta":{"content":"a\u001e{}"}}]}\n\ndata: [DONE]\n\n`)
    })
    expect((await rejection(c.chatStream(body()).finalCompletion())).code).toBe('ERR_INVALID_RESPONSE')

    // An event name may carry anything but a line end: it reaches JS with U+FFFD instead.
    s.setHandler(({ res }: any) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.end('event: odd\u001e{"smuggled":true}\ndata: {"type":"x"}\n\nevent: response.completed\ndata: {"type":"response.completed","response":{}}\n\n')
    })
    const events: any[] = []
    for await (const event of c.stream('/responses', { model: 'm' })) events.push(event)
    expect(events).toEqual([
      { event: 'odd\ufffd{"smuggled":true}', data: { type: 'x' } },
      { event: 'response.completed', data: { type: 'response.completed', response: {} } },
    ])
  })
})

describe('iterator edges', () => {
  test('three concurrent next() calls resolve in order', async () => {
    const s = await server({ chunkDelay: 5 })
    const it = client(s).chatStream(body('one two three four'))[Symbol.asyncIterator]()
    const [a, b, c] = await Promise.all([it.next(), it.next(), it.next()])
    expect(a.value.choices[0].delta.role).toBe('assistant')
    expect(b.value.choices[0].delta.content).toBe('Hello ')
    expect(c.value.choices[0].delta.content).toBe('from ')
    await it.return!()
  })

  test('return() settles a pending next() as done', async () => {
    const s = await server()
    s.setHandler(({ res }: any) => res.writeHead(200, { 'content-type': 'text/event-stream' })) // never sends
    const it = client(s).chatStream(body())[Symbol.asyncIterator]()
    const pending = it.next()
    await sleep(50)
    await it.return!()
    await expect(pending).resolves.toEqual({ value: undefined, done: true })
  })

  test('finalCompletion() keeps reasoning_content and reasoning', async () => {
    const s = await server()
    s.setHandler(({ res, body: b }: any) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      const { chunk } = require('../mock/server.js')
      for (const delta of [{ role: 'assistant', reasoning_content: 'Let me ' }, { reasoning_content: 'think.', reasoning: 'R1' }, { reasoning: 'R2', content: 'Answer' }]) {
        res.write(`data: ${JSON.stringify(chunk(b, delta))}\n\n`)
      }
      res.write(`data: ${JSON.stringify(chunk(b, {}, 'stop'))}\n\n`)
      res.end('data: [DONE]\n\n')
    })
    const message = (await client(s).chatStream(body()).finalCompletion()).choices[0].message as any
    expect(message).toMatchObject({ role: 'assistant', content: 'Answer', reasoning_content: 'Let me think.', reasoning: 'R1R2' })
  })
})

describe('per-call options follow the client rules', () => {
  test('bounds and types, with ERR_INVALID_ARG', async () => {
    const s = await server()
    const c = client(s)
    for (const [options, message] of [
      [{ timeout: 2 ** 40 }, /^timeout must be a non-negative integer/],
      [{ timeout: -1 }, /^timeout must be a non-negative integer/],
      [{ maxRetries: 101 }, /^maxRetries must be an integer from 0 to 100/],
      [{ headers: { 'x-a': 1 } }, /^headers\.x-a must be a string/],
      [{ firstTokenTimeout: 5 }, /^firstTokenTimeout is not a known call option/],
      [{ nope: 1 }, /^nope is not a known call option/],
    ] as const) {
      const err = await rejection(c.chat(body(), options as any))
      expect(err).toBeInstanceOf(TypeError)
      expect(err.code).toBe('ERR_INVALID_ARG')
      expect(err.message).toMatch(message)
    }
    let thrown: any
    try {
      c.chatStream(body(), { tokenTimeout: 1.5 } as any)
    } catch (e) {
      thrown = e
    }
    expect(thrown).toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(/^tokenTimeout/) })
    expect(s.requests).toHaveLength(0)
  })
})
