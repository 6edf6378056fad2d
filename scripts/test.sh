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
mkdir -p .local
skips=.local/test-skips.jsonl
rm -f "$skips"
status=0
"$root/scripts/node" --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter="$root/scripts/skip-reporter.mjs" --test-reporter-destination="$skips" \
  "${files[@]}" || status=$?
# Rootless is a promise: as root, the lifecycle suite runs once more as an
# ordinary user with an ordinary PATH (no sbin), in a state dir of its own.
# The checkout is bind-mounted under /tmp in a private mount namespace, so
# the user reaches it even when it lives under root's home.
if [ "$which" = all ] && [ "$(id -u)" = 0 ]; then
  user=microagent-test
  id "$user" >/dev/null 2>&1 || useradd --system --create-home --shell /usr/sbin/nologin "$user"
  work=$(mktemp -d /tmp/microagent-rootless.XXXXXX)
  mkdir "$work/tree" "$work/state"
  chown "$user" "$work/state"
  chmod 755 "$work"
  echo "test.sh: the lifecycle suite as user $user" >&2
  unshare -m sh -c '
    mount --make-rprivate / && mount --bind "$1" "$2/tree" &&
    exec runuser -u "$3" -- env -i HOME="$2/state" PATH=/usr/local/bin:/usr/bin:/bin \
      MICROAGENT_TEST_STATE_DIR="$2/state/ma" CI="$4" \
      "$2/tree/scripts/node" --test --test-concurrency=1 \
      --test-reporter=spec --test-reporter-destination=stdout \
      --test-reporter="$2/tree/scripts/skip-reporter.mjs" --test-reporter-destination="$2/state/skips.jsonl" \
      "$2/tree/dist/test/e2e/lifecycle.test.js"' sh "$root" "$work" "$user" "${CI:-}" || status=$?
  [ ! -s "$work/state/skips.jsonl" ] || cat "$work/state/skips.jsonl" >> "$skips"
  # Whatever the run left (a VM of a failed test) goes with the state dir.
  pkill -KILL -f "$work/" 2>/dev/null || true
  rm -rf "$work"
fi
# Under CI a skipped test fails the run unless its reason names a host
# capability that CI lacks (reason "host capability: ..."): a test that
# cannot run anywhere must not pass for green.
if [ -n "${CI:-}" ] && [ -s "$skips" ]; then
  bad=$(grep -v '"reason":"host capability: ' "$skips" || true)
  if [ -n "$bad" ]; then
    echo "test.sh: these tests were skipped in CI without naming a host capability CI lacks:" >&2
    echo "$bad" >&2
    [ "$status" -ne 0 ] || status=1
  fi
fi
exit "$status"
