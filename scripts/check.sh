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
