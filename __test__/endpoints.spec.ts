// Every JSON endpoint natively: request(), embeddings(), stream() and responsesStream() against
// the embedded mock, with the same errors, aborts and hostile-payload handling as chat().
import { body, client, rejection, sendJson, server, sleep } from './helpers'

describe('request() and embeddings()', () => {
  test('embeddings: POST {baseUrl}/embeddings, the parsed answer', async () => {
    const s = await server()
    const c = client(s)
    const res = await c.embeddings({ model: 'emb', input: ['one', 'two words'] })
    expect(res).toMatchObject({ object: 'list', model: 'emb', data: [{ index: 0 }, { index: 1 }] })
    expect(res.data[0].embedding).toHaveLength(8)
    expect(s.requests[0]).toMatchObject({ method: 'POST', url: '/v1/embeddings' })
  })

  test('request: any path under baseUrl, the Responses API included', async () => {
    const s = await server()
    const res: any = await client(s).request('/responses', { model: 'm', input: 'hello' })
    expect(res).toMatchObject({ object: 'response', status: 'completed', output_text: 'Hello from the mock! You said: hello' })
    expect(s.requests[0].url).toBe('/v1/responses')
  })

  test('error statuses, retries and redaction as chat()', async () => {
    const s = await server()
    let calls = 0
    s.setHandler(({ res, req }: any) =>
      calls++ === 0
        ? sendJson(res, 503, { error: { message: 'busy' } })
        : sendJson(res, 401, { error: { message: `bad key ${req.headers.authorization}` } }),
    )
    const c = client(s, { apiKey: 'sk-endpoint-secret-1', retry: { minTimeout: 10, maxTimeout: 50 } })
    const err = await rejection(c.embeddings({ model: 'e', input: 'x' }))
    expect(err).toMatchObject({ code: 'ERR_HTTP_STATUS', status: 401, attempts: 2 })
    expect(err.message).not.toContain('sk-endpoint-secret-1')
    expect(c.stats()).toMatchObject({ requests: 1, errors: 1, retries: 1 })
  })

  test('a 200 error body or a non-object body is a typed error', async () => {
    const s = await server()
    s.setHandler(({ res }: any) => sendJson(res, 200, { error: { message: 'quota' } }))
    expect((await rejection(client(s).request('/moderations', { input: 'x' }))).code).toBe('ERR_PROVIDER_ERROR')
    s.setHandler(({ res }: any) => sendJson(res, 200, [1, 2]))
    expect((await rejection(client(s).embeddings({ model: 'e', input: 'x' }))).code).toBe('ERR_INVALID_RESPONSE')
  })

  test('abort', async () => {
    const s = await server()
    s.setHandler(async ({ res }: any) => {
      await sleep(1000)
      sendJson(res, 200, {})
    })
    const controller = new AbortController()
    const pending = client(s).request('/embeddings', { model: 'e', input: 'x' }, { signal: controller.signal })
    setTimeout(() => controller.abort(), 50)
    expect((await rejection(pending)).code).toBe('ERR_ABORTED')
  })

  test('a path that is not a path is a TypeError; nothing is sent', async () => {
    const s = await server()
    const c = client(s)
    for (const path of ['embeddings', '//evil.example/x', 'http://evil.example/x', '/a b']) {
      const err = await rejection(c.request(path, {}))
      expect(err).toMatchObject({ code: 'ERR_INVALID_ARG' })
    }
    expect(s.requests).toHaveLength(0)
  })
})

describe('stream() and responsesStream()', () => {
  test('responsesStream: typed events in order, ending at response.completed', async () => {
    const s = await server({ chunkDelay: 1 })
    const events: any[] = []
    for await (const e of client(s).responsesStream({ model: 'm', input: 'stream me' })) events.push(e)
    expect(events[0]).toMatchObject({ event: 'response.created', data: { type: 'response.created' } })
    expect(events.at(-1)).toMatchObject({ event: 'response.completed', data: { response: { status: 'completed' } } })
    const text = events.filter((e) => e.event === 'response.output_text.delta').map((e) => e.data.delta).join('')
    expect(text).toBe('Hello from the mock! You said: stream me')
    expect(s.requests[0].body).toMatchObject({ stream: true })
  })

  test('finalResponse() resolves with the completed response', async () => {
    const s = await server()
    const response = await client(s).responsesStream({ model: 'm', input: 'x' }).finalResponse()
    expect(response).toMatchObject({ id: 'resp_mock', status: 'completed' })
  })

  test('a response.failed or error event rejects with ERR_STREAM_ERROR and the provider message', async () => {
    const s = await server()
    const c = client(s, { apiKey: 'sk-stream-secret-2' })
    s.setHandler(({ res, req }: any) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write('event: response.created\ndata: {"type":"response.created","response":{"id":"r"}}\n\n')
      res.end(`event: response.failed\ndata: ${JSON.stringify({ type: 'response.failed', response: { error: { message: `overloaded ${req.headers.authorization}` } } })}\n\n`)
    })
    const seen: string[] = []
    const err = await rejection(
      (async () => {
        for await (const e of c.responsesStream({ model: 'm', input: 'x' })) seen.push(e.event)
      })(),
    )
    expect(seen).toEqual(['response.created'])
    expect(err.code).toBe('ERR_STREAM_ERROR')
    expect(err.message).toContain('overloaded')
    expect(err.message).not.toContain('sk-stream-secret-2')
    s.setHandler(({ res }: any) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.end('event: error\ndata: {"type":"error","message":"rate limited"}\n\n')
    })
    expect(await rejection(c.responsesStream({ model: 'm', input: 'x' }).finalResponse())).toMatchObject({ code: 'ERR_STREAM_ERROR' })
  })

  test('a Responses stream cut before its end is ERR_STREAM_TRUNCATED; data that is not JSON is ERR_INVALID_RESPONSE', async () => {
    const s = await server()
    const c = client(s)
    s.setHandler(({ res }: any) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write('event: response.created\ndata: {"type":"response.created"}\n\n')
      res.end('event: response.output_text.delta\ndata: {"delta":"par"}\n\n')
    })
    expect((await rejection(c.responsesStream({ model: 'm', input: 'x' }).finalResponse())).code).toBe('ERR_STREAM_TRUNCATED')
    s.setHandler(({ res }: any) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.end('event: tick\ndata: not json\n\n')
    })
    expect((await rejection(c.stream('/anything', {}).next())).code).toBe('ERR_INVALID_RESPONSE')
  })

  test('stream(): any SSE endpoint, any JSON data, complete at the end of the body', async () => {
    const s = await server()
    s.setHandler(({ res }: any) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.end('event: progress\ndata: 1\n\nevent: progress\ndata: [2]\n\ndata: {"done":true}\n\n')
    })
    const items: any[] = []
    for await (const e of client(s).stream('/jobs/42/events', { stream: false, follow: true })) items.push(e)
    expect(items).toEqual([
      { event: 'progress', data: 1 },
      { event: 'progress', data: [2] },
      { event: 'message', data: { done: true } },
    ])
    // A body with its own `stream` member is sent as given.
    expect(s.requests[0]).toMatchObject({ url: '/v1/jobs/42/events', body: { stream: false, follow: true } })
  })

  test('break cancels the request and frees the connection', async () => {
    const s = await server({ chunkDelay: 20 })
    const c = client(s, { connections: 1 })
    let n = 0
    for await (const _ of c.responsesStream({ model: 'm', input: 'one two three four five six' })) if (++n === 2) break
    await expect(c.request('/responses', { model: 'm', input: 'after' })).resolves.toMatchObject({ status: 'completed' })
  })
})
