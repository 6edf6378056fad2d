#!/usr/bin/env node
// Builds the CLI's start-up snapshot (src/cli/snapshot.ts; docs/architecture.md,
// "CLI start-up"). Quick when it is current. Run after the TypeScript build:
//   scripts/node scripts/build-snapshot.mjs [--out DIR] [--force]
// DIR (default dist/cli-snapshot) receives:
//   bundle.cjs  the CLI as one script (esbuild; node's snapshot builder takes
//               one file)
//   blob        the heap `node --build-snapshot` saved after running it
//   node        the Node version that built the blob (a blob only loads in it)
//   root        the package root baked into the blob, written last: without
//               it, or for another root, bin/microagent ignores the blob
// bin/microagent uses the blob only with the project's .local/node and only
// while it is newer than dist/.tsbuildinfo, so a TypeScript build that
// changed anything makes it fall back to the plain ES modules until this
// script runs again (scripts/setup.sh runs it after every build).
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = realpathSync(join(dirname(fileURLToPath(import.meta.url)), '..'));
let force = false;
let out = join(root, 'dist', 'cli-snapshot');
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a === '--force') force = true;
  else if (a === '--out' && process.argv[i + 1]) out = process.argv[++i];
  else {
    process.stderr.write('usage: build-snapshot.mjs [--out DIR] [--force]\n');
    process.exit(2);
  }
}
const say = (msg) => process.stderr.write(`build-snapshot: ${msg}\n`);

const localNode = join(root, '.local', 'node', 'bin', 'node');
if (!existsSync(localNode)) {
  // bin/microagent runs the host's node then, and a blob loads only in the
  // Node that built it; the CLI starts from the ES modules.
  say('no .local/node: skipped (the CLI starts from the ES modules)');
  process.exit(0);
}
const entry = join(root, 'dist', 'src', 'cli', 'snapshot.js');
const mainJs = join(root, 'dist', 'src', 'cli', 'main.js');
if (!existsSync(entry)) {
  say(`${entry} is missing: run the TypeScript build first`);
  process.exit(1);
}

const mtime = (p) => (existsSync(p) ? statSync(p).mtimeMs : Infinity);
const read = (p) => (existsSync(p) ? readFileSync(p, 'utf8').trim() : undefined);
const inputs = [
  join(root, 'dist', '.tsbuildinfo'),
  join(root, 'node_modules', '.package-lock.json'),
  fileURLToPath(import.meta.url),
];
const current =
  !force &&
  read(join(out, 'root')) === root &&
  read(join(out, 'node')) === process.version &&
  inputs.every((p) => mtime(p) < mtime(join(out, 'blob')));
if (current) process.exit(0);

const { build } = await import('esbuild');
const tmp = `${out}.tmp-${process.pid}`;
rmSync(tmp, { recursive: true, force: true });
mkdirSync(tmp, { recursive: true });
try {
  await build({
    entryPoints: [entry],
    outfile: join(tmp, 'bundle.cjs'),
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: `node${process.versions.node.split('.')[0]}`,
    // PACKAGE_ROOT comes from dist/src/paths.js's URL; the bundle keeps
    // that meaning. (spec.ts's createRequire resolves packages from it too.)
    define: {
      'import.meta.url': JSON.stringify(pathToFileURL(join(root, 'dist', 'src', 'paths.js')).href),
    },
    logLevel: 'error',
    // Whitespace and syntax only (names stay, for readable stack traces):
    // the script's source is kept in the heap, and a 2 MiB smaller blob
    // starts ~4 ms sooner.
    minifyWhitespace: true,
    minifySyntax: true,
  });
  // A dynamic import() cannot load in a process started from a snapshot
  // (Node gives it no loader): every import must be static for esbuild to
  // bundle it.
  const bundled = readFileSync(join(tmp, 'bundle.cjs'), 'utf8');
  const dynamic = bundled.match(/\bimport\(\s*[^)]*\)/);
  if (dynamic) throw new Error(`the bundle keeps a dynamic ${dynamic[0]}; make it a static import`);
  // A scrubbed environment: whatever a module read from it while being
  // evaluated would be saved in the blob (the tests check none is).
  const env = { PATH: '/usr/bin:/bin' };
  const made = spawnSync(
    process.execPath,
    ['--snapshot-blob', join(tmp, 'blob'), '--build-snapshot', join(tmp, 'bundle.cjs')],
    { cwd: tmp, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
  if (made.status !== 0 || !existsSync(join(tmp, 'blob'))) {
    // Node's notes that some built-in modules are "not yet fully verified"
    // in snapshots are printed only with a failure; the suite runs the CLI
    // from the blob end to end.
    throw new Error(
      `node --build-snapshot failed (${made.status ?? made.signal}):\n${made.stdout}${made.stderr}`,
    );
  }
  const check = spawnSync(
    process.execPath,
    ['--snapshot-blob', join(tmp, 'blob'), mainJs, '--version'],
    {
      env,
      encoding: 'utf8',
    },
  );
  if (check.status !== 0 || !/^microagent \S+\n$/.test(check.stdout)) {
    throw new Error(
      `the new blob does not start the CLI (${check.status ?? check.signal}):\n${check.stdout}${check.stderr}`,
    );
  }
  writeFileSync(join(tmp, 'node'), `${process.version}\n`);
  // Replace in an order that never shows a root next to a blob of another
  // build: the old root goes first, the new one comes last.
  mkdirSync(out, { recursive: true });
  rmSync(join(out, 'root'), { force: true });
  for (const f of ['bundle.cjs', 'node', 'blob']) renameSync(join(tmp, f), join(out, f));
  writeFileSync(join(tmp, 'root'), `${root}\n`);
  renameSync(join(tmp, 'root'), join(out, 'root'));
  say(
    `built ${join(out, 'blob')} (${(statSync(join(out, 'blob')).size / 2 ** 20).toFixed(1)} MiB)`,
  );
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
