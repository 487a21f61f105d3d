'use strict'
// The main job: 50 concurrent chat() calls through a pool of 8 connections, with a live progress
// line and the final stats(). Talks to an embedded mock server unless OPENAI_BASE_URL is set
// (then it uses that endpoint, OPENAI_API_KEY and OPENAI_MODEL, default gpt-4o-mini).

const { Client } = require('..')
const { startMockServer, openaiHandler } = require('../mock/server.js')

const CALLS = 50
const CONNECTIONS = 8

async function main() {
  let mock
  let baseUrl = process.env.OPENAI_BASE_URL
  if (!baseUrl) {
    // Answers after 20–80 ms, like a (very fast) model.
    mock = await startMockServer({
      handler: async (ctx) => {
        await new Promise((r) => setTimeout(r, 20 + Math.random() * 60))
        return openaiHandler(ctx)
      },
    })
    baseUrl = mock.url
  }
  const model = process.env.OPENAI_MODEL ?? 'gpt-4o-mini'
  console.log(`llmpool demo: ${CALLS} concurrent chat() calls to ${baseUrl} through ${CONNECTIONS} connections`)

  const client = new Client({ baseUrl, apiKey: process.env.OPENAI_API_KEY, connections: CONNECTIONS })
  let done = 0
  let failed = 0
  const started = Date.now()
  const progress = () => {
    const s = client.stats()
    const line = `  ${done + failed}/${CALLS} done (${failed} failed) | running ${s.running} queued ${s.queued} connected ${s.connected}`
    if (process.stdout.isTTY) process.stdout.write(`\r${line}`)
    else console.log(line)
  }
  const timer = setInterval(progress, process.stdout.isTTY ? 50 : 250)

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
  clearInterval(timer)
  progress()
  if (process.stdout.isTTY) process.stdout.write('\n')
  console.log(`finished in ${Date.now() - started} ms; first answer: ${JSON.stringify(sample)}`)
  if (mock) console.log(`the mock server accepted ${mock.accepted} connections`)
  console.log('stats():', client.stats())
  await client.close()
  if (mock) await mock.close()
  if (failed > 0) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
