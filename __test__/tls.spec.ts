// https through rustls against a local TLS server whose CA is made here, in the test.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { body, client, rejection, server } from './helpers'

let dir: string
let ca: string
let key: string
let cert: string

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'llmpool-tls-'))
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=llmpool test CA')
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost')
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n')
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf')
  ca = readFileSync(join(dir, 'ca.pem'), 'utf8')
  key = readFileSync(join(dir, 'server.key'), 'utf8')
  cert = readFileSync(join(dir, 'server.pem'), 'utf8')
})

afterAll(() => rmSync(dir, { recursive: true, force: true }))

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
