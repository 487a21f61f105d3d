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

/** The option names of an interface, nested ones as `parent.child` (`store.tls.ca`), at any depth. */
function typedOptions(interfaceName: string, prefix = ''): string[] {
  const decl = interfaceNamed(interfaceName)
  return members(interfaceName).flatMap((name) => {
    const nested = nestedInterface(decl, name)
    return [`${prefix}${name}`, ...(nested ? typedOptions(nested, `${prefix}${name}.`) : [])]
  })
}

// An upstream's nested options (`upstreams[].connect.ca`) are the client's own, checked there:
// the core lists an upstream's options one level deep.
const typedClientOptions = () => typedOptions('ClientOptions').filter((n) => !n.startsWith('upstreams.') || n.split('.').length === 2)

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

/** A default as the README or a doc comment writes it (`100`, `'llmpool'`, `[408, 409]`), as a value. */
function literal(text: string): unknown {
  return JSON.parse(text.replace(/'/g, '"'))
}

/** Defaults the README's option rows state as a literal: `| `name` | `default` | … |`. */
function documentedDefaults(): Record<string, unknown> {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const section = readme.split(/^## /m).find((s) => s.startsWith('Options'))!
  return Object.fromEntries([...section.matchAll(/^\| `([A-Za-z0-9.]+)` \| `([^`]+)` \|/gm)].map((m) => [m[1], literal(m[2])]))
}

/** Defaults the doc comments of index.d.ts state (`Default \`…\``), by option path. */
function typedDefaults(): Record<string, unknown> {
  const decl = interfaceNamed('ClientOptions')
  const out: Record<string, unknown> = {}
  const read = (prop: ts.PropertySignature | undefined, path: string) => {
    const found = prop && /Default `([^`]+)`/.exec(prop.getFullText())
    if (found && !found[1].startsWith('{')) out[path] = literal(found[1])
  }
  for (const name of members('ClientOptions')) {
    read(propertyNamed(decl, name), name)
    const nested = nestedInterface(decl, name)
    if (nested) for (const child of members(nested)) read(propertyNamed(interfaceNamed(nested), child), `${name}.${child}`)
  }
  return out
}

describe('one list of defaults: the core states each, the README and the typings say the same', () => {
  const defaults: Record<string, unknown> = JSON.parse(native.optionDefaults())

  test('every default in the core is a known option', () => {
    const names = new Set(native.optionNames())
    expect(Object.keys(defaults).filter((n) => !names.has(n))).toEqual([])
  })

  test("the README's default column states the core's defaults, each of them", () => {
    const documented = documentedDefaults()
    const onlyUpstream = (n: string) => n.startsWith('upstreams.')
    expect(Object.fromEntries(Object.entries(documented).filter(([n]) => !onlyUpstream(n)))).toEqual(defaults)
  })

  test("index.d.ts's doc comments state the core's defaults where they state one", () => {
    const typed = typedDefaults()
    const stated = Object.keys(typed).filter((n) => n in defaults)
    expect(stated.length).toBeGreaterThanOrEqual(Object.keys(defaults).length - 2)
    for (const name of stated) expect([name, typed[name]]).toEqual([name, defaults[name]])
    // A default in the typings for an option the core states none for is a stale comment.
    expect(Object.keys(typed).filter((n) => !(n in defaults) && !n.startsWith('upstreams'))).toEqual([])
  })
})
