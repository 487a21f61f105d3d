#!/usr/bin/env bash
# The runtime matrix: runs runtimes/smoke.mjs under every runtime llmpool supports. Node 20 is
# the machine's own; Node 18, 22 and 24, Bun and Deno come from the npm registry (their
# packages carry the binaries), installed once into runtimes/.installed at the versions tested.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=runtimes/.installed
WANTED=(node18@npm:node@18.20.8 node22@npm:node@22.23.3 node24@npm:node@24.21.0 bun@1.4.5 deno@2.9.6)
STAMP="$DIR/.wanted"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "${WANTED[*]}" ]; then
  rm -rf "$DIR"
  mkdir -p "$DIR"
  echo '{ "name": "llmpool-runtimes", "private": true }' > "$DIR/package.json"
  npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "${WANTED[@]}"
  echo "${WANTED[*]}" > "$STAMP"
fi

BIN="$DIR/node_modules"
RUNS=(
  "node $(command -v node)"
  "node18 $BIN/node18/bin/node"
  "node22 $BIN/node22/bin/node"
  "node24 $BIN/node24/bin/node"
  "bun $BIN/.bin/bun"
  "deno $BIN/.bin/deno run -A"
)
failed=()
for run in "${RUNS[@]}"; do
  name=${run%% *}
  command=${run#* }
  echo "== $name"
  # shellcheck disable=SC2086 # the command carries its own arguments (deno run -A)
  if ! timeout 120 $command runtimes/smoke.mjs; then failed+=("$name"); fi
done
# A runtime's refusal is a clear error, not a crash: Deno without --allow-ffi cannot load a
# Node-API addon, and llmpool's loader says which flag is missing.
echo "== deno without --allow-ffi"
refusal=$(NO_COLOR=1 timeout 60 "$BIN/.bin/deno" run --allow-read --allow-env --allow-net --allow-sys runtimes/smoke.mjs 2>&1 || true)
if grep -q 'llmpool: no native binary' <<<"$refusal" && grep -q -- '--allow-ffi' <<<"$refusal"; then
  echo "refused with llmpool's loader error naming --allow-ffi"
else
  echo "$refusal" | head -20
  failed+=("deno-without-ffi")
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "runtime smoke failed under: ${failed[*]}" >&2
  exit 1
fi
echo "runtime smoke passed under: node $(node --version), node 18, 22, 24, bun, deno"
