// llmpool against a real OpenAI-compatible server: llama-cpp-python's server with Gemma 3 270M
// (started by test-real/run.sh). The model is a base model: always max_tokens, temperature 0.
import { readFileSync } from 'node:fs'
import { Client } from '../index.js'

const baseUrl = process.env.LLM_BASE_URL as string
const serverLog = process.env.LLM_SERVER_LOG as string
const model = 'gemma'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const ask = (content: string, max_tokens = 24) => ({
  model,
  max_tokens,
  temperature: 0,
  messages: [{ role: 'user' as const, content }],
})

let client: Client

beforeAll(() => {
  if (!baseUrl) throw new Error('run this suite with test-real/run.sh (npm run test:real)')
  client = new Client({ baseUrl, retry: false, connections: 2 })
})

afterAll(() => client.destroy())

test('a completion, with usage', async () => {
  const res = await client.chat(ask('Name three colours.'))
  expect(res.object).toBe('chat.completion')
  expect(typeof res.choices[0].message.content).toBe('string')
  expect((res.choices[0].message.content ?? '').length).toBeGreaterThan(0)
  expect(['stop', 'length']).toContain(res.choices[0].finish_reason)
  expect(res.usage?.prompt_tokens).toBeGreaterThan(0)
  expect(res.usage?.completion_tokens).toBeGreaterThan(0)
  expect(res.usage?.total_tokens).toBe((res.usage?.prompt_tokens ?? 0) + (res.usage?.completion_tokens ?? 0))
})

test('a stream whose concatenated content equals the non-stream answer', async () => {
  const prompt = ask('Write one sentence about the sea.', 32)
  const plain = await client.chat(prompt)
  let streamed = ''
  let chunks = 0
  for await (const chunk of client.chatStream(prompt)) {
    chunks += 1
    streamed += chunk.choices[0]?.delta?.content ?? ''
  }
  expect(chunks).toBeGreaterThan(2)
  expect(streamed).toBe(plain.choices[0].message.content)
  const merged = await client.chatStream(prompt).finalCompletion()
  expect(merged.choices[0].message.content).toBe(plain.choices[0].message.content)
})

test('break mid-stream stops generation on the server', async () => {
  const logStart = readFileSync(serverLog, 'utf8').length
  let chunks = 0
  for await (const _ of client.chatStream(ask('Count from one to two hundred in words.', 400))) {
    if (++chunks === 3) break
  }
  // Cancellation is asynchronous: the slot frees a moment after `break`.
  for (let i = 0; i < 100 && client.stats().running > 0; i++) await sleep(10)
  expect(client.stats().running).toBe(0)
  // The server noticed the disconnect…
  for (let i = 0; i < 100 && !serverLogSince(logStart).includes('Disconnected from client'); i++) await sleep(50)
  expect(serverLogSince(logStart)).toContain('Disconnected from client')
  // …and is free again: the model runs one generation at a time, so this call is only answered
  // once the cancelled one has stopped.
  await expect(client.chat(ask('Say hi.', 4))).resolves.toMatchObject({ object: 'chat.completion' })
  // llama.cpp reports every generation that ran to its end with its token count (`/ N runs`);
  // none near the cancelled call's 400 tokens appears.
  const runs = [...serverLogSince(logStart).matchAll(/eval time =.*?\/\s+(\d+) runs/g)].map((m) => Number(m[1]))
  expect(runs.length).toBeGreaterThan(0)
  expect(Math.max(...runs)).toBeLessThan(100)
})

test('a call after more than 6 s idle succeeds with retries off (the server closes idle sockets at 5 s)', async () => {
  await client.chat(ask('Say yes.', 4))
  const opened = client.stats().connectionsOpened
  await sleep(6500)
  await expect(client.chat(ask('Say yes again.', 4))).resolves.toMatchObject({ object: 'chat.completion' })
  // The idle socket was closed by the server and a new one was opened.
  expect(client.stats().connectionsOpened).toBeGreaterThan(opened)
}, 60_000)

test('a prompt longer than the context window: the stream rejects with a clear error', async () => {
  const long = 'word '.repeat(2000)
  const err = await (async () => {
    try {
      for await (const _ of client.chatStream(ask(long, 8))) {
        // no chunk is expected
      }
    } catch (e) {
      return e as { code: string; message: string }
    }
    throw new Error('expected the stream to reject')
  })()
  // llama-cpp-python answers 200 with an empty stream and no [DONE].
  expect(err.code).toBe('ERR_STREAM_TRUNCATED')
  expect(err.message).toContain('ended before it was complete')
})

function serverLogSince(offset: number): string {
  return readFileSync(serverLog, 'utf8').slice(offset)
}
