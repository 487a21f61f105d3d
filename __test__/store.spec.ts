// The shared limiter store against a real Redis (redis-server, started on a free port): a fleet
// of processes obeys one rpm; a 429's Retry-After pauses the upstream for every process; Redis
// down never holds a call (local limits, logged once, counted) and is rejoined when back.
import { spawn, spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { Client } from '../index.js'
import type { ClientOptions } from '../index.js'
import { body, completion, eventually, rejection, sendJson, server, sleep } from './helpers'
import { haveRedis, freePort, redisCommand, RedisServer } from './redis-helper'

// CI installs redis-server (.ci/run); a developer machine without it skips with a notice.
const suite = haveRedis || process.env.CI ? describe : describe.skip
if (!haveRedis && !process.env.CI) console.warn('store.spec: redis-server is not installed; skipped (apt-get install redis-server)')

let redis: RedisServer
const made: Client[] = []
beforeAll(async () => {
  if (haveRedis || process.env.CI) redis = await RedisServer.start()
})
afterAll(async () => {
  made.forEach((c) => c.destroy())
  await redis?.stop()
})

let prefixes = 0
function shared(options: Partial<ClientOptions>, prefix = `t${process.pid}-${prefixes++}`): Client {
  const c = new Client({ retry: false, store: { redis: redis.url, prefix }, ...options } as ClientOptions)
  made.push(c)
  return c
}

/** The per-process worker of the fleet: prints one JSON line of results. */
function worker(env: Record<string, string>): Promise<any> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(__dirname, 'fixtures', 'fleet-worker.js')], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let out = ''
    child.stdout!.on('data', (d) => (out += d))
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim())) : reject(new Error(`worker exited with ${code}`))))
  })
}

suite('store: { redis }', () => {
  test('two clients sharing a store obey one rpm between them', async () => {
    const s = await server()
    const a = shared({ baseUrl: s.url, limits: { rpm: 120 }, limitTimeout: 0 }, 'pair')
    const b = shared({ baseUrl: s.url, limits: { rpm: 120 }, limitTimeout: 0 }, 'pair')
    // 120 rpm: a burst of 2, then one every 500 ms, for both clients together.
    const started = Date.now()
    await Promise.all([a, b, a, b, a, b].map((c) => c.chat(body())))
    const took = Date.now() - started
    // Alone, each client would pass 2 at once and one every 500 ms: 3 calls in ~500 ms. Shared,
    // 6 calls need ~2000 ms.
    expect(took).toBeGreaterThan(1500)
    expect(a.stats().store).toMatchObject({ up: true, errors: 0, fallbacks: 0 })
    expect(a.stats().limitWaits + b.stats().limitWaits).toBeGreaterThan(0)
  })

  test("a 429's Retry-After pauses the upstream for every process", async () => {
    const s = await server()
    let paused = true
    s.setHandler(({ res, body: b }: any) =>
      paused ? ((paused = false), sendJson(res, 429, { error: { message: 'slow down' } }, { 'retry-after': '1' })) : sendJson(res, 200, completion(b, 'ok')),
    )
    const a = shared({ baseUrl: s.url }, 'pause')
    const b = shared({ baseUrl: s.url }, 'pause')
    expect((await rejection(a.chat(body()))).status).toBe(429)
    // The pause is written in the background: wait until Redis has it.
    const pttl = async () => Number((await redisCommand(redis.port, 'PTTL', `{pause:${s.origin}}:pause`)).slice(1))
    for (let i = 0; (await pttl()) <= 0; i++) {
      if (i > 200) throw new Error('the pause never reached Redis')
      await sleep(5)
    }
    const asked = Date.now()
    await b.chat(body())
    // b never saw the 429: it waited for the pause a wrote.
    expect(Date.now() - asked).toBeGreaterThan(700)
    expect(s.requests).toHaveLength(2)
  })

  test('Redis down: calls never hang, limits go local, the outage is counted; Redis back: shared again', async () => {
    const s = await server()
    const port = await freePort()
    const down = new RedisServer(port)
    const c = new Client({ baseUrl: s.url, retry: false, limits: { rpm: 6000 }, store: { redis: down.url } })
    made.push(c)
    const started = Date.now()
    for (let i = 0; i < 5; i++) await c.chat(body())
    // One 250 ms deadline at most, then a second of local decisions.
    expect(Date.now() - started).toBeLessThan(1500)
    expect(c.stats().store).toMatchObject({ up: false })
    expect(c.stats().store!.errors).toBeGreaterThanOrEqual(1)
    expect(c.stats().store!.fallbacks).toBe(5)
    expect(c.metrics()).toMatch(/llmpool_store_up 0\n/)
    await down.resume()
    try {
      await sleep(1100)
      for (let i = 0; i < 3; i++) await c.chat(body())
      expect(c.stats().store!.up).toBe(true)
      expect(c.stats().store!.fallbacks).toBe(5)
      expect(c.metrics()).toMatch(/llmpool_store_up 1\n/)
    } finally {
      await down.stop()
    }
  })

  test('close() and destroy() close the connection to the store (no socket left until the client is collected)', async () => {
    const s = await server()
    // Clients connected to Redis, but the one redis-cli that asks.
    const connected = () => spawnSync('redis-cli', ['-p', String(redis.port), 'CLIENT', 'LIST'], { encoding: 'utf8' }).stdout.trim().split('\n').length - 1
    const before = connected()
    const a = shared({ baseUrl: s.url, limits: { rpm: 6000 } }, 'conns')
    const b = shared({ baseUrl: s.url, limits: { rpm: 6000 } }, 'conns')
    await Promise.all([a.chat(body()), b.chat(body())])
    expect(connected()).toBe(before + 2)
    a.destroy()
    await b.close()
    await eventually(() => connected() === before)
  })

  test('the outage is logged once, however many calls it touches', async () => {
    const s = await server()
    const port = await freePort()
    const script = `
      const { Client } = require(${JSON.stringify(join(__dirname, '..', 'index.js'))})
      const c = new Client({ baseUrl: ${JSON.stringify(s.url)}, retry: false, store: { redis: 'redis://127.0.0.1:${port}/0' } })
      ;(async () => { for (let i = 0; i < 30; i++) await c.chat({ model: 'm', messages: [] }); await c.close() })()
    `
    const stderr = await new Promise<string>((resolve) => {
      const child = spawn(process.execPath, ['-e', script], { env: { ...process.env, LLMPOOL_LOG: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] })
      let err = ''
      child.stderr!.on('data', (d) => (err += d))
      child.once('exit', () => resolve(err))
    })
    expect(stderr.match(/limiter store \(Redis\) is unreachable/g)).toHaveLength(1)
    expect(stderr).not.toContain('redis://')
  })

  test('fleet: 4 processes share rpm through one Redis; Redis stopped mid-run (local limits), started again (shared again)', async () => {
    const rpm = 600 // 10 a second, a burst of 10
    const perSecond = rpm / 60
    const s = await server()
    const stamps: number[] = []
    s.setHandler(({ res, body: b }: any) => {
      stamps.push(Date.now())
      sendJson(res, 200, completion(b, 'ok'))
    })
    const env = { BASE_URL: s.url, REDIS_URL: redis.url, PREFIX: `fleet-${process.pid}`, RPM: String(rpm), DURATION: '11000' }
    const t0 = Date.now()
    const workers = [1, 2, 3, 4].map(() => worker(env))
    await sleep(4000)
    const stoppedAt = Date.now()
    await redis.stop()
    await sleep(3000)
    const resumedAt = Date.now()
    await redis.resume()
    const results = await Promise.all(workers)
    const end = t0 + 11_000
    const count = (from: number, to: number) => stamps.filter((t) => t >= from && t < to).length
    if (process.env.FLEET_TRACE) {
      const perTenth = new Map<number, number>()
      for (const t of stamps) perTenth.set(Math.floor((t - t0) / 500), (perTenth.get(Math.floor((t - t0) / 500)) ?? 0) + 1)
      console.log({ stoppedAt: stoppedAt - t0, resumedAt: resumedAt - t0, halfSeconds: [...perTenth.entries()].sort((a, b) => a[0] - b[0]) })
    }
    const bound = (from: number, to: number) => Math.ceil(((to - from) / 1000) * perSecond) + perSecond + 2

    // Shared: within the limit plus one burst, in any window.
    const before = [t0 + 1000, stoppedAt] as const
    const after = [resumedAt + 1500, end - 200] as const
    expect(count(...before)).toBeLessThanOrEqual(bound(...before))
    expect(count(...after)).toBeLessThanOrEqual(bound(...after))
    // Calls went on while Redis was down, each process on its own limit: well above the shared one.
    const outage = [stoppedAt + 1000, resumedAt] as const
    expect(count(...outage)).toBeGreaterThan(((outage[1] - outage[0]) / 1000) * perSecond * 1.5)
    // And the shared phases did run (the limit was used, not idle).
    expect(count(...before)).toBeGreaterThan(((before[1] - before[0]) / 1000) * perSecond * 0.7)
    for (const r of results) {
      expect(r.failures).toEqual({})
      expect(r.stats.store.errors).toBeGreaterThan(0)
      expect(r.stats.store.fallbacks).toBeGreaterThan(0)
      expect(r.stats.store.up).toBe(true)
    }
  }, 30_000)
})
