// One source of truth for options: the names the Rust validator accepts (src/config.rs) are the
// names index.d.ts types and the README's option tables document, neither more nor fewer.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import ts from 'typescript'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const native = require('../binding.js')

const root = join(__dirname, '..')
const typings = ts.createSourceFile('index.d.ts', readFileSync(join(root, 'index.d.ts'), 'utf8'), ts.ScriptTarget.Latest, true)

function interfaceNamed(name: string): ts.InterfaceDeclaration {
  let found: ts.InterfaceDeclaration | undefined
  typings.forEachChild((node) => {
    if (ts.isInterfaceDeclaration(node) && node.name.text === name) found = node
  })
  if (!found) throw new Error(`index.d.ts has no interface ${name}`)
  return found
}

/** Member names of an interface, its `extends` included. */
function members(name: string): string[] {
  const decl = interfaceNamed(name)
  const inherited = (decl.heritageClauses ?? []).flatMap((h) => h.types.flatMap((t) => members(t.expression.getText())))
  const own = decl.members.filter(ts.isPropertySignature).map((m) => m.name.getText())
  return [...inherited, ...own]
}

/** A member's declaration in an interface or the interfaces it extends. */
function propertyNamed(decl: ts.InterfaceDeclaration, member: string): ts.PropertySignature | undefined {
  const own = decl.members.filter(ts.isPropertySignature).find((m) => m.name.getText() === member)
  if (own) return own
  for (const t of (decl.heritageClauses ?? []).flatMap((h) => h.types)) {
    const found = propertyNamed(interfaceNamed(t.expression.getText()), member)
    if (found) return found
  }
  return undefined
}

/** Interfaces of index.d.ts that a member's type names (`RetryOptions | false` → RetryOptions). */
function nestedInterface(decl: ts.InterfaceDeclaration, member: string): string | undefined {
  const prop = propertyNamed(decl, member)
  const names: string[] = []
  const visit = (node: ts.Node) => {
    if (ts.isTypeReferenceNode(node)) names.push(node.typeName.getText())
    node.forEachChild(visit)
  }
  if (prop?.type) visit(prop.type)
  return names.find((n) => /Options$/.test(n))
}

function typedClientOptions(): string[] {
  const decl = interfaceNamed('ClientOptions')
  return members('ClientOptions').flatMap((name) => {
    const nested = nestedInterface(decl, name)
    return [name, ...(nested ? members(nested).map((child) => `${name}.${child}`) : [])]
  })
}

/** First-column names of the option tables in the README's "## Options" section. */
function documentedOptions(): string[] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const section = readme.split(/^## /m).find((s) => s.startsWith('Options'))!
  return [...section.matchAll(/^\| `([A-Za-z0-9.]+)` \|/gm)].map((m) => m[1])
}

const sorted = (xs: string[]) => [...new Set(xs)].sort()

test('every option the core accepts is typed in index.d.ts, and nothing else is', () => {
  expect(sorted(typedClientOptions())).toEqual(sorted(native.optionNames()))
})

test('every option the core accepts has a row in the README, and nothing else has', () => {
  expect(sorted(documentedOptions())).toEqual(sorted(native.optionNames()))
})

test('every per-call option is typed, and nothing else is', () => {
  expect(sorted([...members('StreamCallOptions'), ...members('JsonCallOptions')])).toEqual(sorted(native.callOptionNames()))
})

test('the check can fail: a name missing from one side shows up', () => {
  const typed = typedClientOptions()
  expect(typed).toContain('retry.maxRetries')
  expect(sorted(typed.filter((n) => n !== 'maxResponseSize'))).not.toEqual(sorted(native.optionNames()))
})
