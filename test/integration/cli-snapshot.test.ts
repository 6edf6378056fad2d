/**
 * The CLI's start-up snapshot (src/cli/snapshot.ts, scripts/build-snapshot.mjs):
 * bin/microagent starts from it only when it is current, and nothing of the
 * build's environment is frozen into it. The e2e suites run the CLI through
 * bin/microagent, so they run it from the snapshot.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { copyFile, mkdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { tempDir } from '../helpers.js';

const LOCAL_NODE = join(PACKAGE_ROOT, '.local', 'node', 'bin', 'node');
const SNAPSHOT = join(PACKAGE_ROOT, 'dist', 'cli-snapshot');
const BUILDER = join(PACKAGE_ROOT, 'scripts', 'build-snapshot.mjs');
const skip = existsSync(LOCAL_NODE)
  ? false
  : 'no .local/node: the snapshot is only built for the project-local Node';

/** Starts `microagent serve mcp` (it waits on stdin) and returns its argv once node runs. */
async function nodeArgvOf(bin: string, stateDir: string): Promise<string[]> {
  const child: ChildProcess = spawn(bin, ['serve', 'mcp', '--state-dir', stateDir], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const closed = new Promise<number | null>((r) => child.on('close', r));
  try {
    // bin/microagent execs node in the same process; bounded wait for it.
    for (let i = 0; i < 200; i++) {
      const argv = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.endsWith('/node')) return argv;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`${bin} did not exec node: ${stderr}`);
  } finally {
    child.stdin?.end();
    const code = await closed;
    assert.equal(code, 0, `serve mcp exited ${code}: ${stderr}`);
  }
}

describe('CLI start-up snapshot', { skip, timeout: 120_000 }, () => {
  let scratch: string;
  before(async () => {
    scratch = await tempDir('snapshot-test');
  });
  after(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('is built by the set-up and used by bin/microagent', async () => {
    assert.equal(readFileSync(join(SNAPSHOT, 'root'), 'utf8'), `${PACKAGE_ROOT}\n`);
    assert.equal(readFileSync(join(SNAPSHOT, 'node'), 'utf8'), `${process.version}\n`);
    const blob = statSync(join(SNAPSHOT, 'blob')).mtimeMs;
    const built = statSync(join(PACKAGE_ROOT, 'dist', '.tsbuildinfo')).mtimeMs;
    assert.ok(
      blob > built,
      'the snapshot is older than the last TypeScript build: run `npm run build`',
    );
    const argv = await nodeArgvOf(join(PACKAGE_ROOT, 'bin', 'microagent'), scratch);
    assert.equal(argv[1], '--snapshot-blob', argv.join(' '));
  });

  it('is ignored when stale, built for another root or incomplete', async () => {
    // A root of symlinks into this one, with its own .tsbuildinfo and stamp.
    const root = join(scratch, 'root');
    await mkdir(join(root, 'bin'), { recursive: true });
    await mkdir(join(root, 'dist', 'cli-snapshot'), { recursive: true });
    await mkdir(join(root, '.local'), { recursive: true });
    await copyFile(join(PACKAGE_ROOT, 'bin', 'microagent'), join(root, 'bin', 'microagent'));
    await symlink(join(PACKAGE_ROOT, 'dist', 'src'), join(root, 'dist', 'src'));
    await symlink(join(PACKAGE_ROOT, '.local', 'node'), join(root, '.local', 'node'));
    await symlink(join(SNAPSHOT, 'blob'), join(root, 'dist', 'cli-snapshot', 'blob'));
    const info = join(root, 'dist', '.tsbuildinfo');
    await writeFile(info, '{}');
    const stamp = join(root, 'dist', 'cli-snapshot', 'root');
    const bin = join(root, 'bin', 'microagent');
    const blobAge = statSync(join(SNAPSHOT, 'blob')).mtimeMs / 1000;
    const usesBlob = async (): Promise<boolean> =>
      (await nodeArgvOf(bin, scratch)).includes('--snapshot-blob');

    await writeFile(stamp, `${root}\n`);
    await utimes(info, blobAge - 60, blobAge - 60);
    assert.equal(await usesBlob(), true, 'current');

    await utimes(info, blobAge + 60, blobAge + 60);
    assert.equal(await usesBlob(), false, 'a TypeScript build after the blob');

    await utimes(info, blobAge - 60, blobAge - 60);
    await writeFile(stamp, `${PACKAGE_ROOT}-elsewhere\n`);
    assert.equal(await usesBlob(), false, 'built for another root');

    await rm(stamp);
    assert.equal(await usesBlob(), false, 'no root stamp (a build in progress)');
  });

  it('holds nothing of the environment, home or directory it was built in', async () => {
    // Built straight from the bundle, without the builder's scrubbed
    // environment: this checks the modules, which must read such things
    // when called, never when loaded.
    const cwd = join(scratch, 'cwd-sentinel-5d1e');
    await mkdir(cwd);
    const blob = join(scratch, 'sentinel.blob');
    const sentinels = {
      HOME: '/home-sentinel-0b7c',
      MICROAGENT_STATE_DIR: '/state-sentinel-9a4f',
      MICROAGENT_MODE: 'ax',
      API_TOKEN: 'token-sentinel-73e2',
      PATH: `/path-sentinel-c6a8:${process.env.PATH ?? '/usr/bin:/bin'}`,
    };
    const built = spawnSync(
      process.execPath,
      ['--snapshot-blob', blob, '--build-snapshot', join(SNAPSHOT, 'bundle.cjs')],
      { cwd, env: sentinels, encoding: 'utf8' },
    );
    assert.equal(built.status, 0, built.stderr);
    const bytes = await readFile(blob);
    for (const s of [
      'home-sentinel-0b7c',
      'state-sentinel-9a4f',
      'token-sentinel-73e2',
      'path-sentinel-c6a8',
      'cwd-sentinel-5d1e',
    ]) {
      assert.equal(bytes.includes(s), false, `${s} is frozen into the snapshot`);
    }
    // And the CLI sees the environment it is started with: human output
    // (no MICROAGENT_MODE now) about this state directory.
    const stateDir = join(scratch, 'state');
    await mkdir(stateDir, { mode: 0o755 });
    const r = spawnSync(
      process.execPath,
      ['--snapshot-blob', blob, join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js'), 'doctor'],
      { env: { PATH: process.env.PATH, MICROAGENT_STATE_DIR: stateDir }, encoding: 'utf8' },
    );
    assert.doesNotMatch(r.stdout, /^\{/, 'human output');
    assert.match(r.stdout, new RegExp(`${stateDir} is readable by others`));
  });

  it('is rebuilt only when out of date, and the builder checks what it built', async () => {
    const out = join(scratch, 'out');
    const first = spawnSync(process.execPath, [BUILDER, '--out', out], { encoding: 'utf8' });
    assert.equal(first.status, 0, first.stderr);
    assert.equal(readFileSync(join(out, 'root'), 'utf8'), `${PACKAGE_ROOT}\n`);
    const built = statSync(join(out, 'blob')).mtimeMs;
    const again = spawnSync(process.execPath, [BUILDER, '--out', out], { encoding: 'utf8' });
    assert.equal(again.status, 0, again.stderr);
    assert.equal(statSync(join(out, 'blob')).mtimeMs, built, 'current: not rebuilt');
    const bad = spawnSync(process.execPath, [BUILDER, '--bogus'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /usage/);
  });
});
