// The shared store against the Redis that production runs, all real redis-server processes on
// loopback: TLS (certificates made by openssl: a private CA, a servername, mTLS, a wrong CA), an
// ACL user, and a three-master Redis Cluster. Each shares limits and 429 pauses like a plain
// Redis, falls back to local limits without holding a call when it cannot be used, and never
// shows its password.
import { Writable } from 'node:stream'
import { spawnSync } from 'node:child_process'
import { connect, createServer } from 'node:net'
import pino from 'pino'
import { Client } from '../index.js'
import type { ClientOptions, StoreOptions } from '../index.js'
import { TestCA } from './certs'
import { body, completion, eventually, rejection, sendJson, server, sleep } from './helpers'
import { freePort, haveRedis, redisCommand, RedisCluster, RedisServer } from './redis-helper'

const suite = haveRedis || process.env.CI ? describe : describe.skip
if (!haveRedis && !process.env.CI) console.warn('store-managed.spec: redis-server is not installed; skipped (apt-get install redis-server)')

const made: Client[] = []
afterAll(() => made.forEach((c) => c.destroy()))

let prefixes = 0
function storeClient(store: StoreOptions, options: Partial<ClientOptions>): Client {
  const c = new Client({ retry: false, ...options, store: { prefix: `m${process.pid}-${prefixes++}`, ...store } } as ClientOptions)
  made.push(c)
  return c
}

/** A pino logger whose lines are kept, to look for secrets in them. */
function captured() {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk))
      done()
    },
  })
  return { lines, logger: pino({ level: 'debug' }, stream) }
}

/** Two clients of one store: with rpm 120 (a burst of 2, then one each 500 ms) six calls between them need ~2 s, alone ~0.5 s each. */
async function expectSharedRpm(a: Client, b: Client): Promise<void> {
  const started = Date.now()
  await Promise.all([a, b, a, b, a, b].map((c) => c.chat(body())))
  expect(Date.now() - started).toBeGreaterThan(1500)
  for (const c of [a, b]) expect(c.stats().store).toMatchObject({ up: true, errors: 0, fallbacks: 0 })
}

/** The store cannot be used: calls still answer at once, decided locally; the outage is counted and logged without the secret. */
async function expectLocalFallback(c: Client, lines: string[], secret: string): Promise<void> {
  const started = Date.now()
  for (let i = 0; i < 4; i++) await c.chat(body())
  // One connect deadline (1.5 s) at most for the first call, then local decisions.
  expect(Date.now() - started).toBeLessThan(2500)
  expect(c.stats().store).toMatchObject({ up: false, fallbacks: 4 })
  expect(c.stats().store!.errors).toBeGreaterThanOrEqual(1)
  await eventually(() => lines.some((l) => l.includes('limiter store (Redis) is unreachable')))
  for (const text of [lines.join(''), JSON.stringify(c.stats()), c.metrics()]) expect(text).not.toContain(secret)
}

/**
 * One client's 429 with `Retry-After: 1` pauses the upstream for another client of the same
 * store: the pause reaches Redis (read on the plain port of the node `portOf` names for its key),
 * and the other client, which never saw the 429, waits it out.
 */
async function expectSharedPause(store: StoreOptions & { prefix: string }, portOf: (key: string) => number): Promise<void> {
  const s = await server()
  let paused = true
  s.setHandler(({ res, body: b }: any) =>
    paused ? ((paused = false), sendJson(res, 429, { error: { message: 'slow down' } }, { 'retry-after': '1' })) : sendJson(res, 200, completion(b, 'ok')),
  )
  const a = storeClient(store, { baseUrl: s.url })
  const b = storeClient(store, { baseUrl: s.url })
  expect((await rejection(a.chat(body()))).status).toBe(429)
  const key = `{${store.prefix}:${s.origin}}:pause`
  const port = portOf(key)
  for (let i = 0; Number((await redisCommand(port, 'PTTL', key)).slice(1)) <= 0; i++) {
    if (i > 200) throw new Error('the pause never reached Redis')
    await sleep(5)
  }
  const asked = Date.now()
  await b.chat(body())
  expect(Date.now() - asked).toBeGreaterThan(700)
}

suite('store over TLS (rediss://)', () => {
  const ca = new TestCA()
  const other = new TestCA()
  let redis: RedisServer
  let mtls: RedisServer
  let tlsPort: number
  let mtlsPort: number
  const serverPair = ca.issue(['redis.test', '127.0.0.1'])
  const namedOnly = ca.issue(['redis.test'])
  const clientPair = ca.issue(['llmpool client'], 'clientAuth')
  let namedPort: number
  let named: RedisServer

  beforeAll(async () => {
    const { writeFileSync } = await import('node:fs')
    const { join } = await import('node:path')
    writeFileSync(join(ca.dir, 'server.pem'), serverPair.cert)
    writeFileSync(join(ca.dir, 'server.key'), serverPair.key)
    writeFileSync(join(ca.dir, 'named.pem'), namedOnly.cert)
    writeFileSync(join(ca.dir, 'named.key'), namedOnly.key)
    const tls = (port: number, cert: string, key: string, clients: string) => [
      '--tls-port', String(port), '--tls-cert-file', join(ca.dir, cert), '--tls-key-file', join(ca.dir, key), '--tls-ca-cert-file', ca.path, '--tls-auth-clients', clients,
    ]
    tlsPort = await freePort()
    redis = await RedisServer.start(tls(tlsPort, 'server.pem', 'server.key', 'no'))
    mtlsPort = await freePort()
    mtls = await RedisServer.start(tls(mtlsPort, 'server.pem', 'server.key', 'yes'))
    namedPort = await freePort()
    named = await RedisServer.start(tls(namedPort, 'named.pem', 'named.key', 'no'))
  })
  afterAll(async () => {
    await Promise.all([redis?.stop(), mtls?.stop(), named?.stop()])
    ca.remove()
    other.remove()
  })

  test('two clients share one rpm through Redis over TLS; the keys are in Redis', async () => {
    const s = await server()
    const store = { redis: `rediss://127.0.0.1:${tlsPort}/0`, tls: { ca: ca.pem }, prefix: `tls-${process.pid}` }
    const a = storeClient(store, { baseUrl: s.url, limits: { rpm: 120 }, limitTimeout: 0 })
    const b = storeClient(store, { baseUrl: s.url, limits: { rpm: 120 }, limitTimeout: 0 })
    await expectSharedRpm(a, b)
    // Read back over the plain port: the TLS connection wrote the upstream's request bucket.
    expect(await redisCommand(redis.port, 'EXISTS', `{tls-${process.pid}:${s.origin}}:rpm`)).toBe(':1')
  })

  test("a 429's Retry-After pauses the upstream for every process over TLS", async () => {
    const prefix = `tlspause-${process.pid}`
    await expectSharedPause({ redis: `rediss://127.0.0.1:${tlsPort}`, tls: { ca: ca.pem }, prefix }, () => redis.port)
  })

  test("a slow handshake (400 ms, past the 250 ms round-trip deadline) does not make the first call local: connecting has its own deadline", async () => {
    // A relay that holds Redis's first answer (its part of the TLS handshake) for 400 ms.
    const relay = createServer((inbound) => {
      const outbound = connect(tlsPort, '127.0.0.1')
      let first = true
      outbound.on('data', (chunk) => {
        if (first) {
          first = false
          outbound.pause()
          setTimeout(() => (inbound.write(chunk), outbound.resume()), 400)
        } else inbound.write(chunk)
      })
      inbound.pipe(outbound)
      inbound.on('error', () => outbound.destroy())
      outbound.on('error', () => inbound.destroy())
      inbound.on('close', () => outbound.destroy())
    })
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r))
    try {
      const s = await server()
      const port = (relay.address() as { port: number }).port
      const c = storeClient({ redis: `rediss://127.0.0.1:${port}`, tls: { ca: ca.pem } }, { baseUrl: s.url, limits: { rpm: 6000 } })
      await c.chat(body())
      expect(c.stats().store).toMatchObject({ up: true, errors: 0, fallbacks: 0 })
      c.destroy()
    } finally {
      relay.close()
    }
  })

  test('servername: a certificate for redis.test only is accepted at 127.0.0.1 when named, refused when not', async () => {
    const s = await server()
    const good = storeClient({ redis: `rediss://127.0.0.1:${namedPort}`, tls: { ca: ca.pem, servername: 'redis.test' } }, { baseUrl: s.url, limits: { rpm: 6000 } })
    await good.chat(body())
    expect(good.stats().store).toMatchObject({ up: true, fallbacks: 0 })
    const { lines, logger } = captured()
    const bad = storeClient({ redis: `rediss://127.0.0.1:${namedPort}`, tls: { ca: ca.pem } }, { baseUrl: s.url, limits: { rpm: 6000 }, logger })
    await expectLocalFallback(bad, lines, 'never-a-secret-here')
  })

  test('mTLS: a Redis that asks for a client certificate gets ours; without one it is down, not hanging', async () => {
    const s = await server()
    const withCert = storeClient({ redis: `rediss://127.0.0.1:${mtlsPort}`, tls: { ca: ca.pem, cert: clientPair.cert, key: clientPair.key } }, { baseUrl: s.url, limits: { rpm: 6000 } })
    await withCert.chat(body())
    expect(withCert.stats().store).toMatchObject({ up: true, fallbacks: 0 })
    const { lines, logger } = captured()
    const without = storeClient({ redis: `rediss://127.0.0.1:${mtlsPort}`, tls: { ca: ca.pem } }, { baseUrl: s.url, limits: { rpm: 6000 }, logger })
    await expectLocalFallback(without, lines, 'never-a-secret-here')
  })

  test('a certificate from another CA is refused: the store is down, calls go local at once, the password shows nowhere', async () => {
    const s = await server()
    const { lines, logger } = captured()
    const c = storeClient({ redis: `rediss://:wrong-ca-secret@127.0.0.1:${tlsPort}`, tls: { ca: other.pem } }, { baseUrl: s.url, limits: { rpm: 6000 }, logger })
    await expectLocalFallback(c, lines, 'wrong-ca-secret')
    // Without a ca the system's store is used, which does not know our test CA either.
    const { lines: lines2, logger: logger2 } = captured()
    const d = storeClient({ redis: `rediss://127.0.0.1:${tlsPort}` }, { baseUrl: s.url, limits: { rpm: 6000 }, logger: logger2 })
    await expectLocalFallback(d, lines2, 'never-a-secret-here')
  })

  test('rejectUnauthorized: false accepts the unknown certificate (tests and private networks)', async () => {
    const s = await server()
    const c = storeClient({ redis: `rediss://127.0.0.1:${tlsPort}`, tls: { rejectUnauthorized: false } }, { baseUrl: s.url, limits: { rpm: 6000 } })
    await c.chat(body())
    expect(c.stats().store).toMatchObject({ up: true, fallbacks: 0 })
  })

  test('bad store options throw a TypeError naming the option, never echoing a key', () => {
    const base = { baseUrl: 'http://127.0.0.1:1' }
    const expectRule = (store: unknown, name: string) =>
      expect(() => new Client({ ...base, store } as any)).toThrow(expect.objectContaining({ name: 'TypeError', message: expect.stringContaining(name) }))
    expectRule({ redis: 'redis://h', tls: { ca: ca.pem } }, 'store.tls')
    expectRule({ redis: 'rediss://h', tls: { ca: 'not pem' } }, 'store.tls.ca')
    expectRule({ redis: 'rediss://h', tls: { cert: clientPair.cert } }, 'store.tls.key')
    expectRule({ redis: 'rediss://h', tls: { colour: 'red' } }, 'store.tls.colour')
    expectRule({ redis: 'rediss://h', tls: { rejectUnauthorized: 'no' } }, 'store.tls.rejectUnauthorized')
    expectRule({ redis: ['redis://a', 'redis://b'] }, 'cluster: true')
    expectRule({ redis: ['redis://a', 'rediss://b'], cluster: true }, 'store.redis')
    expectRule({ redis: ['rediss://a'], cluster: true, tls: { servername: 'x' } }, 'store.tls.servername')
    expectRule({ redis: 'redis://a', cluster: 'yes' }, 'store.cluster')
    expectRule({ redis: 'rediss://h/#insecure' }, 'store.redis')
    let thrown: any
    try {
      new Client({ ...base, store: { redis: 'rediss://h', tls: { key: 'PRIVATE KEY----- s3cr3t', cert: 'nope' } } } as any)
    } catch (e) {
      thrown = e
    }
    expect(thrown.message).toContain('store.tls.cert')
    expect(thrown.message).not.toContain('s3cr3t')
  })
})

suite('store with an ACL user', () => {
  let redis: RedisServer
  beforeAll(async () => {
    // The default user may do nothing with keys; alice may run the scripts on any key.
    redis = await RedisServer.start(['--user', 'default', 'on', 'nopass', '-@all', '+ping', '--user', 'alice', 'on', '>alice-acl-secret', '~*', '+@all'])
  })
  afterAll(() => redis?.stop())

  test('the ACL user shares limits; a wrong password is a store that is down, shown nowhere', async () => {
    const s = await server()
    const store = { redis: `redis://alice:alice-acl-secret@127.0.0.1:${redis.port}/0`, prefix: `acl-${process.pid}` }
    const a = storeClient(store, { baseUrl: s.url, limits: { rpm: 120 }, limitTimeout: 0 })
    const b = storeClient(store, { baseUrl: s.url, limits: { rpm: 120 }, limitTimeout: 0 })
    await expectSharedRpm(a, b)
    const { lines, logger } = captured()
    const wrong = storeClient({ redis: `redis://alice:not-the-acl-secret@127.0.0.1:${redis.port}/0` }, { baseUrl: s.url, limits: { rpm: 6000 }, logger })
    await expectLocalFallback(wrong, lines, 'not-the-acl-secret')
    // The default user cannot run the script: refused by ACL, so down too (not a crash, not a hang).
    const { lines: lines2, logger: logger2 } = captured()
    const anonymous = storeClient({ redis: `redis://127.0.0.1:${redis.port}/0` }, { baseUrl: s.url, limits: { rpm: 6000 }, logger: logger2 })
    await expectLocalFallback(anonymous, lines2, 'alice-acl-secret')
  })
})

const clusterSuite = (haveRedis || process.env.CI) && spawnSync('redis-cli', ['--version']).status === 0 ? describe : describe.skip
clusterSuite('store on a Redis Cluster (three masters)', () => {
  let cluster: RedisCluster
  beforeAll(async () => {
    cluster = await RedisCluster.start()
  }, 30_000)
  afterAll(() => cluster?.stop())

  test('two clients share one rpm through the cluster', async () => {
    const s = await server()
    const store = { redis: cluster.seeds, cluster: true, prefix: `cl-${process.pid}` }
    const a = storeClient(store, { baseUrl: s.url, limits: { rpm: 120 }, limitTimeout: 0 })
    const b = storeClient(store, { baseUrl: s.url, limits: { rpm: 120 }, limitTimeout: 0 })
    await expectSharedRpm(a, b)
  })

  test("upstreams' keys spread over the nodes, each scope in one slot; one seed is enough (the slot map routes the rest)", async () => {
    const names = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot']
    const prefix = `spread-${process.pid}`
    const s = await server()
    const c = storeClient(
      { redis: [cluster.seeds[0]], cluster: true, prefix },
      { upstreams: names.map((name) => ({ name, baseUrl: s.url, limits: { rpm: 6000 } })), routing: 'weighted' } as any,
    )
    for (let i = 0; i < 40; i++) await c.chat(body())
    expect(c.stats().store).toMatchObject({ up: true, errors: 0, fallbacks: 0 })
    const used = new Set<number>()
    for (const name of names) {
      const key = `{${prefix}:${name}}:rpm`
      const port = cluster.nodeOf(key)
      // Held by the node that owns its slot (asked without following redirections).
      if ((await redisCommand(port, 'EXISTS', key)) === ':1') used.add(port)
      // The scope's three keys share the slot.
      expect(cluster.nodeOf(`{${prefix}:${name}}:pause`)).toBe(port)
    }
    expect(used.size).toBeGreaterThanOrEqual(2)
  })

  test("a 429's pause is shared through the cluster", async () => {
    const prefix = `clpause-${process.pid}`
    await expectSharedPause({ redis: cluster.seeds, cluster: true, prefix }, (key) => cluster.nodeOf(key))
  })

  test('a cluster that is gone: calls go local at once, nothing hangs, the password shows nowhere', async () => {
    const s = await server()
    const ports = [await freePort(), await freePort()]
    const { lines, logger } = captured()
    const c = storeClient({ redis: ports.map((p) => `redis://:cluster-secret@127.0.0.1:${p}`), cluster: true }, { baseUrl: s.url, limits: { rpm: 6000 }, logger })
    await expectLocalFallback(c, lines, 'cluster-secret')
  })
})
