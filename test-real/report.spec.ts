// `npx llmpool bench --report` makes a page people look at: it is opened in a real headless
// Chromium (the Debian package; .ci/run installs it), whose rendered DOM must hold every chart
// with its marks, and whose screenshot must show them (not blank: the charts' blue is there).
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { readPng } from './png'

const run = promisify(execFile)
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { startMockServer, openaiHandler, sendJson } = require('../mock/server.js')

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => {
  try {
    readFileSync(p)
    return true
  } catch {
    return false
  }
})

/** Headless Chromium with the flags this closed network needs; a fresh profile each time. */
async function chromium(dir: string, ...args: string[]): Promise<string> {
  if (!CHROMIUM) throw new Error('chromium is not installed: apt-get install -y chromium')
  const profile = mkdtempSync(join(dir, 'profile-'))
  const { stdout } = await run(
    CHROMIUM,
    ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--hide-scrollbars', `--user-data-dir=${profile}`, ...args],
    { maxBuffer: 64 * 1024 * 1024, timeout: 60_000 },
  )
  return stdout
}

const count = (html: string, pattern: RegExp) => (html.match(pattern) ?? []).length

test('the bench report renders in Chromium: settings, both histograms, percentiles, throughput with errors, the pool', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'llmpool-report-'))
  // A model-like server that fails one call in ten, so that errors show over time.
  let n = 0
  const server = await startMockServer({
    chunkDelay: 1,
    handler: async (ctx: any) => {
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 10))
      // 400: not retried, so each one is a failed call.
      if (++n % 10 === 0) return sendJson(ctx.res, 400, { error: { message: 'bad request' } })
      return openaiHandler(ctx)
    },
  })
  try {
    const report = join(dir, 'report.html')
    const bench = await run(
      process.execPath,
      [join(__dirname, '..', 'bin', 'llmpool.js'), 'bench', '--url', server.url, '--api-key', 'sk-report-secret-key', '--requests', '400', '--concurrency', '16', '--stream', '--report', report],
      { timeout: 60_000 },
    ).catch((e) => e) // one call in ten failed: exit code 1, by design
    expect(bench.stdout).toContain(`report        ${report}`)
    const html = readFileSync(report, 'utf8')
    // Self-contained: no script, nothing fetched; the key shows nowhere.
    expect(html).not.toMatch(/<script|<link|src=|@import|url\(/)
    expect(html).not.toContain('sk-report-secret-key')

    // The DOM as Chromium rendered it.
    const dom = await chromium(dir, '--dump-dom', `file://${report}`)
    const chart = (id: string) => dom.slice(dom.indexOf(`<figure id="${id}"`), dom.indexOf('</figure>', dom.indexOf(`<figure id="${id}"`)))
    expect(dom).toContain('<th>concurrency</th><td>16</td>')
    expect(dom).toContain('ERR_HTTP_STATUS: 40')
    expect(count(chart('chart-latency'), /<rect class="bar"/g)).toBeGreaterThan(3)
    expect(count(chart('chart-ttft'), /<rect class="bar"/g)).toBeGreaterThan(3)
    const paths = [...chart('chart-percentiles').matchAll(/<path class="series" data-series="(p\d+)" d="M[\d. ]+L[\d. L]+"/g)].map((m) => m[1])
    expect(paths).toEqual(['p50', 'p90', 'p99'])
    expect(count(chart('chart-throughput'), /<rect class="bar ok"/g)).toBeGreaterThan(3)
    expect(count(chart('chart-throughput'), /<rect class="bar failed"/g)).toBeGreaterThan(0)
    expect([...chart('chart-pool').matchAll(/data-series="(\w+)" d="M/g)].map((m) => m[1])).toEqual(['connected', 'running', 'queued'])

    // The picture: not blank, and the charts' blue (#2563eb) covers a real area.
    const shot = join(dir, 'report.png')
    await chromium(dir, '--window-size=800,2600', `--screenshot=${shot}`, `file://${report}`)
    const { width, height, rgba } = readPng(readFileSync(shot))
    expect([width, height]).toEqual([800, 2600])
    let inked = 0
    let blue = 0
    for (let i = 0; i < rgba.length; i += 4) {
      const [r, g, b] = [rgba[i], rgba[i + 1], rgba[i + 2]]
      if (r < 240 || g < 240 || b < 240) inked++
      if (Math.abs(r - 0x25) < 12 && Math.abs(g - 0x63) < 12 && Math.abs(b - 0xeb) < 12) blue++
    }
    expect(inked / (width * height)).toBeGreaterThan(0.05)
    expect(blue).toBeGreaterThan(20_000)
  } finally {
    await server.close()
    rmSync(dir, { recursive: true, force: true })
  }
})
