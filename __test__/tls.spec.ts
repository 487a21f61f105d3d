// https through rustls against a local TLS server whose CA is made here, in the test.
import { TestCA } from './certs'
import { body, client, rejection, server } from './helpers'

let testCa: TestCA
let ca: string
let key: string
let cert: string

beforeAll(() => {
  testCa = new TestCA()
  ca = testCa.pem
  ;({ key, cert } = testCa.issue(['localhost', '127.0.0.1']))
})

afterAll(() => testCa.remove())

test('https with connect.ca trusting the test CA works and reuses the TLS connection', async () => {
  const s = await server({ tls: { key, cert } })
  const c = client(s, { connect: { ca } })
  await c.chat(body())
  await expect(c.chat(body('again'))).resolves.toMatchObject({ object: 'chat.completion' })
  expect(s.accepted).toBe(1)
})

test('connect.ca also takes a Buffer and an array', async () => {
  const s = await server({ tls: { key, cert } })
  await expect(client(s, { connect: { ca: [Buffer.from(ca)] } }).chat(body())).resolves.toBeDefined()
})

test('without the CA → ERR_TLS', async () => {
  const s = await server({ tls: { key, cert } })
  const err = await rejection(client(s).chat(body()))
  expect(err.code).toBe('ERR_TLS')
  expect(err.message).toContain(s.origin)
  expect(s.requests).toHaveLength(0)
})

test('connect.rejectUnauthorized: false accepts the unknown CA', async () => {
  const s = await server({ tls: { key, cert } })
  await expect(client(s, { connect: { rejectUnauthorized: false } }).chat(body())).resolves.toBeDefined()
})

test('plain http to a TLS port fails with a socket error, not a hang', async () => {
  const s = await server({ tls: { key, cert } })
  const err = await rejection(client({ url: s.url.replace('https:', 'http:') }, { headersTimeout: 5000 }).chat(body()))
  expect(err.code).toBe('ERR_SOCKET')
})
