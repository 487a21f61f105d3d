// Client-side limits (rpm, tpm, concurrency; limitTimeout) and batches, through the public API.
// Waits are asserted from below only: never sooner than the limit allows.
import { body, chunk, client, completion, eventually, rejection, sendJson, server, sleep } from './helpers'

test('concurrency: never more calls in flight than allowed; the rest wait in order', async () => {
  const s = await server()
  let running = 0
  let peak = 0
  const order: string[] = []
  s.setHandler(async ({ res, body: b }: any) => {
    peak = Math.max(peak, ++running)
    order.push(b.messages[0].content)
    await sleep(30)
    running--
    sendJson(res, 200, completion(b, 'ok'))
  })
  const c = client(s, { limits: { concurrency: 2 } })
  // Issued a moment apart: calls made in the same tick may reach the limiter in any order.
  const calls: Array<Promise<unknown>> = []
  for (let i = 0; i < 8; i++) {
    calls.push(c.chat(body(`call ${i}`)))
    await sleep(2)
  }
  await eventually(() => s.requests.length >= 2)
  expect(c.stats().limited).toBeGreaterThan(0)
  await Promise.all(calls)
  expect(peak).toBe(2)
  // FIFO: each pair of freed slots goes to the next two waiting calls. Within a pair the two
  // requests race to the server (separate connections and threads), so a pair is compared as a set.
  const waves = [2, 4, 6].map((i) => order.slice(i, i + 2).sort())
  expect(waves).toEqual([
    ['call 2', 'call 3'],
    ['call 4', 'call 5'],
    ['call 6', 'call 7'],
  ])
  expect(c.stats()).toMatchObject({ limited: 0, limitWaits: 6 })
  expect(c.metrics()).toMatch(/llmpool_limit_waits_total\{[^}]*\} 6\n/)
})

test('rpm: one second of burst, then paced (the server never sees more)', async () => {
  const s = await server()
  const arrivals: number[] = []
  s.setHandler(({ res, body: b }: any) => {
    arrivals.push(Date.now())
    sendJson(res, 200, completion(b, 'ok'))
  })
  const c = client(s, { limits: { rpm: 600 } }) // 10 per second
  const started = Date.now()
  await Promise.all(Array.from({ length: 15 }, () => c.chat(body())))
  // 10 at once, then one every 100 ms: the 15th no sooner than 500 ms after the start.
  expect(arrivals[14] - started).toBeGreaterThanOrEqual(480)
})

test('tpm: a call waits for its estimated tokens, and the reservation follows the usage', async () => {
  const s = await server()
  s.setHandler(({ res, body: b }: any) => sendJson(res, 200, { ...completion(b, 'ok'), usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }))
  const c = client(s, { limits: { tpm: 60_000 } }) // 1,000 tokens per second of burst
  // Each call reserves ~20 + 500 tokens; the answer says it used 2, so the next ones need not wait
  // (without the correction the third would: 3 × 520 > 1,000).
  for (let i = 0; i < 6; i++) await c.chat({ ...body(), max_tokens: 500 })
  expect(c.stats().limitWaits).toBe(0)
})

test('tpm and streams: the usage chunk corrects the reservation, else the content chunks do', async () => {
  const s = await server()
  // Three content chunks, then (when asked) a usage chunk that says the call used 900 tokens.
  s.setHandler(({ res, body: b }: any) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    for (const word of ['a', 'b', 'c']) res.write(`data: ${JSON.stringify(chunk(b, { content: word }))}\n\n`)
    res.write(`data: ${JSON.stringify(chunk(b, {}, 'stop'))}\n\n`)
    if (b.stream_options?.include_usage) res.write(`data: ${JSON.stringify({ ...chunk(b, {}), choices: [], usage: { total_tokens: 900 } })}\n\n`)
    res.end('data: [DONE]\n\n')
  })
  const drain = async (c: any, usage: boolean) => {
    for await (const _ of c.chatStream({ ...body(), max_tokens: 300, ...(usage ? { stream_options: { include_usage: true } } : {}) })) void _
  }
  // 60,000 tpm: a burst of 1,000. Each stream reserves ~320.
  const counted = client(s, { limits: { tpm: 60_000 } })
  for (let i = 0; i < 3; i++) await drain(counted, false)
  // Corrected to its ~5 chunks each: nothing waited.
  expect(counted.stats().limitWaits).toBe(0)
  const reported = client(s, { limits: { tpm: 60_000 } })
  await drain(reported, true)
  await drain(reported, true)
  // The first used 900 by its usage chunk: the second had to wait for room.
  expect(reported.stats().limitWaits).toBe(1)
})

test('limitTimeout: ERR_LIMIT_TIMEOUT, nothing sent; an abort ends the wait at once', async () => {
  const s = await server()
  s.setHandler(async ({ res, body: b }: any) => {
    await sleep(300)
    sendJson(res, 200, completion(b, 'slow'))
  })
  const c = client(s, { limits: { concurrency: 1 }, limitTimeout: 50 })
  const first = c.chat(body('first'))
  const err = await rejection(c.chat(body('second')))
  expect(err).toMatchObject({ code: 'ERR_LIMIT_TIMEOUT' })
  const controller = new AbortController()
  const aborted = c.chat(body('third'), { signal: controller.signal })
  controller.abort()
  expect((await rejection(aborted)).code).toBe('ERR_ABORTED')
  await first
  expect(s.requests.map((r) => r.body.messages[0].content)).toEqual(['first'])
})

test('batch: results in input order, failures kept, a summary with tokens, progress, any endpoint', async () => {
  const s = await server()
  s.setHandler(({ res, body: b, req }: any) => {
    if (req.url.endsWith('/embeddings')) return sendJson(res, 200, { object: 'list', data: [], model: 'e', usage: { prompt_tokens: 1, total_tokens: 1 } })
    const said = b.messages[0].content
    if (said === 'bad') return sendJson(res, 400, { error: { message: 'no' } })
    setTimeout(() => sendJson(res, 200, completion(b, said)), Number(said) % 3 * 10)
  })
  const c = client(s, { limits: { concurrency: 3 } })
  const progress: number[] = []
  const { results, summary } = await c.batch(['1', '2', 'bad', '4', '5', '6'].map((t) => body(t)), {
    concurrency: 4,
    onProgress: (p) => progress.push(p.done + p.failed),
  })
  expect(results.map((r: any) => (r.ok ? r.value.choices[0].message.content : r.error.status))).toEqual(['1', '2', 400, '4', '5', '6'])
  expect(results.map((r: any) => r.ok)).toEqual([true, true, false, true, true, true])
  expect(summary).toMatchObject({ done: 5, failed: 1 })
  expect(summary.tokens).toBeGreaterThan(0)
  expect(progress).toEqual([1, 2, 3, 4, 5, 6])
  const emb = await c.batch([{ model: 'e', input: 'a' }, { model: 'e', input: 'b' }], { call: (b: any, o) => c.embeddings(b, o) })
  expect(emb.summary).toMatchObject({ done: 2, failed: 0, tokens: 2 })
})
