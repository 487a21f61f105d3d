// The `logger` option with real pino: llmpool's events arrive as structured fields in the
// application's logger, for the client's own upstreams only, never with a secret.
import { Writable } from 'node:stream'
import pino from 'pino'
import { Client } from '../index.js'
import { body, client, eventually, sendJson, server } from './helpers'

const KEY = 'sk-logger-secret-key-987654'

function captured() {
  const lines: any[] = []
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line))
      done()
    },
  })
  return { lines, logger: pino({ level: 'debug' }, stream) }
}

test('a retry reaches pino as one structured info line; another client\'s logger hears nothing of it', async () => {
  const s = await server()
  let n = 0
  s.setHandler(({ res, body: b }) => (n++ === 0 ? sendJson(res, 503, { error: { message: 'busy' } }) : sendJson(res, 200, { id: 'x', object: 'chat.completion', model: b.model, choices: [] })))
  const mine = captured()
  const other = captured()
  const c = client(s, { apiKey: KEY, logger: mine.logger, retry: { maxRetries: 2, minTimeout: 1, maxTimeout: 1 } })
  const elsewhere = await server()
  client(elsewhere, { logger: other.logger })
  await c.chat(body())
  await eventually(() => mine.lines.some((l) => l.msg === 'retrying'))
  const line = mine.lines.find((l) => l.msg === 'retrying')
  expect(line).toMatchObject({ level: 30, origin: s.origin, code: 'ERR_HTTP_STATUS', attempt: 1, target: expect.stringContaining('llmpool') })
  expect(typeof line.delay_ms).toBe('number')
  expect(other.lines.filter((l) => l.origin === s.origin)).toEqual([])
  expect(JSON.stringify(mine.lines)).not.toContain(KEY)
})

test('a failover and the cooldown a 429 asks for are logged with the upstream they concern', async () => {
  const a = await server()
  const b = await server()
  a.setHandler(({ res }) => sendJson(res, 429, { error: { message: `slow down ${KEY}` } }, { 'retry-after': '30' }))
  const { lines, logger } = captured()
  const c = new Client({
    apiKey: KEY,
    logger,
    routing: 'weighted',
    upstreams: [
      { name: 'a', baseUrl: a.url, weight: 1_000_000 },
      { name: 'b', baseUrl: b.url, weight: 1 },
    ],
  })
  try {
    await c.chat(body())
  } finally {
    await c.destroy()
  }
  await eventually(() => lines.some((l) => l.msg === 'moving the call to another upstream'))
  expect(lines.find((l) => l.msg === 'moving the call to another upstream')).toMatchObject({ origin: a.origin, code: 'ERR_HTTP_STATUS' })
  expect(lines.find((l) => /cooling it down/.test(l.msg))).toMatchObject({ origin: a.origin, wait_ms: 30_000 })
  expect(JSON.stringify(lines)).not.toContain(KEY)
})

test('a logger that throws breaks no call; a logger without methods is a TypeError naming it', async () => {
  const s = await server()
  s.setHandler(({ res, index }) => (index === 0 ? sendJson(res, 500, {}) : sendJson(res, 200, { id: 'x', choices: [] })))
  const c = client(s, { logger: { info: () => { throw new Error('disk full') } }, retry: { maxRetries: 1, minTimeout: 1, maxTimeout: 1 } })
  await expect(c.chat(body())).resolves.toBeDefined()
  expect(() => new Client({ baseUrl: s.url, logger: {} as any })).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG', message: expect.stringContaining('logger') }))
})
