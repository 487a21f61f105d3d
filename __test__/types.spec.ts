// index.d.ts is complete enough for a strict TypeScript consumer, and rejects what it should.
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'

test('the TypeScript example type-checks with tsc --noEmit --strict', () => {
  const tsc = join(__dirname, '..', 'node_modules', 'typescript', 'bin', 'tsc')
  const project = join(__dirname, 'types', 'tsconfig.json')
  let output = ''
  try {
    execFileSync(process.execPath, [tsc, '-p', project], { encoding: 'utf8', stdio: 'pipe' })
  } catch (e) {
    output = String((e as { stdout?: string }).stdout ?? e)
  }
  expect(output).toBe('')
}, 120_000)
