// Provider rate-limit headers, read from every response and exposed: client.rateLimits() and
// err.rateLimit.
import { body, client, completion, rejection, sendJson, server } from './helpers'

test('OpenAI-style headers on a success: client.rateLimits()', async () => {
  const s = await server()
  s.setHandler(({ res, body: b }: any) =>
    sendJson(res, 200, completion(b, 'ok'), {
      'x-ratelimit-limit-requests': '500',
      'x-ratelimit-remaining-requests': '499',
      'x-ratelimit-reset-requests': '120ms',
      'x-ratelimit-limit-tokens': '30000',
      'x-ratelimit-remaining-tokens': '29000',
      'x-ratelimit-reset-tokens': '6m0s',
    }),
  )
  const c = client(s)
  expect(c.rateLimits()).toBeNull()
  const before = Date.now()
  await c.chat(body())
  const limits = c.rateLimits()!
  expect(limits.requests).toMatchObject({ limit: 500, remaining: 499 })
  expect(limits.tokens).toMatchObject({ limit: 30000, remaining: 29000 })
  expect(limits.updatedAt).toBeGreaterThanOrEqual(before - 5)
  expect(limits.tokens!.resetAt! - limits.updatedAt).toBe(360_000)
  expect(limits.requests!.resetAt! - limits.updatedAt).toBe(120)
})

test('Anthropic-style headers on a 429: err.rateLimit, and junk or absurd values never break anything', async () => {
  const s = await server()
  const reset = new Date(Date.now() + 30_000).toISOString()
  s.setHandler(({ res }: any) =>
    sendJson(res, 429, { error: { message: 'slow down' } }, {
      'anthropic-ratelimit-requests-limit': '50',
      'anthropic-ratelimit-requests-remaining': '0',
      'anthropic-ratelimit-requests-reset': reset,
      'anthropic-ratelimit-tokens-remaining': '-7',
      'anthropic-ratelimit-tokens-reset': 'year 99999',
    }),
  )
  const err = await rejection(client(s).chat(body()))
  expect(err).toMatchObject({ code: 'ERR_HTTP_STATUS', status: 429 })
  expect(err.rateLimit.requests).toMatchObject({ limit: 50, remaining: 0 })
  expect(Math.abs(err.rateLimit.requests.resetAt - Date.parse(reset))).toBeLessThan(5)
  expect(err.rateLimit.tokens).toBeUndefined()
})

test('pacing: at remaining 0 the next call waits for the reset instead of running into a 429', async () => {
  const s = await server()
  let resetAt = 0
  s.setHandler(({ res, body: b }: any) => {
    if (Date.now() < resetAt) return sendJson(res, 429, { error: { message: 'too soon' } })
    resetAt = Date.now() + 400
    sendJson(res, 200, completion(b, 'ok'), {
      'x-ratelimit-limit-requests': '1',
      'x-ratelimit-remaining-requests': '0',
      'x-ratelimit-reset-requests': '400ms',
    })
  })
  const c = client(s)
  await c.chat(body())
  const started = Date.now()
  await expect(c.chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
  expect(Date.now() - started).toBeGreaterThanOrEqual(380)
  expect(c.stats()).toMatchObject({ paced: 1, errors: 0 })
})

test('pacing does not hold a call for a reset beyond limitTimeout (a daily quota): the server decides', async () => {
  const s = await server()
  s.setHandler(({ res, body: b }: any) =>
    sendJson(res, 200, completion(b, 'ok'), { 'x-ratelimit-remaining-tokens': '0', 'x-ratelimit-reset-tokens': '20h0m0s' }),
  )
  const c = client(s)
  await c.chat(body())
  const started = Date.now()
  await c.chat(body())
  expect(Date.now() - started).toBeLessThan(1000)
  expect(c.stats().paced).toBe(0)
})
