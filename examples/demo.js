'use strict'
// The main job: 50 concurrent chat() calls, then 16 concurrent streams, then the other
// endpoints (embeddings, the Responses API, plain and streamed), all through one pool of 8
// connections, with a live progress line and the final stats(); then traffic control over two
// embedded upstreams, one of which starts failing. Talks to an embedded mock server
// unless OPENAI_BASE_URL is set (then that endpoint, OPENAI_API_KEY, OPENAI_MODEL, default
// gpt-4o-mini, and OPENAI_EMBEDDING_MODEL, default text-embedding-3-small).

const { Client } = require('..')
const { startMockServer, openaiHandler } = require('../mock/server.js')

const CALLS = 50
const STREAMS = 16
const CONNECTIONS = 8

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

function progressLine(label, done, failed, total, client) {
  const s = client.stats()
  return `  ${label}: ${done + failed}/${total} done (${failed} failed) | running ${s.running} queued ${s.queued} connected ${s.connected}`
}

/** Prints the progress line every so often (in place on a terminal) until stopped. */
function ticker(render) {
  const tty = process.stdout.isTTY
  const timer = setInterval(() => (tty ? process.stdout.write(`\r${render()}`) : console.log(render())), tty ? 50 : 250)
  return () => {
    clearInterval(timer)
    console.log(tty ? `\r${render()}` : render())
  }
}

async function chats(client, model) {
  let done = 0
  let failed = 0
  const stop = ticker(() => progressLine('chat()', done, failed, CALLS, client))
  let sample
  await Promise.all(
    Array.from({ length: CALLS }, (_, i) =>
      client
        .chat({ model, max_tokens: 32, messages: [{ role: 'user', content: `question #${i + 1}` }] })
        .then((completion) => {
          done += 1
          sample ??= completion.choices[0]?.message?.content
        })
        .catch((err) => {
          failed += 1
          console.error(`\n  call ${i + 1} failed: ${err.code}: ${err.message}`)
        }),
    ),
  )
  stop()
  console.log(`  first answer: ${JSON.stringify(sample)}`)
  return failed
}

async function streams(client, model) {
  let done = 0
  let failed = 0
  let chunks = 0
  let shown = ''
  const stop = ticker(() => `${progressLine('chatStream()', done, failed, STREAMS, client)} | ${chunks} chunks`)
  await Promise.all(
    Array.from({ length: STREAMS }, async (_, i) => {
      try {
        const stream = client.chatStream({
          model,
          max_tokens: 48,
          messages: [{ role: 'user', content: `tell me a short story, stream #${i + 1}` }],
        })
        for await (const chunk of stream) {
          chunks += 1
          if (i === 0) shown += chunk.choices[0]?.delta?.content ?? ''
        }
        done += 1
      } catch (err) {
        failed += 1
        console.error(`\n  stream ${i + 1} failed: ${err.code}: ${err.message}`)
      }
    }),
  )
  stop()
  console.log(`  stream #1 said: ${JSON.stringify(shown)}`)
  return failed
}

/** Embeddings and the Responses API through the same client (and pool). */
async function otherEndpoints(client, model) {
  let failed = 0
  const step = async (label, work) => {
    try {
      console.log(`  ${label}: ${await work()}`)
    } catch (err) {
      failed += 1
      console.error(`  ${label} failed: ${err.code}: ${err.message}`)
    }
  }
  await step('embeddings()', async () => {
    const res = await client.embeddings({ model: process.env.OPENAI_EMBEDDING_MODEL ?? 'text-embedding-3-small', input: ['pooled', 'connections'] })
    return `${res.data.length} vectors of ${res.data[0].embedding.length} numbers`
  })
  await step("request('/responses')", async () => {
    const res = await client.request('/responses', { model, input: 'one line about pools', max_output_tokens: 32 })
    return JSON.stringify(res.output_text ?? res.status)
  })
  await step('responsesStream()', async () => {
    let deltas = 0
    let text = ''
    for await (const { event, data } of client.responsesStream({ model, input: 'one line about streams', max_output_tokens: 32 })) {
      if (event === 'response.output_text.delta') {
        deltas += 1
        text += data.delta
      }
    }
    return `${deltas} text deltas: ${JSON.stringify(text)}`
  })
  return failed
}

/**
 * Traffic control: one client in front of two embedded upstreams with a client-wide limit. The
 * primary starts failing part-way; calls move to the backup at once, the primary cools down,
 * and the output says where each batch of calls went and why.
 */
async function trafficControl() {
  let primaryFailing = false
  const primary = await startMockServer({
    handler: async (ctx) => {
      await sleep(5 + Math.random() * 10)
      if (primaryFailing) {
        ctx.res.writeHead(503, { 'content-type': 'application/json' })
        return ctx.res.end(JSON.stringify({ error: { message: 'primary overloaded' } }))
      }
      return openaiHandler(ctx)
    },
  })
  const backup = await startMockServer({ handler: async (ctx) => (await sleep(15 + Math.random() * 10), openaiHandler(ctx)) })
  const client = new Client({
    upstreams: [
      { name: 'primary', baseUrl: primary.url, weight: 3 },
      { name: 'backup', baseUrl: backup.url, weight: 1 },
    ],
    routing: 'weighted',
    allowedFails: 2,
    cooldown: 300,
    limits: { rpm: 3000, concurrency: 4 },
  })
  const round = async (label, n) => {
    const where = {}
    await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const { response } = await client.chat({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `${label} #${i}` }] }, { withResponse: true })
        where[response.upstream] = (where[response.upstream] ?? 0) + 1
      }),
    )
    const states = client.stats().upstreams.map((u) => `${u.name} ${u.circuit === 'closed' ? 'healthy' : `cooling down (${u.circuit})`}`)
    console.log(`  ${label}: ${n} calls answered by ${JSON.stringify(where)}; ${states.join(', ')}`)
  }
  await round('both healthy, weights 3:1', 24)
  primaryFailing = true
  await round('primary answers 503: calls move to backup', 24)
  await round('primary in cooldown: calls skip it', 12)
  primaryFailing = false
  await sleep(350)
  await round('cooldown over, primary healthy again: one probe brings it back', 24)
  const s = client.stats()
  console.log(`  ${s.requests} calls, ${s.errors} failed, ${s.retries} moved to another upstream; the limit (4 at once) made ${s.limitWaits} wait`)
  await client.close()
  await primary.close()
  await backup.close()
  return s.errors
}

async function main() {
  let mock
  let baseUrl = process.env.OPENAI_BASE_URL
  if (!baseUrl) {
    // Answers after 20–80 ms and streams a chunk every 15 ms, like a (very fast) model.
    mock = await startMockServer({
      chunkDelay: 15,
      handler: async (ctx) => {
        await sleep(20 + Math.random() * 60)
        return openaiHandler(ctx)
      },
    })
    baseUrl = mock.url
  }
  const model = process.env.OPENAI_MODEL ?? 'gpt-4o-mini'
  console.log(`llmpool demo against ${baseUrl}${mock ? ' (embedded mock server)' : ''}, pool of ${CONNECTIONS} connections`)

  const client = new Client({ baseUrl, apiKey: process.env.OPENAI_API_KEY, connections: CONNECTIONS })
  const started = Date.now()
  let failed = (await chats(client, model)) + (await streams(client, model)) + (await otherEndpoints(client, model))
  console.log(`finished in ${Date.now() - started} ms`)
  if (mock) console.log(`the mock server accepted ${mock.accepted} connections`)
  console.log('stats():', client.stats())
  await client.close()
  console.log('traffic control: two embedded upstreams, one of which starts failing')
  failed += await trafficControl()
  if (mock) await mock.close()
  if (failed > 0) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
