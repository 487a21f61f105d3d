// `npx llmpool bench` against the embedded mock prints its table.
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { server, sendJson } from './helpers'

const cli = join(__dirname, '..', 'bin', 'llmpool.js')

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    )
  })
}

function table(stdout: string): Record<string, string> {
  const rows: Record<string, string> = {}
  for (const line of stdout.split('\n')) {
    const m = /^ {2}(requests|wall time|req\/s|latency p50|latency p99|TTFT p50|TTFT p99|tokens\/s|errors|sockets used)\s+(.*)$/.exec(line)
    if (m) rows[m[1]] = m[2]
  }
  return rows
}

test('bench against the embedded mock prints progress and the final table', async () => {
  const { code, stdout } = await run(['bench', '--requests', '40', '--concurrency', '4'])
  expect(code).toBe(0)
  expect(stdout).toMatch(/40\/40 done, 0 failed/)
  const rows = table(stdout)
  expect(rows.requests).toBe('40 (40 ok, 0 failed)')
  expect(Number.parseFloat(rows['req/s'])).toBeGreaterThan(0)
  expect(rows['latency p50']).toMatch(/^\d+\.\d ms$/)
  expect(Number.parseFloat(rows['tokens/s'])).toBeGreaterThan(0)
  expect(rows.errors).toBe('none')
  expect(Number(rows['sockets used'])).toBeLessThanOrEqual(4)
})

test('bench --stream measures time to first token', async () => {
  const { code, stdout } = await run(['bench', '--requests', '20', '--concurrency', '5', '--stream'])
  expect(code).toBe(0)
  const rows = table(stdout)
  expect(rows.requests).toBe('20 (20 ok, 0 failed)')
  expect(rows['TTFT p50']).toMatch(/^\d+\.\d ms$/)
  expect(Number(rows['sockets used'])).toBeLessThanOrEqual(5)
})

test('bench against a failing endpoint counts errors by code and exits non-zero', async () => {
  const s = await server()
  s.setHandler(({ res }) => sendJson(res, 401, { error: { message: 'bad key' } }))
  const { code, stdout } = await run(['bench', '--url', s.url, '--requests', '6', '--concurrency', '2'])
  expect(code).toBe(1)
  expect(table(stdout).errors).toBe('ERR_HTTP_STATUS: 6')
})

test('bad arguments are refused with usage', async () => {
  const { code, stderr } = await run(['bench', '--requests', 'many'])
  expect(code).toBe(2)
  expect(stderr).toContain('--requests must be a positive integer')
})
