// chatStream(): SSE decoded in Rust, yielded by an async iterator that never leaks or hangs.
import { body, chunk, client, completion, eventually, rejection, sendJson, server, sleep } from './helpers'
import type { MockServer } from './helpers'

const sseHead = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' }

const delta = (content: string, finish: string | null = null) =>
  JSON.stringify(chunk({ model: 'mock-model' }, finish ? {} : { content }, finish))

/** Serves `parts` (strings or bytes) as the SSE body, pausing `gap` ms between parts. */
function serveRaw(s: MockServer, parts: Array<string | Buffer>, { gap = 0, after = 'end' }: { gap?: number; after?: 'end' | 'destroy' | 'hang' } = {}) {
  s.setHandler(async ({ res }) => {
    res.writeHead(200, sseHead)
    for (const part of parts) {
      res.write(part)
      if (gap) await sleep(gap)
    }
    if (after === 'end') res.end()
    else if (after === 'destroy') {
      // Let what was written reach the client before the reset.
      await sleep(20)
      res.socket.destroy()
    }
  })
}

async function collect(stream: AsyncIterable<any>): Promise<string> {
  let text = ''
  for await (const c of stream) text += c.choices[0]?.delta?.content ?? ''
  return text
}

const standard = (line = '\n') =>
  [`data: ${delta('Hel')}`, '', `data: ${delta('lo')}`, '', `data: ${delta('', 'stop')}`, '', 'data: [DONE]', '', ''].join(line)

describe('SSE framing, end to end', () => {
  test.each([
    ['LF', '\n'],
    ['CRLF', '\r\n'],
    ['lone CR', '\r'],
  ])('%s line ends', async (_name, line) => {
    const s = await server()
    serveRaw(s, [standard(line)])
    expect(await collect(client(s).chatStream(body()))).toBe('Hello')
  })

  test('a BOM at the start and comments anywhere', async () => {
    const s = await server()
    serveRaw(s, ['\uFEFF: welcome\n\n', `: ping\ndata: ${delta('a')}\n\n`, ': ping\n\n', `data: ${delta('b')}\n\n`, `data: ${delta('', 'stop')}\n\ndata: [DONE]\n\n`])
    expect(await collect(client(s).chatStream(body()))).toBe('ab')
  })

  test('split at every byte offset, multi-byte UTF-8 intact', async () => {
    const s = await server()
    const text = `data: ${delta('héllo 你好 🌍')}\r\n\r\ndata: ${delta('', 'stop')}\r\n\r\ndata: [DONE]\r\n\r\n`
    const bytes = Buffer.from(text)
    const c = client(s)
    for (let i = 1; i < bytes.length; i++) {
      serveRaw(s, [bytes.subarray(0, i), bytes.subarray(i)], { gap: 2 })
      expect(await collect(c.chatStream(body()))).toBe('héllo 你好 🌍')
    }
    expect(s.accepted).toBe(1)
  })

  test('a 1 MiB event', async () => {
    const s = await server()
    const big = 'x'.repeat(1024 * 1024)
    serveRaw(s, [`data: ${delta(big)}\n\n`, `data: ${delta('', 'stop')}\n\ndata: [DONE]\n\n`])
    expect((await collect(client(s).chatStream(body()))).length).toBe(big.length)
  })

  test('an event over maxEventSize → ERR_SSE_EVENT_TOO_LARGE', async () => {
    const s = await server()
    serveRaw(s, [`data: ${delta('y'.repeat(5000))}\n\n`], { after: 'hang' })
    const err = await rejection(collect(client(s, { maxEventSize: 1000 }).chatStream(body())))
    expect(err.code).toBe('ERR_SSE_EVENT_TOO_LARGE')
  })

  test('invalid JSON in a data event → ERR_INVALID_RESPONSE', async () => {
    const s = await server()
    serveRaw(s, [`data: ${delta('ok')}\n\n`, 'data: {"choices": [\n\n'], { after: 'hang' })
    const c = client(s)
    expect(await rejection(collect(c.chatStream(body())))).toMatchObject({ code: 'ERR_INVALID_RESPONSE' })
    await eventually(() => c.stats().running === 0)
  })

  test('empty and whitespace-only data events are skipped; every event name is yielded', async () => {
    const s = await server()
    serveRaw(s, ['data:\n\n', 'data:   \n\n', `event: delta\ndata: ${delta('a')}\n\n`, `event: message\ndata: ${delta('b')}\n\n`, `data: ${delta('', 'stop')}\n\ndata: [DONE]\n\n`])
    expect(await collect(client(s).chatStream(body()))).toBe('ab')
  })

  test('nothing after [DONE] is parsed', async () => {
    const s = await server()
    serveRaw(s, [`data: ${delta('a')}\n\ndata: [DONE]\n\ndata: not json\n\nevent: error\ndata: {}\n\n`])
    expect(await collect(client(s).chatStream(body()))).toBe('a')
  })
})

describe('errors and endings', () => {
  test('an error event → ERR_STREAM_ERROR carrying the provider error', async () => {
    const s = await server()
    serveRaw(s, [`data: ${delta('a')}\n\n`, 'event: error\ndata: {"error":{"message":"model overloaded","type":"server_error"}}\n\n'], { after: 'hang' })
    const seen: string[] = []
    const err = await rejection(
      (async () => {
        for await (const c of client(s).chatStream(body())) seen.push(c.choices[0].delta.content)
      })(),
    )
    expect(seen).toEqual(['a'])
    expect(err).toMatchObject({ code: 'ERR_STREAM_ERROR', error: { message: 'model overloaded' } })
    expect(err.message).toContain('model overloaded')
  })

  test('a data payload with a top-level error → ERR_STREAM_ERROR', async () => {
    const s = await server()
    serveRaw(s, ['data: {"error":{"message":"context length exceeded","code":"context_length_exceeded"}}\n\n'])
    const err = await rejection(collect(client(s).chatStream(body())))
    expect(err).toMatchObject({ code: 'ERR_STREAM_ERROR', error: { code: 'context_length_exceeded' } })
  })

  test('[DONE] followed by a dropped connection ends cleanly', async () => {
    const s = await server()
    serveRaw(s, [`data: ${delta('ok')}\n\ndata: [DONE]\n\n`], { after: 'destroy' })
    const c = client(s)
    expect(await collect(c.chatStream(body()))).toBe('ok')
    await eventually(() => c.stats().running === 0)
  })

  test('no [DONE] but a finish_reason: ends normally', async () => {
    const s = await server()
    serveRaw(s, [`data: ${delta('ok')}\n\n`, `data: ${delta('', 'stop')}\n\n`])
    expect(await collect(client(s).chatStream(body()))).toBe('ok')
  })

  test('no [DONE] and no finish_reason → ERR_STREAM_TRUNCATED', async () => {
    const s = await server()
    serveRaw(s, [`data: ${delta('cut')}\n\n`])
    expect(await rejection(collect(client(s).chatStream(body())))).toMatchObject({ code: 'ERR_STREAM_TRUNCATED' })
  })

  test('an empty stream (200, no events) → ERR_STREAM_TRUNCATED', async () => {
    const s = await server()
    serveRaw(s, [])
    expect(await rejection(collect(client(s).chatStream(body())))).toMatchObject({ code: 'ERR_STREAM_TRUNCATED' })
  })

  test('an HTTP error before the stream starts → ERR_HTTP_STATUS, as chat()', async () => {
    const s = await server()
    s.setHandler(({ res }) => sendJson(res, 429, { error: { message: 'slow down' } }, { 'retry-after': '1' }))
    const err = await rejection(collect(client(s).chatStream(body())))
    expect(err).toMatchObject({ code: 'ERR_HTTP_STATUS', status: 429, error: { message: 'slow down' } })
    expect(err.headers['retry-after']).toBe('1')
  })

  test('a reset mid-stream rejects the iterator and the next request succeeds', async () => {
    const s = await server()
    serveRaw(s, [`data: ${delta('a')}\n\n`, `data: ${delta('b')}\n\n`], { gap: 20, after: 'destroy' })
    const c = client(s)
    expect(await rejection(collect(c.chatStream(body())))).toMatchObject({ code: 'ERR_SOCKET' })
    s.setHandler(({ res, body: b }) => sendJson(res, 200, completion(b, 'fine')))
    await expect(c.chat(body())).resolves.toMatchObject({ object: 'chat.completion' })
    expect(c.stats()).toMatchObject({ running: 0, queued: 0 })
  })
})

describe('timeouts', () => {
  test.each([
    ['without comments', false],
    ['with comments flowing', true],
  ])('firstTokenTimeout fires %s', async (_name, comments) => {
    const s = await server()
    s.setHandler(async ({ res }) => {
      res.writeHead(200, sseHead)
      const t = comments ? setInterval(() => res.write(': ping\n\n'), 20) : undefined
      res.on('close', () => clearInterval(t))
    })
    const c = client(s, { firstTokenTimeout: 200 })
    expect(await rejection(collect(c.chatStream(body())))).toMatchObject({ code: 'ERR_FIRST_TOKEN_TIMEOUT' })
    await eventually(() => c.stats().running === 0)
  })

  test('firstTokenTimeout also covers a server that holds the headers', async () => {
    const s = await server()
    s.setHandler(() => new Promise(() => {}))
    const err = await rejection(collect(client(s).chatStream(body(), { firstTokenTimeout: 150 })))
    expect(err.code).toBe('ERR_FIRST_TOKEN_TIMEOUT')
  })

  test.each([
    ['without comments', false],
    ['with comments flowing', true],
  ])('tokenTimeout fires %s after the first token', async (_name, comments) => {
    const s = await server()
    s.setHandler(async ({ res }) => {
      res.writeHead(200, sseHead)
      res.write(`data: ${delta('first')}\n\n`)
      const t = comments ? setInterval(() => res.write(': keep-alive\n\n'), 20) : undefined
      res.on('close', () => clearInterval(t))
    })
    const c = client(s)
    const got: string[] = []
    const err = await rejection(
      (async () => {
        for await (const ch of c.chatStream(body(), { tokenTimeout: 200 })) got.push(ch.choices[0].delta.content)
      })(),
    )
    expect(got).toEqual(['first'])
    expect(err.code).toBe('ERR_TOKEN_TIMEOUT')
  })

  test('a slow consumer is not a stalled model: tokenTimeout measures the network only', async () => {
    const s = await server()
    serveRaw(s, [...Array.from({ length: 5 }, (_, i) => `data: ${delta(String(i))}\n\n`), `data: ${delta('', 'stop')}\n\ndata: [DONE]\n\n`])
    let text = ''
    for await (const ch of client(s).chatStream(body(), { tokenTimeout: 100 })) {
      text += ch.choices[0]?.delta?.content ?? ''
      await sleep(150)
    }
    expect(text).toBe('01234')
  })
})

describe('cancellation frees the connection', () => {
  /** An endless stream: a chunk every 10 ms until the client goes away. */
  function endless(s: MockServer) {
    s.setHandler(async ({ res }) => {
      res.writeHead(200, sseHead)
      const t = setInterval(() => res.write(`data: ${delta('x')}\n\n`), 10)
      res.on('close', () => clearInterval(t))
    })
  }

  test('break after 2 chunks closes the connection and frees the slot', async () => {
    const s = await server()
    endless(s)
    const c = client(s)
    let n = 0
    for await (const _ of c.chatStream(body())) if (++n === 2) break
    await eventually(() => c.stats().running === 0)
    await eventually(() => s.sockets.size === 0)
    expect(c.stats()).toMatchObject({ running: 0, connected: 0, errors: 0 })
  })

  test('a throw inside the loop cancels too', async () => {
    const s = await server()
    endless(s)
    const c = client(s)
    await expect(
      (async () => {
        for await (const _ of c.chatStream(body())) throw new Error('consumer failed')
      })(),
    ).rejects.toThrow('consumer failed')
    await eventually(() => s.sockets.size === 0 && c.stats().running === 0)
  })

  test('signal abort mid-stream → ERR_ABORTED', async () => {
    const s = await server()
    endless(s)
    const c = client(s)
    const ac = new AbortController()
    let n = 0
    const err = await rejection(
      (async () => {
        for await (const _ of c.chatStream(body(), { signal: ac.signal })) if (++n === 3) ac.abort()
      })(),
    )
    expect(err.code).toBe('ERR_ABORTED')
    await eventually(() => s.sockets.size === 0 && c.stats().running === 0)
  })

  test('aborted streams are counted apart from failures: errors stays 0', async () => {
    // A relay whose own clients hung up: 20 aborts are 20 cancellations, not an error rate.
    const s = await server()
    endless(s)
    const c = client(s)
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        const ac = new AbortController()
        let n = 0
        const err = await rejection(
          (async () => {
            for await (const _ of c.chatStream(body(), { signal: ac.signal })) if (++n === 2) ac.abort()
          })(),
        )
        expect(err.code).toBe('ERR_ABORTED')
      }),
    )
    await eventually(() => c.stats().aborted === 20)
    expect(c.stats()).toMatchObject({ requests: 20, errors: 0, aborted: 20 })
    expect(c.metrics()).toMatch(/^llmpool_aborted_total\{[^}]*\} 20$/m)
  })

  test('destroy() mid-stream → ERR_CLOSED', async () => {
    const s = await server()
    endless(s)
    const c = client(s)
    const err = await rejection(
      (async () => {
        for await (const _ of c.chatStream(body())) await c.destroy()
      })(),
    )
    expect(err.code).toBe('ERR_CLOSED')
  })

  test('a stream that is never iterated sends nothing', async () => {
    const s = await server()
    const c = client(s)
    c.chatStream(body())
    await sleep(100)
    expect(s.requests).toHaveLength(0)
    expect(c.stats()).toMatchObject({ running: 0, connected: 0 })
  })
})

describe('the wire and reuse', () => {
  test('sends stream: true without mutating the caller body, and Accept: text/event-stream', async () => {
    const s = await server()
    const b = body('wire')
    await collect(client(s).chatStream(b))
    expect(b).toEqual(body('wire'))
    expect(s.requests[0].body).toEqual({ ...body('wire'), stream: true })
    expect(s.requests[0].headers.accept).toBe('text/event-stream')
  })

  test('20 sequential streams use 1 connection', async () => {
    const s = await server()
    const c = client(s)
    for (let i = 0; i < 20; i++) expect(await collect(c.chatStream(body(String(i))))).toBe(`Hello from the mock! You said: ${i}`)
    expect(s.accepted).toBe(1)
  })

  test('toReadableStream() yields the chunks', async () => {
    const s = await server()
    const reader = client(s).chatStream(body('rs')).toReadableStream().getReader()
    let text = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      text += value.choices[0]?.delta?.content ?? ''
    }
    expect(text).toBe('Hello from the mock! You said: rs')
  })
})

describe('finalCompletion()', () => {
  test('equals the non-streaming answer for the same mock reply', async () => {
    const s = await server()
    const c = client(s)
    const plain = await c.chat(body('same'))
    const merged = await c.chatStream({ ...body('same'), stream_options: { include_usage: true } }).finalCompletion()
    expect(merged).toEqual(plain)
  })

  test('merges a tool call split across many deltas', async () => {
    const s = await server()
    const args = '{"city":"Paris","unit":"celsius","days":[1,2,3]}'
    const toolCall = { id: 'call_abc', type: 'function', function: { name: 'get_weather', arguments: args } }
    const usage = { prompt_tokens: 9, completion_tokens: 12, total_tokens: 21 }
    const base = { id: 'chatcmpl-tool', object: 'chat.completion.chunk', created: 1, model: 'mock-model' }
    s.setHandler(async ({ res, body: b }) => {
      if (!b.stream) {
        return sendJson(res, 200, {
          id: 'chatcmpl-tool', object: 'chat.completion', created: 1, model: 'mock-model',
          choices: [{ index: 0, message: { role: 'assistant', content: null, refusal: null, tool_calls: [toolCall] }, logprobs: null, finish_reason: 'tool_calls' }],
          usage,
        })
      }
      res.writeHead(200, sseHead)
      const send = (choices: unknown[], extra = {}) => res.write(`data: ${JSON.stringify({ ...base, choices, ...extra })}\n\n`)
      send([{ index: 0, delta: { role: 'assistant', content: null, tool_calls: [{ index: 0, id: 'call_abc', type: 'function', function: { name: 'get_weather', arguments: '' } }] }, finish_reason: null }])
      for (let i = 0; i < args.length; i += 3) {
        send([{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: args.slice(i, i + 3) } }] }, finish_reason: null }])
      }
      send([{ index: 0, delta: {}, finish_reason: 'tool_calls' }])
      send([], { usage })
      res.end('data: [DONE]\n\n')
    })
    const c = client(s)
    const plain = await c.chat(body())
    const merged = await c.chatStream(body()).finalCompletion()
    expect(merged).toEqual(plain)
  })
})
