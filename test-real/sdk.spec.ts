// The drop-in paths against the real llama.cpp server: embeddings through llmpool, and the
// OpenAI SDK running on client.fetch.
import OpenAI from 'openai'
import { Client } from '../index.js'

const baseUrl = process.env.LLM_BASE_URL as string
const ask = { model: 'gemma', max_tokens: 16, temperature: 0, messages: [{ role: 'user' as const, content: 'Name a fruit.' }] }

let client: Client

beforeAll(() => {
  if (!baseUrl) throw new Error('run this suite with test-real/run.sh (npm run test:real)')
  client = new Client({ baseUrl, retry: false })
})
afterAll(() => client.destroy())

test('embeddings from the llama.cpp server', async () => {
  const res: any = await client.embeddings({ model: 'gemma', input: ['a red apple', 'a green pear'] })
  expect(res.object).toBe('list')
  expect(res.data).toHaveLength(2)
  // llama-cpp-python returns one vector per token for a model without pooling (Gemma): an array
  // of arrays. Either way there are numbers, and the two inputs differ.
  const flat = (e: unknown): number[] => (Array.isArray(e) ? e.flat(Infinity as 1) : []) as number[]
  const [a, b] = res.data.map((d: any) => flat(d.embedding))
  expect(a.length).toBeGreaterThan(100)
  expect(a.every((x: unknown) => typeof x === 'number')).toBe(true)
  expect(a).not.toEqual(b)
})

test('the OpenAI SDK on client.fetch gives what llmpool gives', async () => {
  const sdk = new OpenAI({ baseURL: baseUrl, apiKey: 'unused', fetch: client.fetch, maxRetries: 0 })
  const direct = await client.chat(ask)
  const viaSdk = await sdk.chat.completions.create(ask)
  expect(viaSdk.choices[0].message.content).toBe(direct.choices[0].message.content)
  let streamed = ''
  for await (const chunk of await sdk.chat.completions.create({ ...ask, stream: true })) streamed += chunk.choices[0]?.delta?.content ?? ''
  expect(streamed).toBe(direct.choices[0].message.content)
  const err = await sdk.chat.completions.create({ ...ask, max_tokens: 4000, messages: [{ role: 'user', content: 'word '.repeat(2000) }] }).catch((e) => e)
  expect(err).toBeInstanceOf(OpenAI.APIError)
  expect(err.status).toBe(400)
})
