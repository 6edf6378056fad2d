/** The one lock file (src/util/lock.ts): busy codes, waiting, stale locks. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MicroagentError } from '../../src/errors.js';
import { procStat } from '../../src/proc/spawn.js';
import { acquireLock, isLocked, withLock } from '../../src/util/lock.js';

describe('lock file', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ma-lock-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("throws the caller's own code, naming the holder and its operation", async () => {
    const path = join(dir, 'a.lock');
    await using _held = await acquireLock(path, {
      what: 'kernel k',
      busyCode: 'KERNEL_BUSY',
      operation: 'install',
    });
    assert.equal(await isLocked(path), true);
    for (const busyCode of ['KERNEL_BUSY', 'IMAGE_BUSY', 'WORKSPACE_BUSY'] as const) {
      await assert.rejects(
        acquireLock(path, { what: 'kernel k', busyCode, timeoutMs: 0 }),
        (e: MicroagentError) =>
          e.code === busyCode &&
          /kernel k is busy: process \d+ holds it for "install"/.test(e.message) &&
          e.data?.holderPid === process.pid,
      );
    }
  });

  it('waits for a holder that lets go within the timeout', async () => {
    const path = join(dir, 'b.lock');
    const held = await acquireLock(path, { what: 'b', busyCode: 'IMAGE_BUSY' });
    setTimeout(() => void held.release(), 300);
    const t0 = Date.now();
    await withLock(path, { what: 'b', busyCode: 'IMAGE_BUSY', timeoutMs: 5000 }, async () => {
      assert.ok(Date.now() - t0 >= 250, 'it waited');
    });
    assert.equal(await isLocked(path), false, 'released after withLock');
  });

  it('breaks a lock whose owner is gone, or whose pid now names another process', async () => {
    const gone = join(dir, 'c.lock');
    const child = spawn('true');
    await new Promise((r) => child.on('close', r));
    await writeFile(gone, JSON.stringify({ pid: child.pid, startTime: 1 }));
    await using _c = await acquireLock(gone, { what: 'c', busyCode: 'IMAGE_BUSY', timeoutMs: 0 });
    assert.equal(JSON.parse(await readFile(gone, 'utf8')).pid, process.pid);

    const reused = join(dir, 'd.lock');
    const start = procStat(process.pid)?.startTime ?? 0;
    await writeFile(reused, JSON.stringify({ pid: process.pid, startTime: start + 1 }));
    await using _d = await acquireLock(reused, { what: 'd', busyCode: 'IMAGE_BUSY', timeoutMs: 0 });

    const junk = join(dir, 'e.lock');
    await writeFile(junk, 'not a lock');
    await using _e = await acquireLock(junk, { what: 'e', busyCode: 'IMAGE_BUSY', timeoutMs: 0 });
  });
});
