// index.d.ts is complete enough for a strict TypeScript consumer, and rejects what it should.
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'

function tsc(folder: string): string {
  const compiler = join(__dirname, '..', 'node_modules', 'typescript', 'bin', 'tsc')
  try {
    execFileSync(process.execPath, [compiler, '-p', join(__dirname, folder, 'tsconfig.json')], { encoding: 'utf8', stdio: 'pipe' })
    return ''
  } catch (e) {
    return String((e as { stdout?: string }).stdout ?? e)
  }
}

test('the TypeScript example type-checks with tsc --noEmit --strict', () => {
  expect(tsc('types')).toBe('')
}, 120_000)

test("openai-node 6's types and llmpool's interoperate both ways (tsc --strict against the openai package)", () => {
  expect(tsc('types-openai')).toBe('')
}, 120_000)
