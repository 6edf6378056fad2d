/**
 * The static helpers a run relies on when it dies: the janitor
 * (build/janitor) deletes a run's folder when its owner dies without
 * releasing it, and never touches anything else; vmm-exec only starts a
 * VMM whose parent is the one named.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  mkdir,
  mkdtemp,
  readdir,
  readlink,
  rename,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUILD } from '../../src/paths.js';
import { startJanitor } from '../../src/workspace/janitor.js';

/** Runs the janitor on dir; `release` writes its byte, else stdin just closes. */
function janitor(dir: string, release: boolean): Promise<number | null> {
  const child = spawn(BUILD.janitor, [dir], { stdio: ['pipe', 'ignore', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  if (release) child.stdin.end('x');
  else child.stdin.end();
  return exited;
}

/** Waits until the janitor holds the folder open (bounded). */
async function opened(pid: number, dir: string): Promise<void> {
  for (let i = 0; i < 250; i++) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => []);
    for (const fd of fds) {
      if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) === dir) return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail('the janitor did not open the folder');
}

async function folder(): Promise<{ root: string; dir: string; outside: string }> {
  const root = await mkdtemp(join(tmpdir(), 'janitor-'));
  const dir = join(root, 'ws');
  const outside = join(root, 'outside');
  await mkdir(join(dir, 'run'), { recursive: true });
  await mkdir(outside);
  await writeFile(join(dir, 'run', 'serial.log'), 'x');
  await writeFile(join(outside, 'keep'), 'x');
  // A link out of the folder: removed itself, never followed.
  await symlink(outside, join(dir, 'link'));
  return { root, dir, outside };
}

describe('janitor', () => {
  test('removes the folder when its owner goes away without a word', async () => {
    const { root, dir, outside } = await folder();
    try {
      assert.equal(await janitor(dir, false), 0);
      assert.equal(existsSync(dir), false);
      assert.equal(existsSync(join(outside, 'keep')), true, 'did not follow the symlink');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test('leaves the folder when released', async () => {
    const { root, dir } = await folder();
    try {
      assert.equal(await janitor(dir, true), 0);
      assert.equal(existsSync(join(dir, 'run', 'serial.log')), true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test('leaves a different folder that took the same name', async () => {
    const { root, dir } = await folder();
    try {
      const child = spawn(BUILD.janitor, [dir], { stdio: ['pipe', 'ignore', 'inherit'] });
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      await opened(child.pid as number, dir);
      await rename(dir, join(root, 'moved'));
      await mkdir(dir);
      await writeFile(join(dir, 'new'), 'x');
      child.stdin.end();
      assert.equal(await exited, 0);
      assert.equal(existsSync(join(dir, 'new')), true);
      assert.equal(existsSync(join(root, 'moved', 'run', 'serial.log')), true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test('refuses a relative path or /', async () => {
    assert.equal(await janitor('relative/dir', false), 2);
    assert.equal(await janitor('/', false), 2);
  });

  test('startJanitor: release keeps the folder', async () => {
    const { root, dir } = await folder();
    try {
      const j = await startJanitor(dir);
      j.release();
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(existsSync(dir), true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('vmm-exec', () => {
  function vmmExec(parent: string | undefined): Promise<{ code: number | null; out: string }> {
    const env = { ...process.env };
    delete env.MICROAGENT_VMM_PARENT;
    if (parent !== undefined) env.MICROAGENT_VMM_PARENT = parent;
    const child = spawn(BUILD.vmmExec, ['/usr/bin/env'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    return new Promise((resolve) => child.on('close', (code) => resolve({ code, out })));
  }

  test('runs the program when the named parent is its parent, without the variable', async () => {
    const r = await vmmExec(String(process.pid));
    assert.equal(r.code, 0);
    assert.match(r.out, /^PATH=/m);
    assert.doesNotMatch(r.out, /MICROAGENT_VMM_PARENT/);
  });

  test('refuses to start when its parent is not the one named (it died before the exec)', async () => {
    const r = await vmmExec('1');
    assert.equal(r.code, 125);
    assert.equal(r.out, '');
    assert.equal((await vmmExec('x12')).code, 125);
  });
});
