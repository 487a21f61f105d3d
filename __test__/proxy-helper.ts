// Starts the real proxy of fixtures/proxy-server.mjs in a child process, for the file's tests.
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

export type Proxy = {
  url: string
  port: number
  /** Every request the proxy received, in order. */
  seen: Array<{ method: string; url: string }>
  close(): Promise<void>
}

/** `tls`: key and certificate files, to serve the proxy itself over TLS (an https:// proxy). */
export function startProxy(credentials?: string, tls?: { keyFile: string; certFile: string }): Promise<Proxy> {
  const args = [credentials ?? '', ...(tls ? [tls.keyFile, tls.certFile] : [])]
  const child = spawn(process.execPath, [join(__dirname, 'fixtures', 'proxy-server.mjs'), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const seen: Proxy['seen'] = []
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`proxy exited with ${code}`)))
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const message = JSON.parse(line)
      if (message.port === undefined) return void seen.push(message)
      resolve({
        port: message.port,
        url: `${tls ? 'https' : 'http'}://127.0.0.1:${message.port}`,
        seen,
        close: () =>
          new Promise((done) => {
            child.removeAllListeners('exit')
            child.once('exit', () => done())
            child.kill()
          }),
      })
    })
  })
}
