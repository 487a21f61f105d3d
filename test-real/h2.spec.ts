// HTTP/2 for real: nginx (started by test-real/run.sh) as a TLS h2 reverse proxy in front of the
// llama.cpp server. Chat and stream over h2 give what they give over HTTP/1.1.
import { readFileSync } from 'node:fs'
import { Client } from '../index.js'

const direct = process.env.LLM_BASE_URL as string
const nginx = process.env.NGINX_URL as string
const ask = { model: 'gemma', max_tokens: 16, temperature: 0, messages: [{ role: 'user' as const, content: 'Name a colour.' }] }

test('chat and stream over HTTP/2 through nginx equal HTTP/1.1 straight to the server', async () => {
  if (!nginx) throw new Error('run this suite with test-real/run.sh (npm run test:real)')
  const ca = readFileSync(process.env.NGINX_CA as string, 'utf8')
  const h1 = new Client({ baseUrl: direct, retry: false })
  const h2 = new Client({ baseUrl: nginx, retry: false, allowH2: true, connect: { ca } })
  try {
    const a = await h1.chat(ask)
    const [b, c] = await Promise.all([h2.chat(ask), h2.chat(ask)])
    expect(b.choices[0].message.content).toBe(a.choices[0].message.content)
    expect(c.choices[0].message.content).toBe(a.choices[0].message.content)
    let streamed = ''
    for await (const chunk of h2.chatStream(ask)) streamed += chunk.choices[0]?.delta?.content ?? ''
    expect(streamed).toBe(a.choices[0].message.content)
    // All of it on one multiplexed connection.
    expect(h2.stats()).toMatchObject({ connectionsOpened: 1, multiplexed: 1, errors: 0 })
    const log = readFileSync(process.env.NGINX_ACCESS_LOG as string, 'utf8')
    expect(log).toContain('HTTP/2.0')
  } finally {
    await h1.destroy()
    await h2.destroy()
  }
})

test('nginx ending each connection with GOAWAY after 7 streams: 400 concurrent calls with retry: false all succeed, none counted as a retry', async () => {
  const url = process.env.NGINX_GOAWAY_URL as string
  if (!url) throw new Error('run this suite with test-real/run.sh (npm run test:real)')
  const ca = readFileSync(process.env.NGINX_CA as string, 'utf8')
  const c = new Client({ baseUrl: url, retry: false, allowH2: true, connect: { ca } })
  try {
    for (let round = 0; round < 2; round++) {
      const settled = await Promise.allSettled(Array.from({ length: 400 }, () => c.chat(ask)))
      const failed = settled.filter((r) => r.status === 'rejected') as PromiseRejectedResult[]
      expect(failed.map((f) => `${f.reason.code}: ${f.reason.message}`)).toEqual([])
      for (const r of settled) expect((r as PromiseFulfilledResult<any>).value.choices[0].message.content).toBe('from nginx')
    }
    const stats = c.stats()
    expect(stats).toMatchObject({ retries: 0, errors: 0, requests: 800 })
    // 7 streams a connection: the calls were spread over many, each ended by the server.
    expect(stats.connectionsOpened).toBeGreaterThanOrEqual(800 / 7)
  } finally {
    await c.destroy()
  }
})
