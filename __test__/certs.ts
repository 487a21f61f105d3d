// Test certificates made with openssl, in a temporary folder: a CA, server certificates for
// given names, and a client certificate, all signed by the CA.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export type Pair = { key: string; cert: string }

export class TestCA {
  readonly dir = mkdtempSync(join(tmpdir(), 'llmpool-certs-'))
  readonly pem: string
  readonly path: string
  #serial = 1

  constructor() {
    this.#run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=llmpool test CA')
    this.path = join(this.dir, 'ca.pem')
    this.pem = readFileSync(this.path, 'utf8')
  }

  #run(...args: string[]) {
    execFileSync('openssl', args, { cwd: this.dir, stdio: 'pipe' })
  }

  /** A certificate for `names` (DNS names or IPs) with `usage` serverAuth or clientAuth. */
  issue(names: string[], usage: 'serverAuth' | 'clientAuth' = 'serverAuth'): Pair {
    const n = this.#serial++
    const alt = names.map((name) => (/^[\d.]+$/.test(name) ? `IP:${name}` : `DNS:${name}`)).join(',')
    this.#run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${n}.key`, '-out', `${n}.csr`, '-subj', `/CN=${names[0]}`)
    writeFileSync(join(this.dir, `${n}.cnf`), `subjectAltName=${alt}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=${usage}\n`)
    this.#run('x509', '-req', '-in', `${n}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(1000 + n), '-out', `${n}.pem`, '-days', '2', '-extfile', `${n}.cnf`)
    return { key: readFileSync(join(this.dir, `${n}.key`), 'utf8'), cert: readFileSync(join(this.dir, `${n}.pem`), 'utf8') }
  }

  remove() {
    rmSync(this.dir, { recursive: true, force: true })
  }
}
