// The response cache: a repeated call is answered without the network (the mock's request count
// says so); only complete successes are kept; a cached stream replays the same chunks; identical
// calls in flight send one request; entries end with their TTL and within maxBytes; two keys
// never share an answer; a fleet shares entries through Redis.
import diagnostics from 'node:diagnostics_channel'
import { Client } from '../index.js'
import type { ClientOptions } from '../index.js'
import { answerAfter, body, chunk, client, completion, rejection, sendJson, server, sleep } from './helpers'
import { haveRedis, redisCommand, RedisServer } from './redis-helper'

const question = { model: 'mock-model', temperature: 0, messages: [{ role: 'user' as const, content: 'What is 2+2?' }] }
/** The same request with its keys in another order. */
const reordered = { messages: [{ content: 'What is 2+2?', role: 'user' as const }], temperature: 0, model: 'mock-model' }

async function joined(pieces: AsyncIterable<string>): Promise<string> {
  let text = ''
  for await (const piece of pieces) text += piece
  return text
}

async function chunksOf(stream: AsyncIterable<any>): Promise<any[]> {
  const out: any[] = []
  for await (const c of stream) out.push(c)
  return out
}

describe('response cache', () => {
  test('a repeated call is answered from the cache, whatever its key order: one request, withResponse says miss then hit', async () => {
    const s = await server()
    let n = 0
    s.setHandler(({ res, body: b }: any) => sendJson(res, 200, completion(b, `answer #${++n}`), { 'x-request-id': `req-${n}` }))
    const c = client(s, { cache: true })
    const first: any = await c.chat(question, { withResponse: true })
    const second: any = await c.chat(reordered, { withResponse: true })
    const third = await c.chat(question)
    expect(s.requests).toHaveLength(1)
    expect(first.response.cache).toBe('miss')
    expect(second.response.cache).toBe('hit')
    expect(second.data).toEqual(first.data)
    expect(third).toEqual(first.data)
    // A hit is a 200 with none of the original headers: they described another request (its
    // id, the rate limits left then), so no stale rate limits either.
    expect(first.response.headers.get('x-request-id')).toBe('req-1')
    expect(second.response.status).toBe(200)
    expect([...second.response.headers]).toEqual([])
    expect(second.response.rateLimit).toBeNull()
    expect(second.response.attempts).toBe(0)
    expect(c.stats().cache).toMatchObject({ hits: 2, misses: 1, entries: 1 })
    expect(c.stats().cache!.bytes).toBeGreaterThan(JSON.stringify(first.data).length)
    expect(c.stats().requests).toBe(1)
    expect(c.metrics()).toMatch(/llmpool_cache_hits_total 2\n/)
    expect(c.metrics()).toMatch(/llmpool_cache_misses_total 1\n/)
    // Any other value is another request.
    await c.chat({ ...question, temperature: 1 })
    await c.embeddings({ model: 'e', input: 'What is 2+2?' })
    await c.embeddings({ model: 'e', input: 'What is 2+2?' })
    expect(s.requests).toHaveLength(3)
    // Without a cache on the client, nothing says hit or miss.
    const plain: any = await client(s).chat(question, { withResponse: true })
    expect(plain.response.cache).toBeNull()
  })

  test('only complete successes are kept: never an error, a maxResponseSize refusal or a truncated stream', async () => {
    const s = await server()
    const replies = [
      ({ res }: any) => sendJson(res, 500, { error: { message: 'boom' } }),
      ({ res, body: b }: any) => sendJson(res, 200, completion(b, 'x'.repeat(5000))),
      ({ res, body: b }: any) => sendJson(res, 200, completion(b, 'fine')),
    ]
    let i = 0
    s.setHandler((ctx: any) => replies[Math.min(i++, replies.length - 1)](ctx))
    const c = client(s, { cache: true, maxResponseSize: 2000 })
    expect((await rejection(c.chat(question))).code).toBe('ERR_HTTP_STATUS')
    expect((await rejection(c.chat(question))).code).toBe('ERR_RESPONSE_TOO_LARGE')
    expect((await c.chat(question)).choices[0].message.content).toBe('fine')
    expect((await c.chat(question)).choices[0].message.content).toBe('fine')
    expect(s.requests).toHaveLength(3)

    // A stream that ends without [DONE] or a finish reason is truncated: not kept.
    const t = await server()
    let streams = 0
    t.setHandler(({ res, body: b }: any) => {
      streams++
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.end(`data: ${JSON.stringify(chunk(b, { content: 'half' }))}\n\n`)
    })
    const d = client(t, { cache: true })
    for (let k = 0; k < 2; k++) expect((await rejection(chunksOf(d.chatStream(question)))).code).toBe('ERR_STREAM_TRUNCATED')
    expect(streams).toBe(2)
    expect(d.stats().cache).toMatchObject({ hits: 0, misses: 2, entries: 0 })
  })

  test('a cached stream replays the same chunks in the same order without the network; text() and finalCompletion() are the same', async () => {
    const s = await server()
    const c = client(s, { cache: true })
    const live = await chunksOf(c.chatStream(question))
    const replayed = await chunksOf(c.chatStream(reordered))
    expect(s.requests).toHaveLength(1)
    expect(replayed).toEqual(live)
    expect(live.length).toBeGreaterThan(3)
    // Text mode over the replay: the same text and the same merged completion as live.
    const other = { ...question, messages: [{ role: 'user' as const, content: 'tell me more' }] }
    const liveStream = c.chatStream(other).text()
    const liveText = await joined(liveStream)
    const liveFinal = await liveStream.finalCompletion()
    expect(liveText).toContain('tell me more')
    const replayStream = c.chatStream(other).text()
    expect(await joined(replayStream)).toBe(liveText)
    expect(await replayStream.finalCompletion()).toEqual(liveFinal)
    expect(s.requests).toHaveLength(2)
    // A stream and a JSON call of the same body are different calls.
    await c.chat(question)
    expect(s.requests).toHaveLength(3)
    expect(c.stats().cache).toMatchObject({ hits: 2, misses: 3 })
  })

  test('a stream its consumer left early is not kept', async () => {
    const s = await server({ chunkDelay: 5 })
    const c = client(s, { cache: true })
    for (let k = 0; k < 2; k++) {
      for await (const _ of c.chatStream(question)) break
    }
    await chunksOf(c.chatStream(question))
    await chunksOf(c.chatStream(question))
    expect(s.requests).toHaveLength(3)
  })

  test('identical calls in flight at once send one request; the others get its answer', async () => {
    const s = await server()
    s.setHandler(answerAfter(150, 'slow answer'))
    const c = client(s, { cache: true })
    const answers = await Promise.all(Array.from({ length: 5 }, () => c.chat(question)))
    expect(s.requests).toHaveLength(1)
    for (const a of answers) expect(a).toEqual(answers[0])
    expect(c.stats().cache).toMatchObject({ hits: 4, misses: 1 })
    // Streams too: the others replay the first one's chunks.
    const t = await server({ chunkDelay: 10 })
    const d = client(t, { cache: true })
    const streams = await Promise.all(Array.from({ length: 3 }, () => chunksOf(d.chatStream(question))))
    expect(t.requests).toHaveLength(1)
    expect(streams[1]).toEqual(streams[0])
    expect(streams[2]).toEqual(streams[0])
  })

  test('a leader that fails hands the call on: the waiting calls send again, nothing is kept from the failure', async () => {
    const s = await server()
    let n = 0
    s.setHandler(async ({ res, body: b }: any) => {
      n++
      await sleep(100)
      if (n === 1) return sendJson(res, 503, { error: { message: 'busy' } })
      sendJson(res, 200, completion(b, 'second try'))
    })
    const c = client(s, { cache: true })
    const settled = await Promise.allSettled(Array.from({ length: 3 }, () => c.chat(question)))
    expect(settled[0].status).toBe('rejected')
    expect(settled.slice(1).map((r) => r.status)).toEqual(['fulfilled', 'fulfilled'])
    // The first failed; of the two that waited, one led the next request, the other got its answer.
    expect(s.requests).toHaveLength(2)
  })

  test('an aborted wait for an identical call ends at once; the leader still answers', async () => {
    const s = await server()
    s.setHandler(answerAfter(300, 'slow'))
    const c = client(s, { cache: true })
    const leader = c.chat(question)
    await sleep(20)
    const controller = new AbortController()
    const follower = c.chat(question, { signal: controller.signal })
    const started = Date.now()
    controller.abort()
    expect((await rejection(follower)).code).toBe('ERR_ABORTED')
    expect(Date.now() - started).toBeLessThan(200)
    expect((await leader).choices[0].message.content).toBe('slow')
  })

  test('entries end with their TTL; a call may set its own ttl or bypass the cache', async () => {
    const s = await server()
    const c = client(s, { cache: { ttl: 150 } })
    await c.chat(question)
    await c.chat(question)
    expect(s.requests).toHaveLength(1)
    await sleep(200)
    await c.chat(question)
    expect(s.requests).toHaveLength(2)
    // cache: false: neither looked up nor kept.
    await c.chat(question, { cache: false })
    expect(s.requests).toHaveLength(3)
    // A call's own ttl.
    const other = { ...question, temperature: 0.5 }
    await c.chat(other, { cache: { ttl: 60_000 } })
    await sleep(200)
    await c.chat(other)
    expect(s.requests).toHaveLength(4)
    // Per-call cache options need a cache on the client; bad values name the option.
    const plain = client(s)
    const refused = async (p: Promise<unknown>, message: RegExp) => {
      const err = await rejection(p)
      expect(err).toBeInstanceOf(TypeError)
      expect(err.message).toMatch(message)
    }
    await refused(plain.chat(question, { cache: { ttl: 10 } }), /^cache sets a ttl, but the client has no cache/)
    await refused(c.chat(question, { cache: 'yes' } as any), /^cache must be false or an object/)
    await refused(c.chat(question, { cache: { ttl: -1 } }), /^cache\.ttl must be a positive integer/)
    expect(s.requests).toHaveLength(4)
  })

  test('maxBytes bounds the memory: the least recently used entry goes first', async () => {
    const s = await server()
    s.setHandler(({ res, body: b }: any) => sendJson(res, 200, completion(b, 'y'.repeat(1000))))
    const c = client(s, { cache: { maxBytes: 3000 } })
    const ask = (k: string) => c.chat({ ...question, messages: [{ role: 'user', content: k }] })
    await ask('a')
    await ask('b')
    await ask('a') // a is now the most recent
    await ask('c') // b goes
    expect(s.requests).toHaveLength(3)
    expect(c.stats().cache!.entries).toBe(2)
    expect(c.stats().cache!.bytes).toBeLessThanOrEqual(3000)
    await ask('a')
    await ask('c')
    expect(s.requests).toHaveLength(3)
    await ask('b')
    expect(s.requests).toHaveLength(4)
    // An answer larger than the whole budget is not kept.
    const tiny = client(s, { cache: { maxBytes: 200 } })
    await tiny.chat(question)
    await tiny.chat(question)
    expect(tiny.stats().cache).toMatchObject({ entries: 0, bytes: 0 })
  })

  test('two keys never share an answer; the key is in no cache key', async () => {
    const s = await server()
    const a = client(s, { cache: true, apiKey: 'sk-tenant-a-secret' })
    const b = client(s, { cache: true, apiKey: 'sk-tenant-b-secret' })
    await a.chat(question)
    await b.chat(question)
    expect(s.requests).toHaveLength(2)
    expect(s.requests.map((r) => r.headers.authorization)).toEqual(['Bearer sk-tenant-a-secret', 'Bearer sk-tenant-b-secret'])
    // A call's own headers are part of the call.
    await a.chat(question, { headers: { 'x-tenant': 'one' } })
    expect(s.requests).toHaveLength(3)
    expect(JSON.stringify(a.stats())).not.toContain('sk-tenant')
  })

  test('an answer that quotes the key (a server echoing what it was sent) is never kept', async () => {
    const s = await server()
    s.setHandler(({ req, res, body: b }: any) => sendJson(res, 200, completion(b, `you sent ${req.headers.authorization}`)))
    const c = client(s, { cache: true, apiKey: 'sk-echoed-secret-key' })
    await c.chat(question)
    await c.chat(question)
    // Streams too.
    s.setHandler(({ req, res, body: b }: any) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write(`data: ${JSON.stringify(chunk(b, { content: `you sent ${req.headers.authorization}` }, 'stop'))}\n\n`)
      res.end('data: [DONE]\n\n')
    })
    await chunksOf(c.chatStream(question))
    await chunksOf(c.chatStream(question))
    expect(s.requests).toHaveLength(4)
    expect(c.stats().cache).toMatchObject({ hits: 0, misses: 4, entries: 0 })
  })

  test('an answer from a fallback model is not kept for the model asked for', async () => {
    const big = await server()
    const small = await server()
    big.setHandler(({ res }: any) => sendJson(res, 503, { error: { message: 'down' } }))
    const c = new Client({
      retry: { maxRetries: 2, minTimeout: 1, maxTimeout: 1 },
      cache: true,
      upstreams: [
        { name: 'big', baseUrl: big.url, models: ['gpt-4o'] },
        { name: 'small', baseUrl: small.url, models: ['gpt-4o-mini'] },
      ],
      fallbacks: { 'gpt-4o': ['gpt-4o-mini'] },
      allowedFails: 100,
    } as ClientOptions)
    try {
      const ask = { ...question, model: 'gpt-4o' }
      expect((await c.chat(ask)).model).toBe('gpt-4o-mini')
      expect((await c.chat(ask)).model).toBe('gpt-4o-mini')
      expect(small.requests).toHaveLength(2)
      expect(big.requests).toHaveLength(2)
    } finally {
      c.destroy()
    }
  })

  test("the llmpool:call channel says the cache's verdict", async () => {
    const s = await server()
    const c = client(s, { cache: true })
    const seen: Array<string | undefined> = []
    const channel = diagnostics.tracingChannel('llmpool:call')
    const handlers = { start() {}, end() {}, asyncStart() {}, asyncEnd: (ctx: any) => seen.push(ctx.cache), error() {} }
    channel.subscribe(handlers)
    try {
      await c.chat(question)
      await c.chat(question)
    } finally {
      channel.unsubscribe(handlers)
    }
    expect(seen).toEqual(['miss', 'hit'])
  })

  test('bad cache options throw a TypeError naming the option', () => {
    const base = { baseUrl: 'http://127.0.0.1:1' }
    const expectRule = (cache: unknown, name: string, extra: object = {}) =>
      expect(() => new Client({ ...base, ...extra, cache } as any)).toThrow(expect.objectContaining({ name: 'TypeError', message: expect.stringContaining(name) }))
    expectRule('yes', 'cache')
    expectRule({ ttl: 0 }, 'cache.ttl')
    expectRule({ maxBytes: -5 }, 'cache.maxBytes')
    expectRule({ size: 5 }, 'cache.size')
    expectRule({ shared: true }, 'cache.shared')
  })
})

const redisSuite = haveRedis || process.env.CI ? describe : describe.skip
redisSuite('response cache shared through the store (Redis)', () => {
  let redis: RedisServer
  const made: Client[] = []
  beforeAll(async () => {
    redis = await RedisServer.start()
  })
  afterAll(async () => {
    made.forEach((c) => c.destroy())
    await redis?.stop()
  })

  const sharing = (url: string, apiKey: string, prefix: string) => {
    const c = new Client({ baseUrl: url, apiKey, retry: false, store: { redis: redis.url, prefix }, cache: { shared: true } } as ClientOptions)
    made.push(c)
    return c
  }

  test('two clients (a fleet) share entries through Redis; streams too; different keys still never share', async () => {
    const s = await server()
    const prefix = `cache-${process.pid}`
    const a = sharing(s.url, 'sk-same', prefix)
    const b = sharing(s.url, 'sk-same', prefix)
    /** Entries are written to Redis in the background: waits until it holds `n` of this prefix. */
    const untilEntries = async (n: number) => {
      for (let i = 0; (await redisCommand(redis.port, 'KEYS', `${prefix}:cache:*`)) !== `*${n}`; i++) {
        if (i > 200) throw new Error(`Redis never held ${n} cache entries`)
        await sleep(5)
      }
    }
    const first = await a.chat(question)
    await untilEntries(1)
    const hit: any = await b.chat(question, { withResponse: true })
    expect(hit.response.cache).toBe('hit')
    expect(hit.data).toEqual(first)
    expect(s.requests).toHaveLength(1)
    const streamed = await chunksOf(a.chatStream(question))
    await untilEntries(2)
    expect(await chunksOf(b.chatStream(question))).toEqual(streamed)
    expect(s.requests).toHaveLength(2)
    const before = s.requests.length
    const other = sharing(s.url, 'sk-other', prefix)
    await other.chat(question)
    expect(s.requests.length).toBe(before + 1)
    expect(b.stats().cache).toMatchObject({ hits: 2, misses: 0 })
  })
})
