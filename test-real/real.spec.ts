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
  const before = countGenerationReports()
  let chunks = 0
  for await (const _ of client.chatStream(ask('Count from one to two hundred in words.', 400))) {
    if (++chunks === 3) break
  }
  expect(client.stats().running).toBe(0)
  // llama.cpp reports every finished generation with its token count ("… / N runs"); the
  // cancelled one must have stopped far short of its 400 tokens.
  const report = await waitForNextGenerationReport(before)
  expect(report.tokens).toBeLessThan(100)
  // And the server is free again: a new call is answered.
  await expect(client.chat(ask('Say hi.', 4))).resolves.toMatchObject({ object: 'chat.completion' })
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

type Report = { tokens: number }

/** Lines like `llama_perf_context_print:        eval time = … ms /    17 runs   (…)`. */
function generationReports(): Report[] {
  const text = readFileSync(serverLog, 'utf8')
  return [...text.matchAll(/^\s*llama_perf_context_print:\s+eval time =.*?\/\s+(\d+) runs/gm)].map((m) => ({ tokens: Number(m[1]) }))
}

function countGenerationReports(): number {
  return generationReports().length
}

async function waitForNextGenerationReport(seen: number): Promise<Report> {
  for (let i = 0; i < 300; i++) {
    const reports = generationReports()
    if (reports.length > seen) return reports[seen]
    await sleep(100)
  }
  throw new Error('the server reported no finished generation')
}
