// llmpool through squid, a real forward proxy (started by test-real/run.sh): http targets are
// forwarded in absolute form (here the llama.cpp server), https targets go through a CONNECT
// tunnel (here a local TLS server whose CA is made in the test).
import { readFileSync } from 'node:fs'
import { Client } from '../index.js'
import { TestCA } from '../__test__/certs'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { startMockServer } = require('../mock/server.js')

const baseUrl = process.env.LLM_BASE_URL as string
const squid = process.env.SQUID_URL as string
const accessLog = process.env.SQUID_ACCESS_LOG as string
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** squid's access log lines, once at least `n` are there (it writes them after each request). */
async function logLines(n: number): Promise<string[]> {
  for (let i = 0; i < 100; i++) {
    const lines = readFileSync(accessLog, 'utf8').split('\n').filter(Boolean)
    if (lines.length >= n) return lines
    await sleep(50)
  }
  return readFileSync(accessLog, 'utf8').split('\n').filter(Boolean)
}

const ask = { model: 'gemma', max_tokens: 12, temperature: 0, messages: [{ role: 'user' as const, content: 'Say hello.' }] }

beforeAll(() => {
  if (!squid) throw new Error('run this suite with test-real/run.sh (npm run test:real)')
})

test('chat and stream to the llama.cpp server through squid give what they give directly', async () => {
  const direct = new Client({ baseUrl, retry: false })
  const proxied = new Client({ baseUrl, retry: false, proxy: squid })
  try {
    const before = (await logLines(0)).length
    const a = await direct.chat(ask)
    const b = await proxied.chat(ask)
    expect(b.choices[0].message.content).toBe(a.choices[0].message.content)
    const streamed = await proxied.chatStream(ask).finalCompletion()
    expect(streamed.choices[0].message.content).toBe(a.choices[0].message.content)
    const lines = (await logLines(before + 2)).slice(before)
    expect(lines.filter((l) => l.includes(`POST ${baseUrl}/chat/completions`))).toHaveLength(2)
    expect(proxied.stats().connectionsOpened).toBe(1)
  } finally {
    await direct.destroy()
    await proxied.destroy()
  }
})

test('an https target through a squid CONNECT tunnel', async () => {
  const ca = new TestCA()
  const tls = ca.issue(['localhost', '127.0.0.1'])
  const mock = await startMockServer({ tls })
  const client = new Client({ baseUrl: mock.url, retry: false, proxy: squid, connect: { ca: ca.pem } })
  try {
    const before = (await logLines(0)).length
    for (let i = 0; i < 3; i++) await expect(client.chat({ ...ask, model: 'mock' })).resolves.toMatchObject({ object: 'chat.completion' })
    const text = (await client.chatStream({ ...ask, model: 'mock' }).finalCompletion()).choices[0].message.content
    expect(text).toContain('Say hello.')
    expect(mock.requests).toHaveLength(4)
    // One tunnel carried all four requests (squid logs a CONNECT when the tunnel closes).
    expect(client.stats().connectionsOpened).toBe(1)
    await client.close()
    const lines = (await logLines(before + 1)).slice(before)
    expect(lines.filter((l) => l.includes(`CONNECT 127.0.0.1:${mock.port}`))).toHaveLength(1)
  } finally {
    await client.destroy()
    await mock.close()
    ca.remove()
  }
})
