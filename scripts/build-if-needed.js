'use strict'
// Builds the native addon (release) when it is missing or older than its Rust sources, so that
// `npm test` and `npm run demo` work on a fresh clone and after every Rust change.

const { execFileSync } = require('node:child_process')
const { existsSync, readdirSync, statSync } = require('node:fs')
const { join } = require('node:path')

const root = join(__dirname, '..')

function newestMtime(path) {
  const stat = statSync(path)
  if (!stat.isDirectory()) return stat.mtimeMs
  return readdirSync(path).reduce((max, name) => Math.max(max, newestMtime(join(path, name))), 0)
}

function binaryPath() {
  const names = readdirSync(root).filter((n) => /^llmpool\..+\.node$/.test(n))
  return names.length ? join(root, names[0]) : null
}

const sources = ['src', 'Cargo.toml', 'Cargo.lock', 'build.rs'].map((p) => join(root, p)).filter(existsSync)
const binary = binaryPath()
const stale = !binary || sources.some((p) => newestMtime(p) > statSync(binary).mtimeMs)

if (stale) {
  process.stderr.write(binary ? 'llmpool: Rust sources changed, rebuilding the addon…\n' : 'llmpool: building the native addon…\n')
  execFileSync('npx', ['napi', 'build', '--platform', '--release', '--no-js', '--dts', 'native.d.ts'], {
    cwd: root,
    stdio: 'inherit',
  })
}
