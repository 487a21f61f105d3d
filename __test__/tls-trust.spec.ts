// The trust stores people rely on (NODE_EXTRA_CA_CERTS, the OS store), client certificates for
// mTLS gateways, and an SNI name other than the host, against local TLS servers whose
// certificates are made in the test.
import https from 'node:https'
import { TestCA } from './certs'
import { body, callWithEnv, client, completion, rejection, sendJson, server } from './helpers'

let ca: TestCA
let localhost: { key: string; cert: string }

beforeAll(() => {
  ca = new TestCA()
  localhost = ca.issue(['localhost', '127.0.0.1'])
})
afterAll(() => ca.remove())

describe('trust', () => {
  test('NODE_EXTRA_CA_CERTS adds its CA file to the roots, as Node does', async () => {
    const s = await server({ tls: localhost })
    const options = { baseUrl: s.url, retry: false }
    await expect(callWithEnv({ NODE_EXTRA_CA_CERTS: ca.path }, options)).resolves.toMatchObject({ ok: true, warnings: [] })
    await expect(callWithEnv({ NODE_EXTRA_CA_CERTS: '' }, options)).resolves.toMatchObject({ ok: false, code: 'ERR_TLS' })
  })

  test('an unreadable NODE_EXTRA_CA_CERTS file is a process warning, and the call is not trusted', async () => {
    const s = await server({ tls: localhost })
    const outcome = await callWithEnv({ NODE_EXTRA_CA_CERTS: '/nonexistent/llmpool-ca.pem' }, { baseUrl: s.url, retry: false })
    expect(outcome).toMatchObject({ ok: false, code: 'ERR_TLS' })
    expect(outcome.warnings).toEqual([expect.stringMatching(/^LlmpoolWarning: Ignoring extra certs from NODE_EXTRA_CA_CERTS/)])
  })

  test('connect.useSystemCA trusts the system store (here SSL_CERT_FILE); without it, not', async () => {
    const s = await server({ tls: localhost })
    const env = { SSL_CERT_FILE: ca.path, NODE_EXTRA_CA_CERTS: '' }
    await expect(callWithEnv(env, { baseUrl: s.url, retry: false, connect: { useSystemCA: true } })).resolves.toMatchObject({ ok: true })
    await expect(callWithEnv(env, { baseUrl: s.url, retry: false })).resolves.toMatchObject({ ok: false, code: 'ERR_TLS' })
  })
})

describe('client certificates', () => {
  let mtls: https.Server
  let url: string
  const seen: Array<string | undefined> = []

  beforeAll(async () => {
    mtls = https.createServer({ ...localhost, ca: ca.pem, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      seen.push((req.socket as any).getPeerCertificate()?.subject?.CN)
      req.resume()
      req.on('end', () => sendJson(res, 200, completion({}, 'hello, known client')))
    })
    await new Promise<void>((r) => mtls.listen(0, '127.0.0.1', () => r()))
    url = `https://127.0.0.1:${(mtls.address() as any).port}/v1`
  })
  afterAll(() => new Promise<void>((r) => mtls.close(() => r())))

  test('connect.cert and connect.key are presented to a server that demands them', async () => {
    const me = ca.issue(['llmpool-client'], 'clientAuth')
    const c = client({ url }, { connect: { ca: ca.pem, cert: me.cert, key: Buffer.from(me.key) as any } })
    await expect(c.chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    expect(seen).toEqual(['llmpool-client'])
  })

  test('without them the server refuses the connection', async () => {
    const err = await rejection(client({ url }, { connect: { ca: ca.pem } }).chat(body()))
    // TLS 1.3 lets the client finish its handshake before the server checks the certificate:
    // the refusal then arrives as the first read fails.
    expect(['ERR_TLS', 'ERR_SOCKET']).toContain(err.code)
    expect(String(err.cause?.message)).toMatch(/certificate/i)
  })

  test('cert without key, or a key that is not PEM, is a TypeError naming the option', () => {
    const me = ca.issue(['x'], 'clientAuth')
    for (const [connect, name] of [
      [{ cert: me.cert }, /^connect\.key/],
      [{ key: me.key }, /^connect\.cert/],
      [{ cert: me.cert, key: 'not a key' }, /^connect\.key/],
    ] as const) {
      let err: any
      try {
        client({ url }, { connect: connect as any })
      } catch (e) {
        err = e
      }
      expect(err).toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(name) })
      expect(err.message).not.toContain('PRIVATE KEY')
    }
  })
})

test('connect.servername: SNI and the certificate name, for a host reached by IP', async () => {
  const named = ca.issue(['llmpool.test'])
  const s = await server({ tls: named })
  const err = await rejection(client(s, { connect: { ca: ca.pem } }).chat(body()))
  expect(err.code).toBe('ERR_TLS')
  await expect(client(s, { connect: { ca: ca.pem, servername: 'llmpool.test' } }).chat(body())).resolves.toMatchObject({
    object: 'chat.completion',
  })
})
