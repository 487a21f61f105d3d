#!/usr/bin/env node
'use strict'
// `npx llmpool bench`: a load test for OpenAI-compatible endpoints through llmpool's pool, with a
// live progress line and a final table. Without --url it runs against the embedded mock server.

const { parseArgs } = require('node:util')
const { Client } = require('..')
const { startMockServer, openaiHandler } = require('../mock/server.js')
const { percentile, renderReport } = require('./report.js')

const USAGE = `usage: llmpool bench [options]

  --url URL            API root (default: an embedded mock server; env OPENAI_BASE_URL)
  --api-key KEY        API key (default: env OPENAI_API_KEY)
  --model NAME         model (default: env OPENAI_MODEL or gpt-4o-mini)
  --requests N         total calls (default 200)
  --concurrency N      calls at once (default 16)
  --connections N      pool size (default: the concurrency)
  --max-tokens N       max_tokens per call (default 64)
  --stream             use chatStream() and measure time to first token
  --report FILE        also write one self-contained HTML page of the run (charts inline)
  -h, --help           this text`

function positiveInt(name, value, fallback) {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`)
  return n
}

async function bench(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string' },
      'api-key': { type: 'string' },
      model: { type: 'string' },
      requests: { type: 'string' },
      concurrency: { type: 'string' },
      connections: { type: 'string' },
      'max-tokens': { type: 'string' },
      stream: { type: 'boolean', default: false },
      report: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) return console.log(USAGE)
  const requests = positiveInt('requests', values.requests, 200)
  const concurrency = positiveInt('concurrency', values.concurrency, 16)
  const connections = positiveInt('connections', values.connections, concurrency)
  const maxTokens = positiveInt('max-tokens', values['max-tokens'], 64)
  const model = values.model ?? process.env.OPENAI_MODEL ?? 'gpt-4o-mini'
  let url = values.url ?? process.env.OPENAI_BASE_URL
  let mock
  if (!url) {
    // A model-like mock: 10–30 ms before the answer, a streamed chunk every 2 ms.
    mock = await startMockServer({
      chunkDelay: 2,
      handler: async (ctx) => {
        await new Promise((r) => setTimeout(r, 10 + Math.random() * 20))
        return openaiHandler(ctx)
      },
    })
    url = mock.url
  }
  const client = new Client({ baseUrl: url, apiKey: values['api-key'] ?? process.env.OPENAI_API_KEY, connections })
  const mode = values.stream ? 'chatStream' : 'chat'
  console.log(`llmpool bench: ${requests} ${mode}() calls, ${concurrency} at once, ${connections} connections, ${url}${mock ? ' (embedded mock)' : ''}`)

  const latencies = []
  // With --report: every request (start, latency, first token, outcome) and the pool over time.
  const samples = []
  const poolSamples = []
  const errors = new Map()
  let done = 0
  let tokens = 0
  const body = (i) => ({ model, max_tokens: maxTokens, messages: [{ role: 'user', content: `load test request ${i}` }] })

  async function one(i) {
    const began = performance.now()
    let ttft
    try {
      if (values.stream) {
        for await (const chunk of client.chatStream(body(i))) {
          if (ttft === undefined) {
            ttft = performance.now() - began
            latencies.push(ttft)
          }
          if (chunk.choices?.[0]?.delta?.content) tokens += 1
        }
      } else {
        const completion = await client.chat(body(i))
        latencies.push(performance.now() - began)
        tokens += completion.usage?.completion_tokens ?? 0
      }
      samples.push({ at: began - started, latency: performance.now() - began, ttft, ok: true })
    } catch (e) {
      const code = e.code ?? 'ERR_UNKNOWN'
      errors.set(code, (errors.get(code) ?? 0) + 1)
      samples.push({ at: began - started, latency: performance.now() - began, ttft, ok: false, code })
    }
    done += 1
  }

  const startedAt = new Date()
  const started = performance.now()
  const samplePool = () => {
    const s = client.stats()
    poolSamples.push({ at: performance.now() - started, connected: s.connected, running: s.running, queued: s.queued })
  }
  const sampler = values.report ? setInterval(samplePool, 100) : null
  if (values.report) samplePool()
  const tty = process.stdout.isTTY
  const progress = () => {
    const s = client.stats()
    const failed = [...errors.values()].reduce((a, b) => a + b, 0)
    const elapsed = (performance.now() - started) / 1000
    return `  ${done}/${requests} done, ${failed} failed, ${(done / Math.max(elapsed, 1e-3)).toFixed(1)} req/s | running ${s.running} queued ${s.queued} connected ${s.connected}`
  }
  const ticker = setInterval(() => (tty ? process.stdout.write(`\r${progress()}`) : console.log(progress())), tty ? 100 : 1000)
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(concurrency, requests) }, async () => {
      while (next < requests) await one(next++)
    }),
  )
  clearInterval(ticker)
  if (sampler) {
    clearInterval(sampler)
    samplePool()
  }
  console.log(tty ? `\r${progress()}` : progress())
  const wall = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  const stats = client.stats()
  const failed = [...errors.values()].reduce((a, b) => a + b, 0)
  const label = values.stream ? 'TTFT' : 'latency'
  const rows = [
    ['requests', `${requests} (${requests - failed} ok, ${failed} failed)`],
    ['wall time', `${wall.toFixed(2)} s`],
    ['req/s', (requests / wall).toFixed(1)],
    [`${label} p50`, `${percentile(latencies, 0.5).toFixed(1)} ms`],
    [`${label} p99`, `${percentile(latencies, 0.99).toFixed(1)} ms`],
    ['tokens/s', (tokens / wall).toFixed(1)],
    ['errors', errors.size ? [...errors].map(([code, n]) => `${code}: ${n}`).join(', ') : 'none'],
    ['sockets used', String(stats.connectionsOpened)],
  ]
  console.log('')
  for (const [name, value] of rows) console.log(`  ${name.padEnd(14)}${value}`)
  if (values.report) {
    // The URL as shown: never credentials (the API key is not in it either).
    const shown = new URL(url)
    shown.username = ''
    shown.password = ''
    const settings = [
      ['endpoint', `${shown.href}${mock ? ' (embedded mock: 10–30 ms before the answer, a chunk every 2 ms)' : ''}`],
      ['model', model],
      ['mode', values.stream ? 'chatStream() (time to first token)' : 'chat()'],
      ['requests', String(requests)],
      ['concurrency', String(concurrency)],
      ['connections', String(connections)],
      ['max tokens', String(maxTokens)],
      ['llmpool', require('../package.json').version],
      ['runtime', `node ${process.versions.node} on ${process.platform}-${process.arch}`],
    ]
    const html = renderReport({ settings, startedAt, wallSeconds: wall, samples, pool: poolSamples, summary: rows.filter(([name]) => name !== 'errors') })
    require('node:fs').writeFileSync(values.report, html)
    console.log(`  report        ${values.report}`)
  }
  await client.close()
  if (mock) await mock.close()
  if (failed > 0) process.exitCode = 1
}

async function main(argv) {
  const [command, ...rest] = argv
  if (command === 'bench') return bench(rest)
  console.error(USAGE)
  process.exitCode = command === undefined || command === '-h' || command === '--help' ? 0 : 2
}

main(process.argv.slice(2)).catch((e) => {
  console.error(`llmpool: ${e.message}`)
  process.exitCode = 2
})
