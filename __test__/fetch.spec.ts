// client.fetch under the SDKs people already use: the real `openai` package and the Vercel AI
// SDK's OpenAI-compatible provider, against the embedded mock, on llmpool's transport.
import OpenAI from 'openai'
import { createOpenAICompatible } from '@ai-sdk/openai-compatible'
import { generateText, streamText } from 'ai'
import { body, client, completion, rejection, sendJson, server, sleep } from './helpers'

const sdkFor = (s: { url: string }, options: Record<string, unknown> = {}) => {
  const c = client(s, options)
  return { c, sdk: new OpenAI({ baseURL: s.url, apiKey: 'sk-sdk-key-0123456789', fetch: c.fetch, maxRetries: 0 }) }
}

describe('the OpenAI SDK on client.fetch', () => {
  test('chat: the request goes through the pool with the SDK headers, the answer is the SDK object', async () => {
    const s = await server()
    const { c, sdk } = sdkFor(s)
    for (let i = 0; i < 3; i++) {
      const res = await sdk.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: `call ${i}` }] })
      expect(res.choices[0].message.content).toBe(`Hello from the mock! You said: call ${i}`)
    }
    expect(s.requests[0].headers.authorization).toBe('Bearer sk-sdk-key-0123456789')
    expect(s.requests[0].headers['x-stainless-lang']).toBe('js')
    expect(s.accepted).toBe(1)
    expect(c.stats()).toMatchObject({ requests: 3, connectionsOpened: 1, reused: 2 })
  })

  test('stream: the SDK parses the SSE body as it streams', async () => {
    const s = await server({ chunkDelay: 2 })
    const { sdk } = sdkFor(s)
    const stream = await sdk.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'streamed words' }], stream: true })
    let text = ''
    let chunks = 0
    for await (const chunk of stream) {
      chunks++
      text += chunk.choices[0]?.delta?.content ?? ''
    }
    expect(text).toBe('Hello from the mock! You said: streamed words')
    expect(chunks).toBeGreaterThan(5)
  })

  test('embeddings and the Responses API', async () => {
    const s = await server()
    const { sdk } = sdkFor(s)
    const e = await sdk.embeddings.create({ model: 'e', input: ['a', 'b'] })
    expect(e.data).toHaveLength(2)
    const r = await sdk.responses.create({ model: 'm', input: 'hi' })
    expect(r.output_text).toBe('Hello from the mock! You said: hi')
  })

  test("an error status surfaces as the SDK's own error class, after llmpool's retries", async () => {
    const s = await server()
    let calls = 0
    s.setHandler(({ res }: any) => {
      calls++
      sendJson(res, calls === 1 ? 503 : 429, { error: { message: 'slow down', type: 'rate_limit' } }, { 'retry-after-ms': '10' })
    })
    const { sdk } = sdkFor(s, { retry: { maxRetries: 1, minTimeout: 10, maxTimeout: 100 } })
    const err = await rejection(sdk.chat.completions.create({ model: 'm', messages: [] }))
    expect(err).toBeInstanceOf(OpenAI.RateLimitError)
    expect(err.status).toBe(429)
    expect(err.error).toMatchObject({ message: 'slow down' })
    expect(calls).toBe(2)
    s.setHandler(({ res }: any) => sendJson(res, 404, { error: { message: 'no such model' } }))
    expect(await rejection(sdk.chat.completions.create({ model: 'x', messages: [] }))).toBeInstanceOf(OpenAI.NotFoundError)
  })

  test('abort: the SDK sees its own abort error', async () => {
    const s = await server()
    s.setHandler(async ({ res, body: b }: any) => {
      await sleep(1000)
      if (!res.destroyed) sendJson(res, 200, completion(b, 'late'))
    })
    const { sdk } = sdkFor(s)
    const controller = new AbortController()
    const pending = sdk.chat.completions.create({ model: 'm', messages: [] }, { signal: controller.signal })
    setTimeout(() => controller.abort(), 50)
    expect(await rejection(pending)).toBeInstanceOf(OpenAI.APIUserAbortError)
  })

  test("a connection failure is the SDK's APIConnectionError with llmpool's error as its cause", async () => {
    const s = await server()
    const url = s.url
    await s.close()
    const c = client({ url })
    const sdk = new OpenAI({ baseURL: url, apiKey: 'k', fetch: c.fetch, maxRetries: 0 })
    const err = await rejection(sdk.chat.completions.create({ model: 'm', messages: [] }))
    expect(err).toBeInstanceOf(OpenAI.APIConnectionError)
    expect(err.cause).toMatchObject({ code: 'ERR_CONNECT' })
  })
})

describe('client.fetch itself', () => {
  test('methods, query strings, request body types and response headers', async () => {
    const s = await server()
    s.setHandler(({ req, res, raw }: any) => sendJson(res, 200, { method: req.method, url: req.url, raw, type: req.headers['content-type'] ?? null }, { 'x-reply': 'yes' }))
    const c = client(s)
    const get = await c.fetch(`${s.url}/models?limit=2`)
    expect(get.status).toBe(200)
    expect(get.headers.get('x-reply')).toBe('yes')
    expect(await get.json()).toMatchObject({ method: 'GET', url: '/v1/models?limit=2', raw: '' })
    const bodies: Array<[unknown, string]> = [
      ['text', 'text'],
      [new TextEncoder().encode('bytes'), 'bytes'],
      [new Blob(['blob']), 'blob'],
      [new URLSearchParams({ a: '1' }), 'a=1'],
      [new ReadableStream({ start: (ctl) => (ctl.enqueue(new TextEncoder().encode('streamed')), ctl.close()) }), 'streamed'],
    ]
    for (const [b, raw] of bodies) {
      const res = await c.fetch(new URL(`${s.url}/echo`), { method: 'POST', body: b as any, duplex: 'half' } as any)
      expect((await res.json()).raw).toBe(raw)
    }
    const form = await (await c.fetch(`${s.url}/echo`, { method: 'POST', body: new URLSearchParams({ a: '1' }) })).json()
    expect(form.type).toMatch(/^application\/x-www-form-urlencoded/)
    const viaRequest = await c.fetch(new Request(`${s.url}/echo`, { method: 'PUT', body: 'from a Request' }))
    expect(await viaRequest.json()).toMatchObject({ method: 'PUT', raw: 'from a Request' })
  })

  test('another origin is refused clearly and nothing is sent', async () => {
    const s = await server()
    const err = await rejection(client(s).fetch('http://127.0.0.1:1/v1/chat/completions'))
    expect(err).toMatchObject({ code: 'ERR_INVALID_ARG' })
    expect(err.message).toContain(`reaches ${s.origin} only`)
  })

  test('a large body streams under flow control and cancelling it frees the connection', async () => {
    const s = await server()
    s.setHandler(async ({ res }: any) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      for (let i = 0; i < 2000 && !res.destroyed; i++) {
        if (!res.write(Buffer.alloc(16 * 1024, i % 256))) await new Promise((r) => res.once('drain', r))
      }
      res.end()
    })
    const c = client(s, { connections: 1 })
    const res = await c.fetch(`${s.url}/big`)
    let bytes = 0
    for await (const chunk of res.body as any) bytes += chunk.length
    expect(bytes).toBe(2000 * 16 * 1024)
    const again = await c.fetch(`${s.url}/big`)
    const reader = again.body!.getReader()
    await reader.read()
    await reader.cancel()
    s.setHandler(({ res: r }: any) => sendJson(r, 200, { ok: true }))
    await expect((await c.fetch(`${s.url}/after`)).json()).resolves.toEqual({ ok: true })
  })
})

describe('the Vercel AI SDK (OpenAI-compatible provider) on client.fetch', () => {
  test('generateText and streamText', async () => {
    const s = await server()
    const c = client(s)
    const provider = createOpenAICompatible({ name: 'mock', baseURL: s.url, apiKey: 'k', fetch: c.fetch })
    const generated = await generateText({ model: provider.chatModel('m'), prompt: 'from the AI SDK', maxRetries: 0 })
    expect(generated.text).toBe('Hello from the mock! You said: from the AI SDK')
    const streamed = streamText({ model: provider.chatModel('m'), prompt: 'streamed by the AI SDK', maxRetries: 0 })
    let text = ''
    for await (const part of streamed.textStream) text += part
    expect(text).toBe('Hello from the mock! You said: streamed by the AI SDK')
    expect(c.stats().requests).toBe(2)
  })
})

test('client.fetch and chat() share one pool', async () => {
  const s = await server()
  const c = client(s)
  await c.chat(body())
  const res = await c.fetch(`${s.url}/chat/completions`, { method: 'POST', body: JSON.stringify(body()), headers: { 'content-type': 'application/json' } })
  expect((await res.json()).object).toBe('chat.completion')
  expect(s.accepted).toBe(1)
})

test('Response bodies dropped unread are collected and free their connections (cap 4, 20 fetches)', async () => {
  const { execFile } = await import('node:child_process')
  const { join } = await import('node:path')
  const script = `
    const { Client } = require(${JSON.stringify(join(__dirname, '..', 'index.js'))})
    const { startMockServer } = require(${JSON.stringify(join(__dirname, '..', 'mock', 'server.js'))})
    ;(async () => {
      const s = await startMockServer()
      s.setHandler(async ({ res }) => {
        res.writeHead(200, { 'content-type': 'application/octet-stream' })
        for (let i = 0; i < 1000 && !res.destroyed; i++) if (!res.write(Buffer.alloc(64 * 1024))) await new Promise((r) => res.once('drain', r))
        res.end()
      })
      const c = new Client({ baseUrl: s.url, connections: 4, poolTimeout: 10000 })
      for (let i = 0; i < 20; i++) {
        await c.fetch(s.url + '/big') // the body is never read
        global.gc()
        await new Promise((r) => setTimeout(r, 20))
      }
      for (let i = 0; i < 10; i++) { global.gc(); await new Promise((r) => setTimeout(r, 50)) }
      console.log(JSON.stringify(c.stats()))
      await s.close()
    })()
  `
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, ['--expose-gc', '-e', script], { timeout: 60_000 }, (error, out) => (error ? reject(error) : resolve(out))),
  )
  // Twenty fetches went through four connection slots, and the process exited by itself.
  expect(JSON.parse(stdout.trim())).toMatchObject({ requests: 20, errors: 0, connected: 0, running: 0 })
}, 90_000)
