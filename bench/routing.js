'use strict'
// `node bench/routing.js`: which `routing` should be the default? Two upstreams that differ the
// way real ones do: a fast one (20 ms a call) and a slow one (60 ms), each serving at most 8 calls
// at once (an inference server's batch slots; more wait in its queue). 24 callers make 1,200
// calls through one client per strategy; the script prints mean, p50 and p99 latency and the
// share of calls each upstream took. Servers are embedded mocks on 127.0.0.1.

const { Client } = require('..')
const { startMockServer, openaiHandler } = require('../mock/server.js')

const CALLERS = 24
const CALLS = 1200
const SLOTS = 8

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** A mock that takes `ms` per call with `SLOTS` calls at once, the rest queued in order. */
function upstream(ms) {
  let running = 0
  const queue = []
  return startMockServer({
    handler: async (ctx) => {
      if (running >= SLOTS) await new Promise((go) => queue.push(go))
      running++
      try {
        await sleep(ms)
        return openaiHandler(ctx)
      } finally {
        running--
        queue.shift()?.()
      }
    },
  })
}

async function measure(routing, fast, slow) {
  const client = new Client({
    upstreams: [
      { name: 'fast', baseUrl: fast.url },
      { name: 'slow', baseUrl: slow.url },
    ],
    routing,
    retry: false,
  })
  const latencies = []
  const served = { fast: 0, slow: 0 }
  let next = 0
  const caller = async () => {
    while (next < CALLS) {
      next++
      const t0 = performance.now()
      const { response } = await client.chat({ model: 'm', messages: [{ role: 'user', content: 'route me' }] }, { withResponse: true })
      latencies.push(performance.now() - t0)
      served[response.upstream]++
    }
  }
  const started = performance.now()
  await Promise.all(Array.from({ length: CALLERS }, caller))
  const elapsed = performance.now() - started
  await client.close()
  latencies.sort((a, b) => a - b)
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]
  return {
    routing,
    mean: latencies.reduce((a, b) => a + b, 0) / latencies.length,
    p50: at(0.5),
    p99: at(0.99),
    callsPerSecond: (CALLS / elapsed) * 1000,
    fastShare: served.fast / CALLS,
  }
}

async function main() {
  const fast = await upstream(20)
  const slow = await upstream(60)
  console.log(`two upstreams (20 ms and 60 ms a call, ${SLOTS} slots each), ${CALLERS} callers, ${CALLS} calls per strategy\n`)
  console.log('| routing | mean ms | p50 ms | p99 ms | calls/s | share on the fast upstream |')
  console.log('| --- | --- | --- | --- | --- | --- |')
  for (const routing of ['least-busy', 'latency', 'weighted']) {
    const r = await measure(routing, fast, slow)
    console.log(`| ${r.routing} | ${r.mean.toFixed(1)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.callsPerSecond.toFixed(0)} | ${(r.fastShare * 100).toFixed(0)} % |`)
  }
  await fast.close()
  await slow.close()
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
