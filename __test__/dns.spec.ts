// The DNS cache of new connections, seen through stats() and metrics(): `localhost` is resolved
// once per maxTTL, every time with dns: false, and never for an IP literal.
import { body, client, server, sleep } from './helpers'

const viaName = (s: { port: number }) => ({ url: `http://localhost:${s.port}/v1` })

test('new connections reuse a lookup within maxTTL', async () => {
  const s = await server()
  // pipelining: 0 opens a connection per request, so every call needs addresses.
  const c = client(viaName(s), { pipelining: 0 })
  for (let i = 0; i < 4; i++) await c.chat(body())
  expect(c.stats()).toMatchObject({ connectionsOpened: 4, dnsLookups: 1, dnsHits: 3 })
  expect(c.metrics()).toMatch(/llmpool_dns_lookups_total\{[^}]*\} 1\n/)
  expect(c.metrics()).toMatch(/llmpool_dns_cache_hits_total\{[^}]*\} 3\n/)
})

test('an expired entry is looked up again', async () => {
  const s = await server()
  const c = client(viaName(s), { pipelining: 0, dns: { maxTTL: 100 } })
  await c.chat(body())
  await c.chat(body())
  await sleep(150)
  await c.chat(body())
  expect(c.stats()).toMatchObject({ dnsLookups: 2, dnsHits: 1 })
})

test('dns: false resolves on every new connection; IP literals are never looked up', async () => {
  const s = await server()
  const c = client(viaName(s), { pipelining: 0, dns: false })
  for (let i = 0; i < 3; i++) await c.chat(body())
  expect(c.stats()).toMatchObject({ dnsLookups: 3, dnsHits: 0 })
  const literal = client(s, { pipelining: 0 })
  await literal.chat(body())
  expect(literal.stats()).toMatchObject({ dnsLookups: 0, dnsHits: 0 })
})

test('bad dns options are TypeErrors naming the option', () => {
  for (const [dns, message] of [
    [{ maxTTL: -1 }, /^dns\.maxTTL/],
    [{ maxItems: 0 }, /^dns\.maxItems/],
    [{ ttl: 5 }, /^dns\.ttl is not a known option/],
    ['yes', /^dns must be an object or false/],
  ] as const) {
    expect(() => client({ url: 'http://127.0.0.1:1' }, { dns: dns as any })).toThrow(message)
  }
})
