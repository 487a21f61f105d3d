'use strict'
// Loads the native addon built for this platform: a local build first (`npm run build`), then the
// prebuilt package `llmpool-<platform>` that npm installs as an optional dependency.

const { existsSync } = require('node:fs')
const { join } = require('node:path')

function isMusl() {
  if (process.platform !== 'linux') return false
  try {
    return !process.report.getReport().header.glibcVersionRuntime
  } catch {
    return false
  }
}

function platformTag() {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

function load() {
  const tag = platformTag()
  const localFile = join(__dirname, `llmpool.${tag}.node`)
  const packageName = `llmpool-${tag}`
  const failures = []
  if (existsSync(localFile)) {
    try {
      return require(localFile)
    } catch (e) {
      failures.push(`${localFile}: ${e.message}`)
    }
  }
  try {
    return require(packageName)
  } catch (e) {
    failures.push(`${packageName}: ${e.code === 'MODULE_NOT_FOUND' ? 'not installed' : e.message}`)
  }
  const err = new Error(
    `llmpool: no native binary for this platform (${tag}). Looked for the file ${localFile} ` +
      `and the package ${packageName}: ${failures.join('; ')}. ` +
      'If no prebuilt binary exists for your platform, build from source: install Rust ' +
      '(cargo) and run `npm run build` in the llmpool package folder.',
  )
  err.code = 'ERR_LLMPOOL_NATIVE_MISSING'
  throw err
}

module.exports = load()
