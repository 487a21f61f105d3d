#!/usr/bin/env bash
# The package as a user installs it: `npm pack` llmpool and its linux-x64-gnu binary package,
# install both into a fresh project, and there require() it, import it, make a call against the
# mock server, and type-check TypeScript consumers (moduleResolution node16 and bundler, --strict).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

node scripts/build-if-needed.js
work=$(mktemp -d -t llmpool-pack.XXXXXX)
trap 'rm -rf "$work"' EXIT

tag=linux-x64-gnu
cp "llmpool.$tag.node" "npm/$tag/"
trap 'rm -rf "$work" "npm/$tag/llmpool.$tag.node"' EXIT
main_tgz=$(npm pack --silent --pack-destination "$work" | tail -n 1)
binary_tgz=$(cd "npm/$tag" && npm pack --silent --pack-destination "$work" | tail -n 1)

app="$work/app"
mkdir -p "$app"
cd "$app"
echo '{ "name": "consumer", "version": "1.0.0", "private": true }' > package.json
npm install --silent --no-audit --no-fund --offline "$work/$binary_tgz" "$work/$main_tgz"
# The binary must come from the package, not from a build left in the repo.
test ! -e node_modules/llmpool/llmpool.$tag.node
test -e node_modules/llmpool-$tag/llmpool.$tag.node

cat > call.cjs <<'JS'
const { Client } = require('llmpool')
const { startMockServer } = require('llmpool/mock')
;(async () => {
  const mock = await startMockServer()
  const client = new Client({ baseUrl: mock.url })
  const res = await client.chat({ model: 'm', messages: [{ role: 'user', content: 'from cjs' }] })
  console.log(res.choices[0].message.content)
  await client.close()
  await mock.close()
})()
JS
cat > call.mjs <<'JS'
import { Client } from 'llmpool'
import llmpool from 'llmpool'
import mockServer from 'llmpool/mock'
const mock = await mockServer.startMockServer()
const client = new Client({ baseUrl: mock.url })
if (llmpool.Client !== Client) throw new Error('the ESM and CJS entries differ')
let text = ''
for await (const chunk of client.chatStream({ model: 'm', messages: [{ role: 'user', content: 'from esm' }] })) {
  text += chunk.choices[0]?.delta?.content ?? ''
}
console.log(text)
await client.close()
await mock.close()
JS
test "$(node call.cjs)" = "Hello from the mock! You said: from cjs"
test "$(node call.mjs)" = "Hello from the mock! You said: from esm"
echo "require('llmpool') and import { Client } from 'llmpool' both work"
npx --no-install llmpool bench --requests 20 --concurrency 4 | grep -q "requests      20 (20 ok, 0 failed)"
echo "npx llmpool bench works from the installed package"

cat > consumer.mts <<'TS'
import { Client, LlmpoolError } from 'llmpool'
import type { ChatCompletion, ClientOptions } from 'llmpool'
const options: ClientOptions = { baseUrl: 'http://127.0.0.1:1/v1', connections: 4 }
const client = new Client(options)
export async function ask(): Promise<string | null> {
  try {
    const res: ChatCompletion = await client.chat({ model: 'm', messages: [{ role: 'user', content: 'hi' }] })
    return res.choices[0].message.content
  } catch (e) {
    if (e instanceof LlmpoolError) return e.code
    throw e
  }
}
TS
for resolution in node16 bundler; do
  module=$([ "$resolution" = node16 ] && echo node16 || echo esnext)
  cat > tsconfig.json <<JSON
{
  "compilerOptions": {
    "strict": true, "noEmit": true, "target": "es2022",
    "module": "$module", "moduleResolution": "$resolution",
    "typeRoots": ["$repo/node_modules/@types"], "types": ["node"], "skipLibCheck": false
  },
  "files": ["consumer.mts"]
}
JSON
  node "$repo/node_modules/typescript/bin/tsc" -p tsconfig.json
  echo "TypeScript consumer type-checks with moduleResolution $resolution"
done

# Without a binary for the platform, the loader says which one it looked for and how to build.
bare="$work/bare"
mkdir -p "$bare"
cd "$bare"
echo '{ "name": "bare", "version": "1.0.0", "private": true }' > package.json
npm install --silent --no-audit --no-fund --offline "$work/$main_tgz"
if message=$(node -e "require('llmpool')" 2>&1); then
  echo "require('llmpool') without a binary should fail"; exit 1
fi
echo "$message" | grep -q "no native binary for this platform ($tag)"
echo "$message" | grep -q "llmpool-$tag"
echo "$message" | grep -q "npm run build"
echo "a missing binary is explained: $(echo "$message" | grep -o 'llmpool: no native binary[^.]*')"
