// Shared test helpers: the mock server, a client factory that closes what it made, and waits.
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { Client } from '../index.js'
import type { ClientOptions } from '../index.js'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const mock = require('../mock/server.js')

export const { startMockServer, sendJson, completion, openaiHandler, chunk, pieces } = mock

export type MockServer = {
  url: string
  origin: string
  port: number
  accepted: number
  requests: Array<{ method: string; url: string; headers: Record<string, string>; raw: string; body: any }>
  sockets: Set<import('node:net').Socket>
  setHandler(handler: (ctx: { req: any; res: any; body: any; raw: string; index: number }) => unknown): void
  close(): Promise<void>
}

const opened: Array<{ close(): Promise<unknown> }> = []

/** Starts a mock server that is closed after the test file. */
export async function server(options: Record<string, unknown> = {}): Promise<MockServer> {
  const s = await startMockServer(options)
  opened.push(s)
  return s
}

/** A client for `s` that is destroyed after the test file. */
export function client(s: { url: string }, options: Partial<ClientOptions> = {}): Client {
  const c = new Client({ baseUrl: s.url, retry: false, ...options } as ClientOptions)
  opened.push({ close: () => c.destroy() })
  return c
}

afterAll(async () => {
  while (opened.length) await opened.pop()!.close()
})

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Polls `check` until it is true (at most `ms`), for state that settles asynchronously. */
export async function eventually(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not reached in time')
    await sleep(10)
  }
}

/** A handler that answers a completion with `content` after `ms` milliseconds. */
export function answerAfter(ms: number, content: string) {
  return async ({ res, body: b }: { res: any; body: any }) => {
    await sleep(ms)
    sendJson(res, 200, completion(b, content))
  }
}

export const body = (text = 'hi') => ({ model: 'mock-model', messages: [{ role: 'user' as const, content: text }] })

/** Settles a promise into its error (or fails the test if it resolved). */
export async function rejection(p: Promise<unknown>): Promise<any> {
  try {
    await p
  } catch (e) {
    return e
  }
  throw new Error('expected a rejection')
}

/** What one chat call in a child process came to, with the process warnings it emitted. */
export type ChildOutcome = { ok: boolean; code?: string; message?: string; warnings: string[] }

/**
 * One chat call in a child process whose environment is the test's, less any proxy variable,
 * plus `env`: jest gives each test file its own copy of process.env, which the native side
 * (proxies, NODE_EXTRA_CA_CERTS, SSL_CERT_FILE) does not see.
 */
export function callWithEnv(env: Record<string, string>, options: Record<string, unknown>): Promise<ChildOutcome> {
  const script = `
    const warnings = []
    process.on('warning', (w) => warnings.push(w.name + ': ' + w.message))
    const { Client } = require(${JSON.stringify(join(__dirname, '..', 'index.js'))})
    const c = new Client(JSON.parse(process.argv[1]))
    c.chat({ model: 'm', messages: [{ role: 'user', content: 'hi' }] })
      .then(() => ({ ok: true }), (e) => ({ ok: false, code: e.code, message: e.message }))
      .then((r) => setTimeout(() => { console.log(JSON.stringify({ ...r, warnings })); c.close() }, 10))
  `
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/_proxy$/i.test(k)))
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script, JSON.stringify(options)], { env: { ...clean, ...env }, timeout: 20_000 }, (error, stdout, stderr) =>
      error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(JSON.parse(stdout.trim().split('\n').pop()!)),
    )
  })
}

/** Waits for a response to drain (or close), leaving no listener behind either way. */
export function drainOrClose(res: any): Promise<void> {
  return new Promise((resume) => {
    const go = () => {
      res.off('drain', go)
      res.off('close', go)
      resume()
    }
    res.on('drain', go)
    res.on('close', go)
  })
}
