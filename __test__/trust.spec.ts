// Trust, third pass: what a hostile stream, an echoing server or a redirecting one can make of
// the JS layer. Rust merges every stream (no chunk reaches a JS prototype), redaction covers the
// values the user sees after parsing, and client.fetch keeps the Fetch standard where SDKs rely
// on it.
import { inspect } from 'node:util'
import { body, client, rejection, sendJson, server } from './helpers'

/** A handler that streams `chunks` (objects) as SSE, then [DONE]. */
const streaming = (chunks: object[]) => ({ res }: any) => {
  res.writeHead(200, { 'content-type': 'text/event-stream' })
  for (const c of chunks) res.write(`data: ${JSON.stringify(c)}\n\n`)
  res.end('data: [DONE]\n\n')
}

const chunk = (choices: object[]) => ({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices })

describe('finalCompletion() merges in Rust: a hostile stream reaches no prototype', () => {
  afterEach(() => {
    for (const proto of [Array.prototype, Object.prototype] as any[]) {
      delete proto.finish_reason
      delete proto.id
      delete proto.message
    }
  })

  test.each([
    ['before iterating', false],
    ['after the first chunk was iterated', true],
  ])('indices "__proto__", 4e9 and -1 (%s): no pollution, no hang, a typed result', async (_, iterateFirst) => {
    const s = await server()
    s.setHandler(
      streaming([
        chunk([{ index: 0, delta: { role: 'assistant', content: 'ok' }, finish_reason: null }]),
        chunk([{ index: '__proto__', delta: { content: 'x' }, finish_reason: 'polluted' }]),
        chunk([{ index: 4e9, delta: { content: 'y' }, finish_reason: null }]),
        chunk([{ index: -1, delta: { content: 'z' }, finish_reason: null }]),
        chunk([{ index: 0, delta: { tool_calls: [{ index: '__proto__', id: 'polluted', function: { name: 'f', arguments: '{}' } }] }, finish_reason: null }]),
        chunk([{ index: 0, delta: { tool_calls: [{ index: 4e9, id: 't', function: { name: 'g', arguments: '' } }] }, finish_reason: 'stop' }]),
      ]),
    )
    const stream = client(s).chatStream(body())
    if (iterateFirst) await stream[Symbol.asyncIterator]().next()
    const started = Date.now()
    const completion: any = await stream.finalCompletion()
    expect(Date.now() - started).toBeLessThan(10_000)
    expect(([] as any).finish_reason).toBeUndefined()
    expect(([] as any).id).toBeUndefined()
    expect(({} as any).finish_reason).toBeUndefined()
    expect(completion.object).toBe('chat.completion')
    expect(completion.choices[0].finish_reason).toBe('stop')
    expect(completion.choices.length).toBeLessThanOrEqual(1025)
  })
})

describe('redaction sees what the user sees', () => {
  const KEY = 'sk-live/abcdefghijklmnop'
  test.each([
    ['with / escaped as \\/ (PHP json_encode)', (k: string) => k.replace(/\//g, '\\/')],
    ['with one letter as \\u0073', (k: string) => k.replace('s', '\\u0073')],
    ['URL-encoded', (k: string) => encodeURIComponent(k)],
  ])('a key echoed %s is in no field of the error', async (_, encode) => {
    const s = await server()
    s.setHandler(({ res }: any) => {
      const raw = `{"error":{"message":"Incorrect API key provided: ${encode(KEY)}","key":"${encode(KEY)}"}}`
      res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(raw) })
      res.end(raw)
    })
    const err = await rejection(client(s, { apiKey: KEY }).chat(body()))
    expect(err.code).toBe('ERR_HTTP_STATUS')
    for (const shown of [JSON.stringify(err.error), inspect(err, { depth: 10 }), JSON.stringify(err), err.message, String(err.stack)]) {
      expect(shown).not.toContain('abcdefghijklmnop')
    }
    expect(JSON.stringify(err.error)).toContain('[REDACTED]')
  })

  test('Basic credentials echoed decoded are redacted too', async () => {
    const s = await server()
    s.setHandler(({ res }: any) => sendJson(res, 401, { error: { message: 'user alice:correct-horse-battery rejected' } }))
    const basic = `Basic ${Buffer.from('alice:correct-horse-battery').toString('base64')}`
    const err = await rejection(client(s, { headers: { authorization: basic } }).chat(body()))
    expect(inspect(err, { depth: 10 })).not.toContain('correct-horse-battery')
  })
})

describe('client.fetch keeps the Fetch standard where it matters', () => {
  test.each(['CONNECT', 'TRACE', 'TRACK'])('%s is a TypeError and nothing is sent', async (method) => {
    const s = await server()
    const c = client(s)
    const err = await rejection(c.fetch(`${s.url}/models`, { method }))
    expect(err).toBeInstanceOf(TypeError)
    expect(s.requests).toHaveLength(0)
  })

  test("redirect 'follow' (the default): 307 keeps POST and its body, 303 becomes GET, same origin only", async () => {
    const s = await server()
    s.setHandler(({ req, res }: any) => {
      if (req.url === '/v1/a') return void res.writeHead(307, { location: '/v1/b' }).end()
      if (req.url === '/v1/b') return void res.writeHead(303, { location: `${s.url}/c` }).end()
      if (req.url === '/v1/loop') return void res.writeHead(302, { location: '/v1/loop' }).end()
      if (req.url === '/v1/away') return void res.writeHead(301, { location: 'http://example.invalid/x' }).end()
      sendJson(res, 200, { method: req.method, url: req.url })
    })
    const c = client(s)
    const res = await c.fetch(`${s.url}/a`, { method: 'POST', body: '{"x":1}', headers: { 'content-type': 'application/json' } })
    expect(await res.json()).toEqual({ method: 'GET', url: '/v1/c' })
    expect(s.requests.map((r) => [r.method, r.url, r.raw])).toEqual([
      ['POST', '/v1/a', '{"x":1}'],
      ['POST', '/v1/b', '{"x":1}'],
      ['GET', '/v1/c', ''],
    ])
    const loop = await rejection(c.fetch(`${s.url}/loop`))
    expect(loop).toBeInstanceOf(TypeError)
    expect(s.requests.filter((r) => r.url === '/v1/loop')).toHaveLength(21)
    expect(await rejection(c.fetch(`${s.url}/away`))).toBeInstanceOf(TypeError)
  })

  test("redirect 'error' rejects with a TypeError; 'manual' hands the 3xx over", async () => {
    const s = await server()
    s.setHandler(({ res }: any) => void res.writeHead(307, { location: '/v1/b' }).end())
    const c = client(s)
    expect(await rejection(c.fetch(`${s.url}/a`, { redirect: 'error' }))).toBeInstanceOf(TypeError)
    const manual = await c.fetch(`${s.url}/a`, { redirect: 'manual' })
    expect(manual.status).toBe(307)
    expect(manual.headers.get('location')).toBe('/v1/b')
  })

  test('a non-2xx body arrives byte for byte, with a true Content-Length', async () => {
    const s = await server()
    const bytes = Buffer.from([0xff, 0xfe, 0x00, 0x41, 0xc3, 0x28])
    s.setHandler(({ res }: any) => {
      res.writeHead(500, { 'content-type': 'application/octet-stream', 'content-length': bytes.length })
      res.end(bytes)
    })
    const res = await client(s).fetch(`${s.url}/models`)
    expect(res.status).toBe(500)
    const got = Buffer.from(await res.arrayBuffer())
    expect(got.equals(bytes)).toBe(true)
    expect(res.headers.get('content-length')).toBe(String(bytes.length))
  })
})

describe('every rejection of every method is an LlmpoolError with a code', () => {
  const { LlmpoolError } = require('../index.js')

  test('bad arguments reject (promise methods) or throw (synchronous ones), as TypeErrors that are LlmpoolErrors', async () => {
    const s = await server()
    const c = client(s)
    const rejections = [
      c.chat(123 as never),
      c.chat({ model: 'm', messages: [], stream: true } as never),
      c.chat(body(), { timeout: -1 } as never),
      c.request(5 as never, {}),
      c.embeddings('x' as never),
      c.batch('x' as never),
      c.fetch(`${s.url}/models`, { method: 'TRACE' }),
      c.fetch('http://elsewhere.invalid/x'),
    ]
    for (const p of rejections) {
      expect(p).toBeInstanceOf(Promise)
      const err = await rejection(p)
      expect(err).toBeInstanceOf(TypeError)
      expect(err).toBeInstanceOf(LlmpoolError)
      expect(err.code).toBe('ERR_INVALID_ARG')
    }
    for (const f of [() => c.chatStream(123 as never), () => c.stream(5 as never, {}), () => c.rateLimits('nope')]) {
      let thrown: any
      try {
        f()
      } catch (e) {
        thrown = e
      }
      expect(thrown).toBeInstanceOf(LlmpoolError)
      expect(thrown.code).toBe('ERR_INVALID_ARG')
    }
    expect(s.requests).toHaveLength(0)
  })

  test('failures of calls, streams and fetch bodies are LlmpoolErrors; plain errors are not', async () => {
    const s = await server()
    s.setHandler(({ res }: any) => sendJson(res, 500, { error: { message: 'boom' } }))
    const c = client(s)
    const errors = [await rejection(c.chat(body())), await rejection(c.chatStream(body()).finalCompletion())]
    for (const err of errors) {
      expect(err).toBeInstanceOf(LlmpoolError)
      expect(typeof err.code).toBe('string')
    }
    expect(new Error('x')).not.toBeInstanceOf(LlmpoolError)
    expect(new TypeError('x')).not.toBeInstanceOf(LlmpoolError)
    expect(Object.assign(new TypeError('x'), { code: 'ERR_INVALID_ARG' })).not.toBeInstanceOf(LlmpoolError)
  })
})
