#!/usr/bin/env bash
# Typecheck, lint, format check and the C build with warnings as errors.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
NODE=$root/scripts/node
"$NODE" node_modules/typescript/bin/tsc -p tsconfig.json --noEmit
"$NODE" node_modules/eslint/bin/eslint.js .
"$NODE" node_modules/prettier/bin/prettier.cjs --check .
make -s -C "$root" clean all
# Generated files must be current: regenerate them from the TypeScript build
# (dist/, which the caller's build made) and fail on any difference.
if [ -d dist/src ] && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  for gen in gen-errors-doc gen-lifecycle-doc gen-protocol-fixtures gen-c-protocol; do
    "$NODE" "scripts/$gen.mjs" >/dev/null
  done
  if ! git diff --quiet -- docs/errors.md docs/lifecycle.md test/fixtures/protocol guest/init/protocol.h; then
    echo "check: generated files differ from the sources; regenerate and commit them:" >&2
    git diff --stat -- docs/errors.md docs/lifecycle.md test/fixtures/protocol guest/init/protocol.h >&2
    exit 1
  fi
fi
