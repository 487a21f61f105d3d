// HTTP/1.1 on the wire, against a raw TCP server that writes exactly the bytes a test gives it:
// the framings servers really use (chunked with extensions and trailers, split anywhere; 1xx
// before the answer; HTTP/1.0 bodies that end with the connection), the ones only a broken or
// hostile server sends, and when a connection may carry the next request. Every case ends in a
// result or a typed error, never a hang, and a connection whose state is in doubt is not reused.
import net from 'node:net'
import { Client } from '../index.js'
import { body, client, rejection } from './helpers'

type Answer = (request: string, socket: net.Socket) => void | Promise<void>

type WireServer = {
  url: string
  /** Requests as they arrived (head and body), in order. */
  requests: string[]
  /** Connections accepted so far. */
  accepted: number
  answer: Answer
  close(): Promise<void>
}

const servers: WireServer[] = []
afterAll(async () => {
  for (const s of servers) await s.close()
})

/** A server that reads each request (head + Content-Length body) and lets `answer` write. */
async function wireServer(answer: Answer): Promise<WireServer> {
  const sockets = new Set<net.Socket>()
  const state: WireServer = {
    url: '',
    requests: [],
    accepted: 0,
    answer,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy()
        srv.close(() => resolve())
      }),
  }
  const srv = net.createServer((socket) => {
    state.accepted++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let buffer = Buffer.alloc(0)
    socket.on('data', async (data) => {
      buffer = Buffer.concat([buffer, data])
      for (;;) {
        const end = buffer.indexOf('\r\n\r\n')
        if (end < 0) return
        const head = buffer.subarray(0, end).toString('latin1')
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0)
        if (buffer.length < end + 4 + length) return
        const request = buffer.subarray(0, end + 4 + length).toString('utf8')
        buffer = buffer.subarray(end + 4 + length)
        state.requests.push(request)
        await state.answer(request, socket)
      }
    })
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  state.url = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}/v1`
  servers.push(state)
  return state
}

const COMPLETION = JSON.stringify({
  id: 'c',
  object: 'chat.completion',
  created: 1,
  model: 'm',
  choices: [{ index: 0, message: { role: 'assistant', content: 'wire' }, finish_reason: 'stop' }],
})

const sse = (content: string, finish: string | null = null) =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content }, finish_reason: finish }] })}\n\n`

/** `text` in the chunked coding, one chunk per piece, with an extension on each. */
function chunked(pieces: string[], trailers = ''): string {
  return pieces.map((p) => `${Buffer.byteLength(p).toString(16)};x=y\r\n${p}\r\n`).join('') + `0\r\n${trailers}\r\n`
}

/** Writes `bytes` in pieces of `size`, one per turn, so the client sees every split. */
async function trickle(socket: net.Socket, bytes: string, size: number) {
  const buf = Buffer.from(bytes)
  for (let i = 0; i < buf.length; i += size) {
    socket.write(buf.subarray(i, i + size))
    await new Promise((r) => setImmediate(r))
  }
}

describe('framings', () => {
  test('chunked with extensions and trailers, written 7 bytes at a time; the connection is reused', async () => {
    const s = await wireServer((_, socket) =>
      trickle(socket, `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunked([COMPLETION.slice(0, 40), COMPLETION.slice(40)], 'X-Trailer: 1\r\n')}`, 7),
    )
    const c = client(s)
    for (let i = 0; i < 3; i++) expect((await c.chat(body())).choices[0].message.content).toBe('wire')
    expect(s.accepted).toBe(1)
  })

  test('a stream in chunks that split events, lines and CRLFs anywhere', async () => {
    const events = [sse('a'), sse('b'), sse('c', 'stop'), 'data: [DONE]\n\n'].join('')
    const pieces = [events.slice(0, 5), events.slice(5, 130), events.slice(130, 131), events.slice(131)]
    const s = await wireServer((_, socket) => trickle(socket, `HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n${chunked(pieces)}`, 3))
    const c = client(s)
    const completion = await c.chatStream(body()).finalCompletion()
    expect(completion.choices[0].message.content).toBe('abc')
    expect((await c.chatStream(body()).finalCompletion()).choices[0].message.content).toBe('abc')
    expect(s.accepted).toBe(1)
  })

  test('100 Continue and 103 Early Hints before the answer are skipped', async () => {
    const s = await wireServer((_, socket) => {
      socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n')
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${COMPLETION.length}\r\n\r\n${COMPLETION}`)
    })
    expect((await client(s).chat(body())).choices[0].message.content).toBe('wire')
  })

  test('HTTP/1.0 with a body that ends with the connection: read whole, connection not reused', async () => {
    const s = await wireServer((_, socket) => socket.end(`HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n${COMPLETION}`))
    const c = client(s)
    expect((await c.chat(body())).choices[0].message.content).toBe('wire')
    expect((await c.chat(body())).choices[0].message.content).toBe('wire')
    expect(s.accepted).toBe(2)
  })
})

describe('connections left in doubt are not reused', () => {
  test.each([
    ['bytes after the body', `HTTP/1.1 200 OK\r\nContent-Length: ${COMPLETION.length}\r\n\r\n${COMPLETION}HTTP/1.1 200 OK\r\n\r\n`],
    ['both Transfer-Encoding and Content-Length', `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n${chunked([COMPLETION])}`],
    ['Connection: close', `HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: ${COMPLETION.length}\r\n\r\n${COMPLETION}`],
  ])('%s: the call succeeds, the next one opens a new connection', async (_, answer) => {
    const s = await wireServer((_r, socket) => void socket.write(answer))
    const c = client(s)
    expect((await c.chat(body())).choices[0].message.content).toBe('wire')
    expect((await c.chat(body())).choices[0].message.content).toBe('wire')
    expect(s.accepted).toBe(2)
    expect(s.requests).toHaveLength(2)
  })

  test('bytes nobody asked for on an idle connection: it is closed, the next call gets a new one', async () => {
    const s = await wireServer(async (_, socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${COMPLETION.length}\r\n\r\n${COMPLETION}`)
      setTimeout(() => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'), 30)
    })
    const c = client(s)
    await c.chat(body())
    await new Promise((r) => setTimeout(r, 100))
    expect((await c.chat(body())).choices[0].message.content).toBe('wire')
    expect(s.accepted).toBe(2)
  })
})

describe('malformed answers end in ERR_INVALID_RESPONSE, sent once even with retries on, without a hang', () => {
  test.each([
    ['a chunk size that is not hex', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', /invalid chunked body/],
    ['a chunk size of 17 hex digits', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n', /chunk size too large/],
    ['chunk data longer than its size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n', /not followed by CRLF/],
    ['a bare LF after chunk data', `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${(3).toString(16)}\r\nabc\n0\r\n\r\n`, /not followed by CRLF/],
    ['a bare LF ending a chunk size line', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n', /invalid byte after a chunk size/],
    ['a bare LF inside a chunk extension', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\nabc\r\n0\r\n\r\n', /bare LF in a chunk extension/],
    ['HTTP/1.0 with Transfer-Encoding and keep-alive', 'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', /Transfer-Encoding in an HTTP\/1.0 response/],
    ['gzip, chunked (we never asked for a coding)', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', /only chunked is accepted/],
    ['a Transfer-Encoding that is not visible ASCII', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: ch\u00e9unked\r\n\r\n0\r\n\r\n', /only chunked is accepted/],
    ['conflicting Content-Length values', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello', /conflicting Content-Length/],
    ['a negative Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n', /invalid Content-Length/],
    ['not HTTP at all', 'SSH-2.0-OpenSSH_9.6\r\n\r\n', /invalid response head/],
    ['a status of four digits', 'HTTP/1.1 2000 OK\r\n\r\n', /invalid response head/],
    ['200 header fields', `HTTP/1.1 200 OK\r\n${'X-A: b\r\n'.repeat(200)}\r\n`, /more than 128 header fields/],
    ['a 300 KB header that never ends', `HTTP/1.1 200 OK\r\nX-Big: ${'x'.repeat(300_000)}`, /response head larger than/],
    ['101 Switching Protocols', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n', /switched protocols/],
  ])('%s', async (_, answer, message) => {
    const s = await wireServer((_r, socket) => {
      socket.write(answer, 'latin1')
      // A server that stops there and closes: nothing may wait for bytes that never come.
      setTimeout(() => socket.end(), 20)
    })
    // Retries on, with no wait: the server had the request, so it is not sent again.
    const err = await rejection(client(s, { retry: { maxRetries: 3, minTimeout: 1, maxTimeout: 1 } }).chat(body()))
    expect(err.code).toBe('ERR_INVALID_RESPONSE')
    expect(err.message).toMatch(message)
    expect(s.requests).toHaveLength(1)
  })

  test('a body cut short is a broken connection (ERR_SOCKET), a counted retry under the policy', async () => {
    const s = await wireServer((_r, socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n${COMPLETION}`)
      setTimeout(() => socket.end(), 20)
    })
    const err = await rejection(client(s, { retry: { maxRetries: 1, minTimeout: 1, maxTimeout: 1 } }).chat(body()))
    expect(err.code).toBe('ERR_SOCKET')
    expect(err.message).toMatch(/closed the connection before the body was complete/)
    expect(s.requests).toHaveLength(2)
  })

  test('a stream cut inside a chunk after two events: both are delivered, then ERR_SOCKET', async () => {
    const s = await wireServer((_r, socket) => {
      const events = sse('a') + sse('b')
      socket.end(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(events).toString(16)}\r\n${events}\r\n40\r\ndata: {"cut`)
    })
    const seen: string[] = []
    const err = await rejection(
      (async () => {
        for await (const chunk of client(s, { retry: false }).chatStream(body())) seen.push(chunk.choices[0].delta.content)
      })(),
    )
    expect(seen).toEqual(['a', 'b'])
    expect(err.code).toBe('ERR_SOCKET')
    expect(err.message).toMatch(/before the body was complete/)
  })
})

describe('an answer that comes while the body is being written', () => {
  /** A server that reads the first bytes of a request, answers `answer` and reads no more. */
  async function earlyServer(answer: string) {
    const seen = { connections: 0, heads: 0 }
    const sockets = new Set<net.Socket>()
    const srv = net.createServer((socket) => {
      seen.connections++
      sockets.add(socket)
      socket.on('error', () => {})
      socket.once('data', (data) => {
        seen.heads += (data.toString('latin1').match(/^POST /gm) ?? []).length
        socket.pause()
        socket.write(answer)
      })
    })
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
    const url = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}/v1`
    const close = () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        srv.close(() => resolve())
      })
    return { url, seen, close }
  }

  const huge = () => ({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(32 * 1024 * 1024) }] })

  test('a 413 while a 32 MB body is written is reported as it is, once, and the rest is not written', async () => {
    const s = await earlyServer('HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{"error":{"message":"request too large"}}'.replace('40', String(Buffer.byteLength('{"error":{"message":"request too large"}}'))))
    try {
      const c = new Client({ baseUrl: s.url, headersTimeout: 20_000, retry: { maxRetries: 3, minTimeout: 1, maxTimeout: 1 } })
      const err = await rejection(c.chat(huge()))
      expect(err.code).toBe('ERR_HTTP_STATUS')
      expect(err.status).toBe(413)
      expect(err.error).toEqual({ message: 'request too large' })
      expect(s.seen.connections).toBe(1)
      await c.close()
    } finally {
      await s.close()
    }
  })

  test('an early 503 is retried as retry.statusCodes says, on a new connection', async () => {
    const s = await earlyServer('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n')
    try {
      const c = new Client({ baseUrl: s.url, headersTimeout: 20_000, retry: { maxRetries: 1, minTimeout: 1, maxTimeout: 1 } })
      const err = await rejection(c.chat(huge()))
      expect(err.status).toBe(503)
      expect(s.seen.connections).toBe(2)
      await c.close()
    } finally {
      await s.close()
    }
  })
})

describe('the request on the wire', () => {
  test('origin form, Host, one Content-Length from the body, no Transfer-Encoding', async () => {
    const s = await wireServer((_r, socket) => void socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${COMPLETION.length}\r\n\r\n${COMPLETION}`))
    const c = client(s, { headers: { 'x-extra': 'yes' } })
    await c.chat(body('héllo'))
    const [head, sent] = s.requests[0].split('\r\n\r\n')
    const lines = head.split('\r\n')
    expect(lines[0]).toBe('POST /v1/chat/completions HTTP/1.1')
    const headers = Object.fromEntries(lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 2)]))
    expect(headers.host).toBe(new URL(s.url).host)
    expect(headers['x-extra']).toBe('yes')
    expect(Number(headers['content-length'])).toBe(Buffer.byteLength(sent))
    expect(headers['transfer-encoding']).toBeUndefined()
    expect(JSON.parse(sent).messages[0].content).toBe('héllo')
    expect(lines.filter((l) => /^content-length:/i.test(l))).toHaveLength(1)
  })
})

describe('bodies both ways', () => {
  test('a 300 KB request body arrives whole (written apart from its head)', async () => {
    const s = await wireServer((_r, socket) => void socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${COMPLETION.length}\r\n\r\n${COMPLETION}`))
    const text = 'x'.repeat(300_000)
    await client(s).chat(body(text))
    const sent = s.requests[0].split('\r\n\r\n')[1]
    expect(JSON.parse(sent).messages[0].content).toBe(text)
  })

  test('HEAD through fetch: a Content-Length with no body after it, and the connection goes on', async () => {
    const s = await wireServer((request, socket) =>
      void socket.write(request.startsWith('HEAD') ? 'HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n' : `HTTP/1.1 200 OK\r\nContent-Length: ${COMPLETION.length}\r\n\r\n${COMPLETION}`),
    )
    const c = client(s)
    const head = await c.fetch(`${s.url}/models`, { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect(head.headers.get('content-length')).toBe('1234')
    expect(await head.text()).toBe('')
    expect((await c.chat(body())).choices[0].message.content).toBe('wire')
    expect(s.accepted).toBe(1)
  })
})

