// A real Redis (the Debian package's redis-server) for the store's tests: started on a free
// port with persistence off, stopped and started again on the same port to test outages.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createServer, connect } from 'node:net'

/** Whether redis-server is installed (`.ci/run` installs it with apt). */
export const haveRedis = spawnSync('redis-server', ['--version']).status === 0

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

/** Resolves once something answers PING on `port` with PONG. */
async function answersPing(port: number, ms = 5000): Promise<void> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1')
      socket.once('error', () => resolve(false))
      socket.once('connect', () => socket.write('PING\r\n'))
      socket.once('data', (d) => {
        socket.destroy()
        resolve(d.toString().startsWith('+PONG'))
      })
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`redis-server did not answer on port ${port} within ${ms} ms`)
}

/** Sends one command (RESP) and resolves with the first line of the answer (`:1234`, `+OK`, …). */
export function redisCommand(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('error', reject)
    socket.once('connect', () => socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`))
    socket.once('data', (d) => {
      socket.destroy()
      resolve(d.toString().split('\r\n')[0])
    })
  })
}

export class RedisServer {
  #child: ChildProcess | null = null
  /** `extra`: more redis-server arguments (a TLS port, ACL users, cluster mode). */
  constructor(
    readonly port: number,
    readonly extra: string[] = [],
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`
  }

  static async start(extra: string[] = []): Promise<RedisServer> {
    const server = new RedisServer(await freePort(), extra)
    await server.resume()
    return server
  }

  /** Starts (again) on the same port, empty: persistence is off. The plain port always answers PING (readiness, checks). */
  async resume(): Promise<void> {
    this.#child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...this.extra], {
      stdio: 'ignore',
    })
    await answersPing(this.port)
  }

  /** Stops the server; its port refuses connections until `resume()`. */
  stop(): Promise<void> {
    const child = this.#child
    this.#child = null
    if (!child || child.exitCode !== null) return Promise.resolve()
    return new Promise((resolve) => {
      child.once('exit', () => resolve())
      child.kill('SIGKILL')
    })
  }
}

/** A Redis Cluster of three masters on loopback (`--cluster-enabled yes`, formed by `redis-cli --cluster create`). */
export class RedisCluster {
  constructor(
    readonly nodes: RedisServer[],
    readonly dir: string,
  ) {}

  get seeds(): string[] {
    return this.nodes.map((n) => `redis://127.0.0.1:${n.port}`)
  }

  static async start(): Promise<RedisCluster> {
    const { mkdtempSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const dir = mkdtempSync(join(tmpdir(), 'llmpool-cluster-'))
    const nodes: RedisServer[] = []
    for (let i = 0; i < 3; i++) {
      const port = await freePort()
      const node = new RedisServer(port, ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--cluster-node-timeout', '500', '--dir', dir])
      await node.resume()
      nodes.push(node)
    }
    const created = spawnSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' })
    if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stdout}${created.stderr}`)
    const cluster = new RedisCluster(nodes, dir)
    const until = Date.now() + 10_000
    while (Date.now() < until) {
      const states = await Promise.all(nodes.map((n) => clusterState(n.port)))
      if (states.every((s) => s === 'ok')) return cluster
      await new Promise((r) => setTimeout(r, 50))
    }
    throw new Error('the cluster did not reach cluster_state:ok within 10 s')
  }

  /** The port of the node whose slots hold `key` (CLUSTER KEYSLOT, then CLUSTER NODES's slot ranges). */
  nodeOf(key: string): number {
    const slot = Number(spawnSync('redis-cli', ['-p', String(this.nodes[0].port), 'CLUSTER', 'KEYSLOT', key], { encoding: 'utf8' }).stdout.trim())
    const lines = spawnSync('redis-cli', ['-p', String(this.nodes[0].port), 'CLUSTER', 'NODES'], { encoding: 'utf8' }).stdout.trim().split('\n')
    for (const line of lines) {
      const [, address, , , , , , , ...ranges] = line.split(' ')
      const port = Number(address.split('@')[0].split(':')[1])
      for (const range of ranges) {
        const [from, to = from] = range.split('-').map(Number)
        if (slot >= from && slot <= to) return port
      }
    }
    throw new Error(`no node owns slot ${slot}`)
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop()))
    const { rmSync } = await import('node:fs')
    rmSync(this.dir, { recursive: true, force: true })
  }
}

function clusterState(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let text = ''
    socket.once('error', () => resolve('down'))
    socket.once('connect', () => socket.write('CLUSTER INFO\r\n'))
    socket.on('data', (d) => {
      text += d
      const state = /cluster_state:(\w+)/.exec(text)
      if (state) {
        socket.destroy()
        resolve(state[1])
      }
    })
  })
}
