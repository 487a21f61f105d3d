// close() and destroy(), and a process that never closes its client still exits by itself.
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { answerAfter, body, client, eventually, rejection, server, sleep } from './helpers'

describe('close()', () => {
  test('lets in-flight calls finish, closes every socket, then refuses new calls without sending', async () => {
    const s = await server()
    s.setHandler(answerAfter(200, 'done'))
    const c = client(s, { connections: 2 })
    const inFlight = [c.chat(body('a')), c.chat(body('b')), c.chat(body('c'))]
    await sleep(50)
    const closed = c.close()
    const results = await Promise.all(inFlight)
    expect(results.map((r) => r.choices[0].message.content)).toEqual(['done', 'done', 'done'])
    await closed
    await eventually(() => s.sockets.size === 0)
    expect(c.stats()).toMatchObject({ connected: 0, running: 0, queued: 0 })
    const err = await rejection(c.chat(body('after')))
    expect(err.code).toBe('ERR_CLOSED')
    expect(s.requests).toHaveLength(3)
  })

  test('close() twice resolves both times', async () => {
    const s = await server()
    const c = client(s)
    await c.chat(body())
    await c.close()
    await expect(c.close()).resolves.toBeUndefined()
  })
})

describe('destroy()', () => {
  test('aborts in-flight calls with ERR_CLOSED and closes their sockets', async () => {
    const s = await server()
    s.setHandler(() => new Promise(() => {}))
    const c = client(s, { connections: 1 })
    const running = c.chat(body('running'))
    const queued = c.chat(body('queued'))
    await eventually(() => s.requests.length === 1 && c.stats().queued === 1)
    await c.destroy()
    expect(await rejection(running)).toMatchObject({ code: 'ERR_CLOSED' })
    expect(await rejection(queued)).toMatchObject({ code: 'ERR_CLOSED' })
    await eventually(() => s.sockets.size === 0)
    expect(await rejection(c.chat(body()))).toMatchObject({ code: 'ERR_CLOSED' })
    expect(s.requests).toHaveLength(1)
  })

  test('sends nothing new: in 100 tries, queued calls never reach the server after destroy()', async () => {
    const s = await server()
    s.setHandler(() => new Promise(() => {}))
    for (let i = 0; i < 100; i++) {
      const before = s.requests.length
      const c = client(s, { connections: 1 })
      const calls = [c.chat(body('running')), c.chat(body('queued 1')), c.chat(body('queued 2'))]
      await eventually(() => s.requests.length === before + 1 && c.stats().queued === 2)
      c.destroy()
      for (const call of calls) expect(await rejection(call)).toMatchObject({ code: 'ERR_CLOSED' })
      // Anything a grant let through after destroy() would arrive within a few milliseconds.
      await sleep(5)
      expect(s.requests.length - before).toBe(1)
    }
  })
})

describe('close() with queued calls', () => {
  test('in 100 tries, queued calls run to their end on the connections close() drains', async () => {
    const s = await server()
    s.setHandler(answerAfter(15, 'done'))
    for (let i = 0; i < 100; i++) {
      const before = s.requests.length
      const c = client(s, { connections: 1 })
      const calls = [c.chat(body('running')), c.chat(body('queued 1')), c.chat(body('queued 2'))]
      // Every other try closes at once, before the calls reached the pool.
      if (i % 2 === 0) await eventually(() => c.stats().queued === 2, 5_000)
      const closed = c.close()
      const results = await Promise.all(calls)
      expect(results.map((r) => r.choices[0].message.content)).toEqual(['done', 'done', 'done'])
      await closed
      expect(s.requests.length - before).toBe(3)
      expect(await rejection(c.chat(body('after')))).toMatchObject({ code: 'ERR_CLOSED' })
    }
  })
})

/** Runs `script` in a child Node with `arg`; it fails if still alive after 20 s (then killed). */
function runScript(script: string, arg: string): Promise<{ failed: boolean; stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['-e', script, arg], { timeout: 20_000 }, (error, out) => resolve({ failed: error !== null, stdout: out }))
  })
}

describe('process exit', () => {
  test('a script that makes one call and never closes the client exits by itself', async () => {
    const s = await server()
    const script = `
      const { Client } = require(${JSON.stringify(join(__dirname, '..', 'index.js'))})
      const c = new Client({ baseUrl: process.argv[1] })
      c.chat({ model: 'm', messages: [{ role: 'user', content: 'bye' }] }).then((r) => console.log(r.choices[0].message.content))
    `
    // The idle connection it leaves behind would be kept for 90 s.
    const { failed, stdout } = await runScript(script, s.url)
    expect(failed).toBe(false)
    expect(stdout.trim()).toBe('Hello from the mock! You said: bye')
  })

  test('a script that abandons a running stream and destroys the client exits by itself', async () => {
    const s = await server()
    s.setHandler(({ res }) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      const chunk = JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content: 'x' }, finish_reason: null }] })
      const t = setInterval(() => res.write(`data: ${chunk}\n\n`), 10)
      res.on('close', () => clearInterval(t))
    })
    const script = `
      const { Client } = require(${JSON.stringify(join(__dirname, '..', 'index.js'))})
      const c = new Client({ baseUrl: process.argv[1] })
      ;(async () => {
        const it = c.chatStream({ model: 'm', messages: [] })[Symbol.asyncIterator]()
        await it.next()
        await c.destroy()
        console.log('destroyed')
      })()
    `
    const { failed, stdout } = await runScript(script, s.url)
    expect(failed).toBe(false)
    expect(stdout.trim()).toBe('destroyed')
  })
})

describe('worker threads', () => {
  test('clients in worker threads one after another: every worker is answered', async () => {
    // The last Node environment using the addon exiting (a worker's) shuts napi's runtime down,
    // and the next one builds a new runtime: a call must be started on that one, not on a
    // runtime remembered from before (which failed every call of the second worker).
    const s = await server()
    const index = JSON.stringify(join(__dirname, '..', 'index.js'))
    const script = `
      const { Worker } = require('node:worker_threads')
      const inWorker = \`
        const { workerData, parentPort } = require('node:worker_threads')
        const { Client } = require(${index.replace(/\\/g, '\\\\')})
        const c = new Client({ baseUrl: workerData, retry: false })
        c.chat({ model: 'm', messages: [{ role: 'user', content: 'w' }] }).then(
          async (r) => { parentPort.postMessage(r.choices[0].message.content); await c.close() },
          (e) => parentPort.postMessage('failed: ' + e.code),
        )
      \`
      ;(async () => {
        for (let i = 0; i < 3; i++) {
          const answer = await new Promise((resolve) => {
            const w = new Worker(inWorker, { eval: true, workerData: process.argv[1] })
            w.once('message', resolve)
            w.once('error', (e) => resolve('error: ' + e.message))
          })
          console.log(answer)
          await new Promise((r) => setTimeout(r, 100))
        }
      })()
    `
    const { stdout } = await runScript(script, s.url)
    expect(stdout.trim().split('\n')).toEqual(Array(3).fill('Hello from the mock! You said: w'))
  })
})
