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
  constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`
  }

  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freePort())
    await server.resume()
    return server
  }

  /** Starts (again) on the same port, empty: persistence is off. */
  async resume(): Promise<void> {
    this.#child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
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
