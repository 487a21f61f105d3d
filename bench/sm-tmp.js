'use strict'
// Memory per open stream: `node --expose-gc bench/stream-memory.js <baseUrl> <streams> [text]`
// against the bench mock (`bench/mock-server`, 50 chunks 20 ms apart), all streams open at once.
// Prints the peak deltas of RSS and of the JS heap over the idle client: RSS − heap is the native
// side (hyper's buffers, tasks, the decoder), heap the JS objects of each stream.

const { Client } = require('..')

const [baseUrl, count, mode] = [process.argv[2], Number(process.argv[3] ?? 1000), process.argv[4]]
const client = new Client({ baseUrl, connections: count, retry: false, poolTimeout: 0, timeout: 0 })
const body = { model: 'm', max_tokens: 50, messages: [{ role: 'user', content: 'x' }] }

async function main() {
  global.gc?.()
  const base = process.memoryUsage()
  let peak = base
  const sampler = setInterval(() => {
    const now = process.memoryUsage()
    if (now.rss > peak.rss) peak = now
  }, 20)
  await Promise.all(
    Array.from({ length: count }, async () => {
      const stream = client.chatStream(body, { headers: { 'x-chunk-delay-ms': process.env.DELAY ?? '20' } })
      for await (const _ of mode === 'text' ? stream.text() : stream) void _
    }),
  )
  clearInterval(sampler)
  const mib = (n) => Math.round(n / 1048576)
  const rss = peak.rss - base.rss
  const heap = peak.heapTotal - base.heapTotal
  console.log(
    JSON.stringify({
      streams: count,
      mode: mode ?? 'objects',
      rssMiB: mib(rss),
      heapTotalMiB: mib(heap),
      nativeKiBPerStream: Math.round((rss - heap) / count / 1024),
      heapKiBPerStream: Math.round(heap / count / 1024),
    }),
  )
  await client.close()
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
