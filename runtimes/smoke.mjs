// The runtime smoke suite: what a user does first, under each JS runtime llmpool supports (Node
// 18, 20, 22, 24, Bun, Deno). Plain ES module with node:assert, no test framework, so that every
// runtime runs the same file: `node runtimes/smoke.mjs`, `bun runtimes/smoke.mjs`,
// `deno run -A runtimes/smoke.mjs`. Prints one line per check and exits non-zero on the first
// failure. Everything talks to an embedded mock server on 127.0.0.1.
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import OpenAI from 'openai'
import { Client, LlmpoolError } from '../index.mjs'

const require = createRequire(import.meta.url)
const { startMockServer, sendJson, completion } = require('../mock/server.js')

const runtime = typeof globalThis.Deno !== 'undefined' ? `deno ${globalThis.Deno.version.deno}` : typeof globalThis.Bun !== 'undefined' ? `bun ${globalThis.Bun.version}` : `node ${process.versions.node}`
const body = (content = 'hi') => ({ model: 'mock-model', messages: [{ role: 'user', content }] })

const checks = []
const check = (name, run) => checks.push({ name, run })

check('chat() answers', async ({ client }) => {
  const answer = await client.chat(body('ping'))
  assert.equal(answer.choices[0].message.content, 'Hello from the mock! You said: ping')
})

check('chatStream() with for await', async ({ client }) => {
  let text = ''
  let chunks = 0
  for await (const chunk of client.chatStream(body('stream me'))) {
    chunks++
    text += chunk.choices[0]?.delta?.content ?? ''
  }
  assert.ok(chunks > 2, `only ${chunks} chunks`)
  assert.equal(text, 'Hello from the mock! You said: stream me')
})

check('.text() and finalCompletion()', async ({ client }) => {
  const stream = client.chatStream(body('as text')).text()
  let text = ''
  for await (const piece of stream) text += piece
  assert.equal(text, 'Hello from the mock! You said: as text')
  const final = await stream.finalCompletion()
  assert.equal(final.choices[0].message.content, text)
  assert.equal(final.choices[0].finish_reason, 'stop')
})

check('the OpenAI SDK on client.fetch', async ({ client, server }) => {
  const sdk = new OpenAI({ baseURL: server.url, apiKey: 'sk-smoke', fetch: client.fetch, maxRetries: 0 })
  const answer = await sdk.chat.completions.create(body('via sdk'))
  assert.equal(answer.choices[0].message.content, 'Hello from the mock! You said: via sdk')
  let text = ''
  for await (const chunk of await sdk.chat.completions.create({ ...body('sdk stream'), stream: true })) text += chunk.choices[0]?.delta?.content ?? ''
  assert.equal(text, 'Hello from the mock! You said: sdk stream')
})

check('abort ends a call with ERR_ABORTED', async ({ client, server }) => {
  server.setHandler(async ({ res, body: b }) => {
    await new Promise((r) => setTimeout(r, 2000))
    if (!res.destroyed) sendJson(res, 200, completion(b, 'late'))
  })
  const controller = new AbortController()
  const started = Date.now()
  setTimeout(() => controller.abort(), 50)
  await assert.rejects(client.chat(body(), { signal: controller.signal }), (e) => e instanceof LlmpoolError && e.code === 'ERR_ABORTED')
  assert.ok(Date.now() - started < 1500, 'the abort did not end the call at once')
})

check('a bad option is a TypeError naming it', async () => {
  assert.throws(() => new Client({ baseUrl: 'http://127.0.0.1:1', connections: -1 }), (e) => e instanceof TypeError && /connections/.test(e.message))
  assert.throws(() => new Client({ baseUrl: 'not a url' }), (e) => e instanceof TypeError && /baseUrl/.test(e.message))
})

check('close() ends the client; later calls fail with ERR_CLOSED', async ({ client }) => {
  await client.chat(body())
  await client.close()
  await assert.rejects(client.chat(body()), (e) => e.code === 'ERR_CLOSED')
})

let failed = 0
for (const { name, run } of checks) {
  const server = await startMockServer()
  const client = new Client({ baseUrl: server.url, apiKey: 'sk-smoke', retry: false })
  try {
    await run({ client, server })
    console.log(`ok   ${runtime}: ${name}`)
  } catch (e) {
    failed++
    console.log(`FAIL ${runtime}: ${name}: ${e?.stack ?? e}`)
  } finally {
    client.destroy()
    await server.close()
  }
}
console.log(`${runtime}: ${checks.length - failed}/${checks.length} passed`)
// Exit explicitly: a runtime that keeps a handle open must not hang CI.
process.exit(failed === 0 ? 0 : 1)
