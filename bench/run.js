'use strict'
// `npm run bench`: builds and starts the Rust mock server (one thread), then runs every scenario
// for every client in its own child process, alternating clients (A,B,C,D,A,B,C,D,…) over 3
// rounds, and prints medians with min–max and ratios to undici. Writes RESULTS.md.
//
// Options: ROUNDS (default 3), SCENARIOS (comma list, default all), CLIENTS (default all),
// PIN=0 to run unpinned (by default, with taskset and two or more cores, the mock server runs on
// core 0 and each client on core 1).

const { execFileSync, spawn } = require('node:child_process')
const { readFileSync, writeFileSync } = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const ROUNDS = Number(process.env.ROUNDS ?? 3)
const CLIENTS = (process.env.CLIENTS ?? 'raw,undici,openai,llmpool').split(',')
const SCENARIOS = (process.env.SCENARIOS ?? 'S1,S2,S2d,S3,S3c64,S4c,S4s,S5').split(',')

const PIN = process.env.PIN !== '0' && os.cpus().length >= 2 && (() => {
  try {
    execFileSync('taskset', ['-c', '0', 'true'])
    return true
  } catch {
    return false
  }
})()
/** The command and arguments that run `argv` on `core` (pinned) or anywhere. */
const onCore = (core, argv) => (PIN ? ['taskset', ['-c', String(core), ...argv]] : [argv[0], argv.slice(1)])

const DESCRIPTIONS = {
  S0: 'cold start: require(), a client and one call in a fresh process (whole-process CPU and time)',
  S1: 'non-streaming, 64 concurrent, 20,000 requests',
  S2: 'streaming, 256 concurrent × 100 chunks, 2,000 streams, no delay',
  S2d: 'streaming, 256 concurrent × 100 chunks, 2,000 streams, 1 ms per chunk',
  S3: 'sequential latency, 2,000 requests, connections: 1',
  S3c64: 'sequential latency, 2,000 requests, connections: 64 (the lone call with a pool)',
  S4c: '1,000 requests at concurrency 200, connections: 20',
  S4s: '1,000 sequential requests',
  S5: '1,000 concurrent streams held open (~2 s each)',
  S6a: 'scale: 1,000 open streams, 50 chunks 20 ms apart',
  S6b: 'scale: 4,000 open streams, 50 chunks 20 ms apart',
  S6c: 'scale: 10,000 open streams, 50 chunks 20 ms apart',
}

function buildServer() {
  const manifest = path.join(__dirname, 'mock-server', 'Cargo.toml')
  execFileSync('cargo', ['build', '--release', '--quiet', '--manifest-path', manifest], { stdio: 'inherit' })
  return path.join(__dirname, 'mock-server', 'target', 'release', 'llmpool-bench-mock')
}

/** A CA and a certificate for 127.0.0.1 (openssl), for the TLS and HTTP/2 scenarios. */
function makeCertificates() {
  const dir = require('node:fs').mkdtempSync(path.join(os.tmpdir(), 'llmpool-bench-'))
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=bench CA')
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'server.csr', '-subj', '/CN=127.0.0.1')
  writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n')
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'cert.pem', '-days', '2', '-extfile', 'ext.cnf')
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') }
}

let ADMIN_URL
const TLS = CLIENTS.some((c) => /-(tls|h2)$/.test(c)) ? makeCertificates() : null

function startServer(binary) {
  return new Promise((resolve, reject) => {
    const env = TLS ? { ...process.env, TLS_CERT: TLS.cert, TLS_KEY: TLS.key } : process.env
    const [command, args] = onCore(0, [binary])
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'], env })
    child.stdout.setEncoding('utf8')
    let out = ''
    const onData = (text) => {
      out += text
      const plain = /^listening on (\S+)/m.exec(out)
      const tls = /^tls listening on (\S+)/m.exec(out)
      if (plain && (tls || !TLS)) {
        child.stdout.off('data', onData)
        resolve({ child, url: `${plain[1]}/v1`, tlsUrl: tls && `${tls[1]}/v1` })
      }
    }
    child.stdout.on('data', onData)
    child.once('exit', (code) => reject(new Error(`mock server exited ${code}`)))
  })
}

function runClient(client, scenario, url) {
  return new Promise((resolve, reject) => {
    const [command, args] = onCore(1, [process.execPath, '--expose-gc', path.join(__dirname, 'client.js'), client, scenario, url])
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: TLS ? { ...process.env, BENCH_CA: TLS.ca, BENCH_ADMIN: ADMIN_URL } : process.env,
    })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop())) : reject(new Error(`${client} ${scenario} exited ${code}`))))
  })
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

function fmt(n, digits = 1) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–'
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US')
  // Sub-millisecond latencies need their digits.
  return Math.abs(n) < 1 && n !== 0 ? n.toFixed(3) : n.toFixed(digits)
}

const METRICS = {
  S0: [['cpuUsPerUnit', 'process CPU µs'], ['wallMs', 'ms since process start'], ['rssPeakMiB', 'RSS MiB']],
  S1: [['perSecond', 'req/s'], ['cpuUsPerUnit', 'CPU µs/req'], ['p50', 'p50 ms'], ['p99', 'p99 ms'], ['rssPeakMiB', 'peak RSS MiB'], ['warmed', 'warm-up calls']],
  S2: [['perSecond', 'chunks/s'], ['cpuUsPerUnit', 'CPU µs/chunk'], ['rssPeakMiB', 'peak RSS MiB']],
  S2d: [['perSecond', 'chunks/s'], ['cpuUsPerUnit', 'CPU µs/chunk'], ['rssPeakMiB', 'peak RSS MiB']],
  S3: [['p50', 'p50 ms'], ['p99', 'p99 ms'], ['cpuUsPerUnit', 'CPU µs/req'], ['warmed', 'warm-up calls']],
  S3c64: [['p50', 'p50 ms'], ['p99', 'p99 ms'], ['cpuUsPerUnit', 'CPU µs/req'], ['warmed', 'warm-up calls']],
  S4c: [['sockets', 'sockets opened']],
  S4s: [['sockets', 'sockets opened']],
  S5: [['rssPeakMiB', 'peak RSS MiB'], ['rssGrowthMiB', 'RSS growth MiB'], ['cpuUsPerUnit', 'CPU µs/chunk']],
  S6a: [['rssPeakMiB', 'peak RSS MiB'], ['cpuUsPerUnit', 'CPU µs/chunk'], ['errors', 'errors']],
  S6b: [['rssPeakMiB', 'peak RSS MiB'], ['cpuUsPerUnit', 'CPU µs/chunk'], ['errors', 'errors']],
  S6c: [['rssPeakMiB', 'peak RSS MiB'], ['cpuUsPerUnit', 'CPU µs/chunk'], ['errors', 'errors']],
}

function table(results) {
  const lines = []
  for (const scenario of SCENARIOS) {
    lines.push(`\n### ${scenario}: ${DESCRIPTIONS[scenario]}\n`)
    const metrics = METRICS[scenario]
    // Warm-up calls are shown, not compared.
    const compared = metrics.filter(([key]) => key !== 'warmed')
    lines.push(`| client | ${metrics.map(([, label]) => `${label} (median, min–max)`).join(' | ')} | ${compared.map(([, label]) => `${label} ÷ undici`).join(' | ')} |`)
    lines.push(`| --- | ${metrics.map(() => '---').join(' | ')} | ${compared.map(() => '---').join(' | ')} |`)
    const base = {}
    for (const [key] of metrics) base[key] = median(results[scenario].undici?.map((r) => r[key]) ?? [NaN])
    for (const client of CLIENTS) {
      const runs = results[scenario][client] ?? []
      const cells = metrics.map(([key]) => {
        const xs = runs.map((r) => r[key])
        return `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`
      })
      const ratios = compared.map(([key]) => fmt(median(runs.map((r) => r[key])) / base[key], 2))
      lines.push(`| ${client} | ${cells.join(' | ')} | ${ratios.join(' | ')} |`)
    }
    // At concurrency 1, the latency each client adds over the raw node:net floor (what gateway
    // benchmarks publish), from the medians of this run.
    if (/^S3/.test(scenario) && results[scenario].raw) {
      const floor = (key) => median(results[scenario].raw.map((r) => r[key]))
      lines.push('', '| client | p50 over the raw floor, µs | p99 over the raw floor, µs |', '| --- | --- | --- |')
      for (const client of CLIENTS.filter((c) => c !== 'raw')) {
        const runs = results[scenario][client] ?? []
        const over = (key) => fmt((median(runs.map((r) => r[key])) - floor(key)) * 1000, 0)
        lines.push(`| ${client} | ${over('p50')} | ${over('p99')} |`)
      }
    }
    const unsteady = CLIENTS.flatMap((c) => (results[scenario][c] ?? []).filter((r) => r.steady === false).map(() => c))
    if (unsteady.length) lines.push('', `Not steady after 40 warm-up windows (measured anyway): ${[...new Set(unsteady)].join(', ')}.`)
  }
  return lines.join('\n')
}

function report(versions, results) {
  const cpus = os.cpus()
  const header = [
    '# llmpool benchmark results',
    '',
    `Date: ${versions.date}  `,
    `Machine: ${cpus.length} × ${cpus[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}  `,
    `Versions: ${Object.entries(versions).filter(([k]) => k !== 'date').map(([k, v]) => `${k} ${v}`).join(', ')}  `,
    `Rounds: ${ROUNDS}, clients alternating ${CLIENTS.join(', ')}; each run is its own process, warmed to steady state first (windows of calls until two in a row agree on CPU per unit within 5%, and at least 3,000 calls for S1 and S3). ${PIN ? 'Pinned: the mock on core 0, each client on core 1.' : 'Not pinned.'} ` +
      'The mock server is Rust on one thread (bench/mock-server). CPU is process.cpuUsage() of the client process (all its threads). ' +
      "Ratios are medians ÷ undici's median from this same run.",
  ].join('\n')
  const text = `${header}\n${table(results)}\n`
  writeFileSync(path.join(__dirname, 'RESULTS.md'), text)
  console.log(text)
}

async function main() {
  if (process.env.REPORT_ONLY) {
    // Re-renders RESULTS.md from the last run's results.json.
    const { versions, results } = JSON.parse(readFileSync(path.join(__dirname, 'results.json'), 'utf8'))
    return report(versions, results)
  }
  const binary = buildServer()
  const { child, url, tlsUrl } = await startServer(binary)
  ADMIN_URL = url
  const results = {}
  try {
    for (const scenario of SCENARIOS) {
      results[scenario] = {}
      for (let round = 1; round <= ROUNDS; round++) {
        for (const client of CLIENTS) {
          const r = await runClient(client, scenario, /-(tls|h2)$/.test(client) ? tlsUrl : url)
          ;(results[scenario][client] ??= []).push(r)
          process.stderr.write(`${scenario} round ${round} ${client}: ${JSON.stringify(r)}\n`)
        }
      }
    }
  } finally {
    child.kill()
  }
  // Saved first, so that a failure below loses no run.
  writeFileSync(path.join(__dirname, 'results.json'), JSON.stringify(results, null, 1))
  // Read from disk: some packages do not export their package.json.
  const version = (name) => JSON.parse(readFileSync(path.join(__dirname, 'node_modules', name, 'package.json'), 'utf8')).version
  const versions = {
    node: process.version,
    undici: version('undici'),
    openai: version('openai'),
    'eventsource-parser': version('eventsource-parser'),
    llmpool: require('../package.json').version,
    rustc: execFileSync('rustc', ['--version'], { encoding: 'utf8' }).trim(),
  }
  // The before of a before/after run: which commit the baseline clients were built from.
  if (process.env.LLMPOOL_BASELINE) {
    const rev = (dir) => execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()
    versions['baseline (LLMPOOL_BASELINE)'] = rev(process.env.LLMPOOL_BASELINE)
    versions['llmpool commit'] = rev(path.join(__dirname, '..'))
  }
  versions.date = new Date().toISOString()
  writeFileSync(path.join(__dirname, 'results.json'), JSON.stringify({ versions, results }, null, 1))
  report(versions, results)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
