'use strict'
// One client, one scenario, in its own process: warm up, then measure wall time, CPU (every
// thread of the process: V8's and tokio's), per-request latency, peak RSS and sockets opened.
// Usage: node client.js <client> <scenario> <baseUrl>. Prints one line of JSON.

const clients = require('./clients.js')

const [name, scenario, baseUrl] = process.argv.slice(2)
// The admin endpoints are on the plain listener (run.js passes it when the client uses TLS).
const admin = new URL(process.env.BENCH_ADMIN ?? baseUrl).origin

const body = (maxTokens = 100) => ({
  model: 'bench-model',
  max_tokens: maxTokens,
  messages: [{ role: 'user', content: 'Say something about benchmarks.' }],
})

/** Runs `total` tasks with at most `concurrency` at once; returns per-task durations in ms. */
async function pool(total, concurrency, task) {
  const durations = new Array(total)
  let next = 0
  async function worker() {
    while (next < total) {
      const i = next++
      const t0 = performance.now()
      await task(i)
      durations[i] = performance.now() - t0
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker))
  return durations
}

/**
 * CPU time of the JS thread and of every other thread of the process (tokio's workers, libuv's
 * pool, V8's helpers), user and system, in µs, from /proc (Linux; null elsewhere). It says which
 * side of a hand-off a cost is on. /proc counts in 10 ms ticks: over S3's 2,000 calls one tick is
 * 5 µs per call. A thread that exits inside the window takes its time along.
 */
function threadTimes() {
  const fs = require('node:fs')
  let tids
  try {
    tids = fs.readdirSync('/proc/self/task')
  } catch {
    return null
  }
  const tickUs = 10_000 // USER_HZ is 100 on Linux
  const times = { jsUser: 0, jsSystem: 0, otherUser: 0, otherSystem: 0 }
  for (const tid of tids) {
    let stat
    try {
      stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
    } catch {
      continue // the thread ended
    }
    // Fields after the command name, which may hold spaces: utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const side = Number(tid) === process.pid ? 'js' : 'other'
    times[`${side}User`] += Number(fields[11]) * tickUs
    times[`${side}System`] += Number(fields[12]) * tickUs
  }
  return times
}

/** `after - before` per unit, each field rounded to 0.1 µs. */
function perUnit(before, after, units) {
  if (!before || !after) return undefined
  return Object.fromEntries(Object.keys(after).map((k) => [k, Math.round(((after[k] - before[k]) / units) * 10) / 10]))
}

async function acceptedSockets() {
  const res = await fetch(`${admin}/admin/connections`)
  return (await res.json()).accepted
}

async function resetSockets() {
  await fetch(`${admin}/admin/reset`, { method: 'POST' })
}

// `steady`: warmed in windows of `steady` calls until two windows in a row agree on CPU per unit
// within 5%, and at least `warmup[0]` calls (V8 keeps tiering a client's code up for thousands of
// requests; a comparison must see every client at its steady state).
const scenarios = {
  // S0: a cold start: require() and the client's construction (inside `clients[name]`) and one
  // call, in a fresh process; measured as the whole process's CPU and time since it started.
  S0: { connections: 1, warmup: [0, 1], run: [1, 1], kind: 'chat', cold: true },
  // S1: non-streaming throughput.
  S1: { connections: 64, warmup: [3000, 64], run: [20_000, 64], kind: 'chat', steady: 1000 },
  // S2: streaming throughput, 100 chunks per stream.
  S2: { connections: 256, warmup: [200, 256], run: [2000, 256], kind: 'stream', delay: 0, steady: 200 },
  S2d: { connections: 256, warmup: [100, 256], run: [2000, 256], kind: 'stream', delay: 1 },
  // S3: sequential latency, over one connection and with a pool of 64 (the lone call).
  S3: { connections: 1, warmup: [3000, 1], run: [2000, 1], kind: 'chat', steady: 1000 },
  S3c64: { connections: 64, warmup: [3000, 1], run: [2000, 1], kind: 'chat', steady: 1000 },
  // S4: sockets opened under load with a cap, and for sequential calls.
  S4c: { connections: 20, warmup: [0, 1], run: [1000, 200], kind: 'chat', sockets: true },
  S4s: { connections: 20, warmup: [0, 1], run: [1000, 1], kind: 'chat', sockets: true },
  // S5: 1,000 concurrent streams held open (100 chunks, 20 ms apart: ~2 s each).
  S5: { connections: 1000, warmup: [50, 50], run: [1000, 1000], kind: 'stream', delay: 20 },
  // S6: gateway scale, every stream open at once (50 chunks, 20 ms apart: ~1 s each); failures
  // are counted, not fatal.
  S6a: { connections: 1000, warmup: [50, 50], run: [1000, 1000], kind: 'stream', delay: 20, chunks: 50, countErrors: true },
  S6b: { connections: 4000, warmup: [50, 50], run: [4000, 4000], kind: 'stream', delay: 20, chunks: 50, countErrors: true },
  S6c: { connections: 10000, warmup: [50, 50], run: [10000, 10000], kind: 'stream', delay: 20, chunks: 50, countErrors: true },
}

async function main() {
  const s = scenarios[scenario]
  if (!s) throw new Error(`unknown scenario ${scenario}`)
  const client = clients[name]({ baseUrl, connections: s.connections })
  const headers = s.delay ? { 'x-chunk-delay-ms': String(s.delay) } : {}
  let chunks = 0
  let errors = 0
  const task =
    s.kind === 'chat'
      ? async () => {
          const r = await client.chat(body())
          if (!r.choices) throw new Error('bad completion')
        }
      : async () => {
          try {
            const n = await client.stream(body(s.chunks ?? 100), headers)
            chunks += n
          } catch (e) {
            if (!s.countErrors) throw e
            errors++
          }
        }
  if (s.cold) {
    await task()
    const cpu = process.cpuUsage() // since the process started
    const wallMs = performance.now() // since the process started
    const cpuUs = cpu.user + cpu.system
    const rss = process.memoryUsage().rss / 1048576
    await client.close()
    console.log(JSON.stringify({
      client: name, scenario, requests: 1, chunks: 0, wallMs, perSecond: 0, cpuUsPerUnit: cpuUs,
      userShare: cpu.user / cpuUs, p50: wallMs, p99: wallMs, rssPeakMiB: rss, rssGrowthMiB: 0, errors: 0, warmed: 0,
    }))
    process.exit(0)
  }
  let warmed = 0
  let steady
  if (s.steady) {
    // Windows until two in a row agree within 5% (and the minimum is done), at most 40.
    let previous
    for (let window = 0; window < 40; window++) {
      const before = process.cpuUsage()
      const chunksBefore = chunks
      await pool(s.steady, s.warmup[1], task)
      warmed += s.steady
      const used = process.cpuUsage(before)
      const units = s.kind === 'chat' ? s.steady : Math.max(1, chunks - chunksBefore)
      const perUnit = (used.user + used.system) / units
      steady = previous !== undefined && Math.abs(perUnit - previous) / previous <= 0.05
      if (steady && warmed >= s.warmup[0]) break
      previous = perUnit
    }
  } else if (s.warmup[0] > 0) {
    await pool(s.warmup[0], s.warmup[1], task)
    warmed = s.warmup[0]
  }
  chunks = 0
  errors = 0
  if (s.sockets) await resetSockets()
  global.gc?.()
  const rssBefore = process.memoryUsage().rss
  let rssPeak = rssBefore
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 5)
  const threads0 = threadTimes()
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const durations = await pool(s.run[0], s.run[1], task)
  const wallMs = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  const threads1 = threadTimes()
  clearInterval(sampler)
  rssPeak = Math.max(rssPeak, process.memoryUsage().rss)
  const sockets = s.sockets ? await acceptedSockets() : undefined
  durations.sort((a, b) => a - b)
  const cpuUs = cpu.user + cpu.system
  const result = {
    client: name,
    scenario,
    requests: s.run[0],
    chunks,
    wallMs,
    perSecond: s.kind === 'chat' ? (s.run[0] / wallMs) * 1000 : (chunks / wallMs) * 1000,
    cpuUsPerUnit: s.kind === 'chat' ? cpuUs / s.run[0] : cpuUs / Math.max(chunks, 1),
    userShare: cpu.user / cpuUs,
    // µs per unit on the JS thread and on the others (results.json only).
    threadsUsPerUnit: perUnit(threads0, threads1, s.kind === 'chat' ? s.run[0] : Math.max(chunks, 1)),
    p50: durations[Math.floor(durations.length * 0.5)],
    p99: durations[Math.floor(durations.length * 0.99)],
    rssPeakMiB: rssPeak / 1048576,
    rssGrowthMiB: (rssPeak - rssBefore) / 1048576,
    sockets,
    errors,
    warmed,
    steady,
  }
  await client.close()
  console.log(JSON.stringify(result))
  process.exit(0)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
