// Honest failures: HTTP errors carry status and the provider's words, bad input is a TypeError
// naming the option, and the API key never leaks.
import { inspect, types } from 'node:util'
import { Client } from '../index.js'
import { body, client, rejection, sendJson, server } from './helpers'

const KEY = 'sk-live-SECRET-0123456789abcdef'

describe('HTTP errors', () => {
  test.each([
    [401, 'Incorrect API key provided', 'invalid_request_error'],
    [429, 'Rate limit reached for requests', 'requests'],
    [500, 'The server had an error while processing your request', 'server_error'],
  ])('%i with OpenAI-style JSON → ERR_HTTP_STATUS with status and the provider message', async (status, message, type) => {
    const s = await server()
    s.setHandler(({ res }) => sendJson(res, status, { error: { message, type, code: null } }, { 'x-request-id': 'req_1' }))
    const c = client(s)
    const err = await rejection(c.chat(body()))
    expect(types.isNativeError(err)).toBe(true)
    expect(err).toBeInstanceOf(Error)
    expect(err).toMatchObject({ name: 'LlmpoolError', code: 'ERR_HTTP_STATUS', status, error: { message, type } })
    expect(err.message).toContain(message)
    expect(err.message).toContain(s.origin)
    expect(err.headers['x-request-id']).toBe('req_1')
    // The error body was read to its end, so the connection is reused.
    await rejection(c.chat(body()))
    expect(s.accepted).toBe(1)
  })

  test('a non-JSON error body is kept as text', async () => {
    const s = await server()
    s.setHandler(({ res }) => {
      res.writeHead(502, { 'content-type': 'text/html' })
      res.end('<html>bad gateway</html>')
    })
    const err = await rejection(client(s).chat(body()))
    expect(err).toMatchObject({ code: 'ERR_HTTP_STATUS', status: 502, error: '<html>bad gateway</html>' })
  })

  test('a 200 body that is not JSON → ERR_INVALID_RESPONSE', async () => {
    const s = await server()
    s.setHandler(({ res }) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"id": "cut')
    })
    expect(await rejection(client(s).chat(body()))).toMatchObject({ code: 'ERR_INVALID_RESPONSE' })
  })

  test('a 200 body that is JSON but not an object → ERR_INVALID_RESPONSE', async () => {
    const s = await server()
    s.setHandler(({ res }) => sendJson(res, 200, [1, 2]))
    expect(await rejection(client(s).chat(body()))).toMatchObject({ code: 'ERR_INVALID_RESPONSE' })
  })
})

describe('the API key never leaks', () => {
  test('not in an error, even when the server echoes it back', async () => {
    const s = await server()
    s.setHandler(({ req, res }) =>
      sendJson(res, 401, { error: { message: `Incorrect API key provided: ${req.headers.authorization}` } }, { 'x-echo': req.headers.authorization }),
    )
    const c = client(s, { apiKey: KEY })
    const err = await rejection(c.chat(body()))
    expect(err.code).toBe('ERR_HTTP_STATUS')
    for (const text of [err.message, err.stack, inspect(err, { depth: 10 }), JSON.stringify(err), JSON.stringify(err.error), JSON.stringify(err.headers)]) {
      expect(text).not.toContain(KEY)
    }
    expect(err.message).toContain('[REDACTED]')
  })

  test('not in stats(), util.inspect(client) or JSON.stringify(client)', async () => {
    const s = await server()
    const c = client(s, { apiKey: KEY })
    await c.chat(body())
    for (const text of [JSON.stringify(c.stats()), inspect(c, { depth: 10, showHidden: true }), JSON.stringify(c)]) {
      expect(text).not.toContain(KEY)
    }
  })

  test('not in option errors', () => {
    expect(() => new Client({ baseUrl: 'http://127.0.0.1:1', apiKey: `${KEY}\n` })).toThrow(TypeError)
    try {
      new Client({ baseUrl: 'http://127.0.0.1:1', apiKey: `${KEY}\n` })
    } catch (e) {
      expect(String((e as Error).message)).not.toContain(KEY)
    }
  })
})

describe('invalid options throw a TypeError naming the option', () => {
  const base = { baseUrl: 'http://127.0.0.1:1/v1' }
  test.each<[string, unknown, RegExp]>([
    ['missing baseUrl', {}, /^baseUrl is required/],
    ['baseUrl not a URL', { baseUrl: 'not a url' }, /^baseUrl must be an absolute http/],
    ['baseUrl ftp', { baseUrl: 'ftp://h/v1' }, /^baseUrl must be an absolute http/],
    ['connections 0', { ...base, connections: 0 }, /^connections must be a positive integer or null/],
    ['connections NaN', { ...base, connections: NaN }, /^connections must be a positive integer or null/],
    ['connections fraction', { ...base, connections: 2.5 }, /^connections must be a positive integer or null/],
    ['connections string', { ...base, connections: '10' }, /^connections must be a positive integer or null/],
    ['pipelining 2', { ...base, pipelining: 2 }, /^pipelining must be 0 or 1/],
    ['negative headersTimeout', { ...base, headersTimeout: -1 }, /^headersTimeout must be a non-negative integer/],
    ['Infinity timeout', { ...base, timeout: Infinity }, /^timeout must be a non-negative integer/],
    ['keepAliveTimeout 0', { ...base, keepAliveTimeout: 0 }, /^keepAliveTimeout must be a positive integer/],
    ['autoSelectFamily string', { ...base, autoSelectFamily: 'yes' }, /^autoSelectFamily must be a boolean/],
    ['apiKey number', { ...base, apiKey: 123 }, /^apiKey must be a string/],
    ['headers array', { ...base, headers: ['x'] }, /^headers must be an object/],
    ['header value number', { ...base, headers: { 'x-a': 1 } }, /^headers\.x-a must be a string/],
    ['unknown option', { ...base, conections: 10 }, /^conections is not a known option/],
    ['connect.ca not PEM', { ...base, connect: { ca: 'hello' } }, /^connect\.ca must be a PEM string/],
    ['connect.keepAlive string', { ...base, connect: { keepAlive: 'on' } }, /^connect\.keepAlive must be a boolean/],
    ['retry number', { ...base, retry: 3 }, /^retry must be an object or false/],
    ['retry.maxRetries negative', { ...base, retry: { maxRetries: -1 } }, /^retry\.maxRetries must be/],
    ['function value', { ...base, poolTimeout: () => 1 }, /^poolTimeout must be a non-negative integer/],
  ])('%s', (_name, options, message) => {
    expect(() => new Client(options as never)).toThrow(TypeError)
    expect(() => new Client(options as never)).toThrow(message)
  })

  test('options that are not an object', () => {
    expect(() => new Client(undefined as never)).toThrow(new TypeError('options must be an object'))
    expect(() => new Client('http://x' as never)).toThrow(TypeError)
  })
})

describe('invalid call input is a TypeError and sends nothing', () => {
  test.each<[string, unknown, unknown, RegExp]>([
    ['body array', [], undefined, /body must be a plain object/],
    ['body string', 'hi', undefined, /body must be a plain object/],
    ['body class instance', new Map(), undefined, /body must be a plain object/],
    ['body with BigInt', { model: 'm', messages: [], n: 1n }, undefined, /body must be JSON-serialisable/],
    ['body with stream: true', { model: 'm', messages: [], stream: true }, undefined, /use chatStream/],
    ['bad signal', { model: 'm', messages: [] }, { signal: {} }, /^signal must be an AbortSignal/],
    ['bad timeout', { model: 'm', messages: [] }, { timeout: -5 }, /^timeout must be a non-negative integer/],
    ['bad header name', { model: 'm', messages: [] }, { headers: { 'a b': 'x' } }, /^headers has an invalid header name/],
    ['unknown call option', { model: 'm', messages: [] }, { retries: 1 }, /^retries is not a known call option/],
  ])('%s', async (_name, b, options, message) => {
    const s = await server()
    const c = client(s)
    const err = await rejection(c.chat(b as never, options as never))
    expect(err).toBeInstanceOf(TypeError)
    expect(err.message).toMatch(message)
    expect(s.requests).toHaveLength(0)
  })

  test('a body with a cycle', async () => {
    const s = await server()
    const b: Record<string, unknown> = { model: 'm', messages: [] }
    b.self = b
    expect(await rejection(client(s).chat(b as never))).toBeInstanceOf(TypeError)
  })
})
