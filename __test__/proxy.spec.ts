// Proxies, against a real proxy implementation in its own process (the `proxy` package):
// absolute-form forwarding for http targets, CONNECT tunnels for https ones, Basic credentials,
// the environment's rules, and clear failures.
import { TestCA } from './certs'
import { body, callWithEnv as callInChild, client, rejection, server } from './helpers'
import type { MockServer } from './helpers'
import { startProxy } from './proxy-helper'
import type { Proxy } from './proxy-helper'

let ca: TestCA
let tlsPair: { key: string; cert: string }
const proxies: Proxy[] = []

beforeAll(() => {
  ca = new TestCA()
  tlsPair = ca.issue(['localhost', '127.0.0.1'])
})

afterAll(async () => {
  ca.remove()
  await Promise.all(proxies.map((p) => p.close()))
})

async function proxy(credentials?: string) {
  const p = await startProxy(credentials)
  proxies.push(p)
  return p
}

/** The outcome of one call in a child process with `env` (see helpers), its warnings aside. */
const callWithEnv = (env: Record<string, string>, options: Record<string, unknown>) =>
  callInChild(env, options).then(({ warnings: _, ...outcome }) => outcome)

const httpsMock = () => server({ tls: tlsPair })
const connects = (p: Proxy) => p.seen.filter((r) => r.method === 'CONNECT')

describe('the proxy option', () => {
  test('http targets are forwarded in absolute form over one kept-alive connection', async () => {
    const p = await proxy()
    const s = await server()
    const c = client(s, { proxy: p.url })
    for (let i = 0; i < 3; i++) await expect(c.chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    expect(p.seen.map((r) => r.url)).toEqual(Array(3).fill(`${s.url}/chat/completions`))
    expect(s.requests).toHaveLength(3)
    expect(c.stats()).toMatchObject({ connectionsOpened: 1, reused: 2 })
  })

  test('https targets go through one CONNECT tunnel, pooled and reused, streams included', async () => {
    const p = await proxy()
    const s = await httpsMock()
    const c = client(s, { proxy: p.url, connect: { ca: ca.pem } })
    for (let i = 0; i < 3; i++) await c.chat(body())
    const text = (await c.chatStream(body('through the tunnel')).finalCompletion()).choices[0].message.content
    expect(text).toContain('through the tunnel')
    expect(connects(p)).toEqual([{ method: 'CONNECT', url: `127.0.0.1:${s.port}` }])
    expect(c.stats()).toMatchObject({ connectionsOpened: 1, reused: 3 })
  })

  test('credentials in the URL authenticate, for tunnels and forwarding', async () => {
    const p = await proxy('alice:s3cret-proxy-pass')
    const url = `http://alice:s3cret-proxy-pass@127.0.0.1:${p.port}`
    const https = await httpsMock()
    await expect(client(https, { proxy: url, connect: { ca: ca.pem } }).chat(body())).resolves.toBeDefined()
    const http = await server()
    await expect(client(http, { proxy: url }).chat(body())).resolves.toBeDefined()
  })

  test('refused authentication is ERR_PROXY with status 407, and the credentials never show', async () => {
    const p = await proxy('alice:right-password')
    const wrong = `http://alice:wrong-password-123@127.0.0.1:${p.port}`
    const https = await httpsMock()
    for (const c of [client(https, { proxy: wrong, connect: { ca: ca.pem } }), client(await server(), { proxy: wrong })]) {
      const err = await rejection(c.chat(body()))
      expect(err).toMatchObject({ code: 'ERR_PROXY', status: 407 })
      expect(err.message).toMatch(/proxy authentication failed/)
      const shown = JSON.stringify({ ...err, message: err.message, cause: err.cause?.message })
      expect(shown).not.toContain('wrong-password-123')
      expect(shown).not.toContain(Buffer.from('alice:wrong-password-123').toString('base64'))
    }
    const none = await rejection(client(https, { proxy: p.url, connect: { ca: ca.pem } }).chat(body()))
    expect(none).toMatchObject({ code: 'ERR_PROXY', status: 407 })
  })

  test('an https:// proxy: TLS to the proxy itself (trusting connect.ca), then the tunnel or forwarding', async () => {
    const { writeFileSync } = await import('node:fs')
    const { join } = await import('node:path')
    const proxyTls = ca.issue(['127.0.0.1'])
    const keyFile = join(ca.dir, 'proxy.key')
    const certFile = join(ca.dir, 'proxy.pem')
    writeFileSync(keyFile, proxyTls.key)
    writeFileSync(certFile, proxyTls.cert)
    const p = await startProxy('carol:tls-proxy-pass', { keyFile, certFile })
    proxies.push(p)
    const url = `https://carol:tls-proxy-pass@127.0.0.1:${p.port}`
    const https = await httpsMock()
    await expect(client(https, { proxy: url, connect: { ca: ca.pem } }).chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    const plain = await server()
    await expect(client(plain, { proxy: url, connect: { ca: ca.pem } }).chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    expect(p.seen).toEqual([
      { method: 'CONNECT', url: `127.0.0.1:${https.port}` },
      { method: 'POST', url: `${plain.url}/chat/completions` },
    ])
    // Without the CA the proxy's own certificate is refused, and the error names the proxy.
    const err = await rejection(client(plain, { proxy: url }).chat(body()))
    expect(err.code).toBe('ERR_TLS')
    expect(err.message).toContain(`proxy https://127.0.0.1:${p.port}`)
    expect(err.message).not.toContain('tls-proxy-pass')
  })

  test('an unreachable proxy fails with ERR_CONNECT naming the proxy', async () => {
    const s = await server()
    const err = await rejection(client(s, { proxy: 'http://user:pw-unreachable@127.0.0.1:1' }).chat(body()))
    expect(err.code).toBe('ERR_CONNECT')
    expect(err.message).toContain('proxy http://127.0.0.1:1')
    expect(err.message).not.toContain('pw-unreachable')
    expect(s.requests).toHaveLength(0)
  })

  test('a malformed proxy option is a TypeError naming it, without its value', () => {
    for (const bad of ['socks5://u:topsecret@h:1', 'http://h:99999', 42]) {
      let err: any
      try {
        client({ url: 'http://127.0.0.1:1' }, { proxy: bad as any })
      } catch (e) {
        err = e
      }
      expect(err).toBeInstanceOf(TypeError)
      expect(err).toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(/^proxy /) })
      expect(err.message).not.toContain('topsecret')
    }
  })
})

describe('the environment', () => {
  let s: MockServer
  beforeAll(async () => {
    s = await httpsMock()
  })
  const tls = (options = {}) => ({ baseUrl: s.url, retry: false, connect: { ca: ca.pem }, ...options })

  test('HTTPS_PROXY is used for https targets; the lowercase name wins', async () => {
    const p = await proxy()
    await expect(callWithEnv({ https_proxy: p.url, HTTPS_PROXY: 'http://127.0.0.1:1' }, tls())).resolves.toEqual({ ok: true })
    expect(connects(p)).toHaveLength(1)
  })

  test('HTTP_PROXY is used for http targets, not for https ones', async () => {
    const p = await proxy()
    const plain = await server()
    await expect(callWithEnv({ HTTP_PROXY: p.url }, { baseUrl: plain.url, retry: false })).resolves.toEqual({ ok: true })
    await expect(callWithEnv({ HTTP_PROXY: p.url }, tls())).resolves.toEqual({ ok: true })
    expect(p.seen).toEqual([{ method: 'POST', url: `${plain.url}/chat/completions` }])
  })

  test('NO_PROXY exempts the host, and proxy: false ignores the environment', async () => {
    const p = await proxy()
    await expect(callWithEnv({ HTTPS_PROXY: p.url, NO_PROXY: 'example.com, 127.0.0.1' }, tls())).resolves.toEqual({ ok: true })
    await expect(callWithEnv({ HTTPS_PROXY: p.url, no_proxy: `.example.com 127.0.0.1:${s.port}` }, tls())).resolves.toEqual({ ok: true })
    await expect(callWithEnv({ HTTPS_PROXY: p.url }, tls({ proxy: false }))).resolves.toEqual({ ok: true })
    expect(p.seen).toHaveLength(0)
    // A NO_PROXY entry for another port does not exempt this one.
    await expect(callWithEnv({ HTTPS_PROXY: p.url, NO_PROXY: '127.0.0.1:1' }, tls())).resolves.toEqual({ ok: true })
    expect(connects(p)).toHaveLength(1)
  })

  test('a malformed variable fails the call naming the variable, never a direct connection', async () => {
    const before = s.requests.length
    const outcome = await callWithEnv({ HTTPS_PROXY: 'socks5://user:env-secret@proxy:1080' }, tls())
    expect(outcome).toMatchObject({ ok: false, code: 'ERR_PROXY', message: expect.stringContaining('HTTPS_PROXY') })
    expect(outcome.message).not.toContain('env-secret')
    expect(s.requests.length).toBe(before)
  })
})
