#!/usr/bin/env bash
# Runs the test suite on the project's Node. `scripts/test.sh unit` runs only
# the tests that need no VM.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
which=${1:-all}
files=()
if [ "$which" = unit ]; then
  mapfile -t files < <(find dist/test/unit -name '*.test.js' | sort)
else
  mapfile -t files < <(find dist/test -name '*.test.js' | sort)
fi
make -s -C "$root" test-c
exec "$root/scripts/node" --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
