// The text fast path: chatStream(body).text() yields the first choice's content as strings,
// parsed in Rust; finalCompletion() merges in Rust what object mode merges in JS.
import { body, chunk, client, drainOrClose, rejection, server } from './helpers'
import type { MockServer } from './helpers'

/** A server that streams `chunks` (objects, or raw `data:` payload text) then [DONE]. */
async function streaming(chunks: Array<object | string>): Promise<MockServer> {
  const s = await server()
  s.setHandler(({ res }: any) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    for (const c of chunks) res.write(`data: ${typeof c === 'string' ? c : JSON.stringify(c)}\n\n`)
    res.end('data: [DONE]\n\n')
  })
  return s
}

const b = { model: 'm' }

test('text() yields the content; finalCompletion() equals object mode, field for field', async () => {
  const s = await streaming([
    chunk(b, { role: 'assistant', content: '' }),
    chunk(b, { content: 'Hel' }),
    chunk(b, { content: 'lo, "wörld" \\n ✓' }),
    chunk(b, { reasoning_content: 'because' }),
    { ...chunk(b, { tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'f', arguments: '{"a"' } }] }), system_fingerprint: 'fp' },
    chunk(b, { tool_calls: [{ index: 0, function: { name: 'f', arguments: ':1}' } }] }),
    chunk(b, {}, 'tool_calls'),
    { ...chunk(b, {}), choices: [], usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } },
  ])
  const c = client(s)
  const text = c.chatStream(body()).text()
  let joined = ''
  for await (const piece of text) {
    expect(typeof piece).toBe('string')
    joined += piece
  }
  expect(joined).toBe('Hello, "wörld" \\n ✓')
  const fromRust = await text.finalCompletion()
  const fromJs = await c.chatStream(body()).finalCompletion()
  expect(fromRust).toEqual(fromJs)
  expect(fromRust.choices[0].message).toMatchObject({
    content: 'Hello, "wörld" \\n ✓',
    reasoning_content: 'because',
    tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }],
  })
  expect(fromRust.usage).toEqual({ prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 })
  expect(fromRust.system_fingerprint).toBe('fp')
})

test('finalCompletion() alone on a text stream consumes it; toReadableStream() gives strings', async () => {
  const s = await streaming([chunk(b, { content: 'a' }), chunk(b, { content: 'b' }, 'stop')])
  const c = client(s)
  const done = await c.chatStream(body()).text().finalCompletion()
  expect(done.choices[0]).toMatchObject({ message: { content: 'ab', role: 'assistant', refusal: null }, finish_reason: 'stop' })
  const reader = c.chatStream(body()).text().toReadableStream().getReader()
  let all = ''
  for (let r = await reader.read(); !r.done; r = await reader.read()) all += r.value
  expect(all).toBe('ab')
})

test('text() after iteration started is a TypeError; failures reject as in object mode, redacted', async () => {
  const s = await streaming([chunk(b, { content: 'x' })])
  const c = client(s)
  const stream = c.chatStream(body())
  await stream.next()
  expect(() => stream.text()).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG' }))
  await stream.return()

  const key = 'sk-text-secret-123456'
  const bad = await streaming([chunk(b, { content: 'partial' }), { error: { message: `bad key ${key}` } }])
  const k = client(bad, { apiKey: key })
  const seen: string[] = []
  const err = await rejection(
    (async () => {
      for await (const piece of k.chatStream(body()).text()) seen.push(piece)
    })(),
  )
  expect(seen).toEqual(['partial'])
  expect(err.code).toBe('ERR_STREAM_ERROR')
  expect(JSON.stringify(err.error) + err.message).not.toContain(key)
  // A stream that ends without a finish reason or [DONE] is truncated in text mode too.
  const cut = await server()
  cut.setHandler(({ res }: any) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.end(`data: ${JSON.stringify(chunk(b, { content: 'half' }))}\n\n`)
  })
  const t = await rejection(client(cut).chatStream(body()).text().finalCompletion())
  expect(t.code).toBe('ERR_STREAM_TRUNCATED')
})

test('break in text mode cancels the request', async () => {
  const s = await server()
  let closed = false
  s.setHandler(({ res }: any) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    const t = setInterval(() => res.write(`data: ${JSON.stringify(chunk(b, { content: 'tick ' }))}\n\n`), 5)
    res.on('close', () => {
      clearInterval(t)
      closed = true
    })
  })
  const c = client(s)
  for await (const piece of c.chatStream(body()).text()) {
    expect(piece).toContain('tick')
    break
  }
  for (let i = 0; i < 100 && !closed; i++) await new Promise((r) => setTimeout(r, 10))
  expect(closed).toBe(true)
})

test('a slow text consumer gets the pieces that piled up as one string; the server is held back, no text lost', async () => {
  const s = await server()
  // 44 MB: far more than the window (1 MiB of text) and every socket buffer on the way can hold.
  const total = 40_000
  const piece = 'y'.repeat(1023) + ' '
  let written = 0
  s.setHandler(async ({ res }: any) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    let closed = false
    res.on('close', () => (closed = true))
    const line = `data: ${JSON.stringify(chunk(b, { content: piece }))}\n\n`
    while (written < total && !closed) {
      written += 1
      if (!res.write(line)) await drainOrClose(res)
    }
    if (!closed) res.end('data: [DONE]\n\n')
  })
  const c = client(s)
  const pieces: string[] = []
  let writtenWhileStalled = 0
  for await (const text of c.chatStream(body()).text()) {
    pieces.push(text)
    if (pieces.length === 1) {
      // The consumer stalls: what arrives meanwhile piles up, within the window.
      await new Promise((r) => setTimeout(r, 300))
      writtenWhileStalled = written
    }
  }
  const all = pieces.join('')
  console.log(`slow text consumer: ${pieces.length} pieces, server wrote ${writtenWhileStalled} chunks while it stalled`)
  expect(all.length).toBe(total * piece.length)
  expect(all).toBe(piece.repeat(total))
  // The window held the server back while the consumer stalled…
  expect(writtenWhileStalled).toBeLessThan(total)
  // …and what piled up came as one long string, not one per chunk.
  expect(pieces[1].length).toBeGreaterThan(10 * piece.length)
  expect(pieces.length).toBeLessThan(total / 2)
})
