/**
 * An exclusive lock file (O_CREAT|O_EXCL) holding the owner's pid and
 * process start time. A lock whose owner is gone (or whose pid was reused)
 * is stale and is broken; otherwise waiters poll until the deadline.
 */
import { open, readFile, rename, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { MicroagentError } from '../errors.js';
import { currentProcess, processAlive, sleep } from '../proc/spawn.js';
import { ensurePrivateDir } from '../util/fs.js';
import { dirname } from 'node:path';

export interface LockOptions {
  /** Give up after this many ms (default 10 minutes: an install downloads ~26 MB). */
  timeoutMs?: number;
  /** What the lock protects, for the error message. */
  what: string;
}

/** Runs fn while holding the lock at path. */
export async function withLock<T>(
  path: string,
  options: LockOptions,
  fn: () => Promise<T>,
): Promise<T> {
  await acquire(path, options);
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}

/** True while some live process holds the lock at path. */
export async function isLocked(path: string): Promise<boolean> {
  const owner = await readOwner(path);
  return owner !== undefined && processAlive(owner);
}

/** Waits until nobody holds the lock (or the timeout passes); false on timeout. */
export async function waitUnlocked(path: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (await isLocked(path)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

async function acquire(path: string, options: LockOptions): Promise<void> {
  await ensurePrivateDir(dirname(path));
  const deadline = Date.now() + (options.timeoutMs ?? 10 * 60_000);
  const me = JSON.stringify(currentProcess());
  for (;;) {
    try {
      const handle = await open(path, 'wx', 0o600);
      try {
        await handle.writeFile(me);
      } finally {
        await handle.close();
      }
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = await readOwner(path);
    // An unreadable lock file is either half-written (its owner is between
    // open and write) or left by a crash in that instant: stale once old.
    const stale = owner === undefined ? await olderThan(path, 2000) : !processAlive(owner);
    if (stale) {
      // Break a stale lock by renaming it away: of several breakers only one
      // rename succeeds, so nobody deletes a lock someone else just took.
      const aside = `${path}.stale-${randomBytes(4).toString('hex')}`;
      try {
        await rename(path, aside);
        await rm(aside, { force: true });
      } catch {
        // Someone else broke it first.
      }
      continue;
    }
    if (Date.now() > deadline) {
      throw new MicroagentError(
        'KERNEL_BUSY',
        `${options.what} is locked by process ${owner?.pid ?? '(unknown)'}`,
        {
          data: { lock: path, pid: owner?.pid },
        },
      );
    }
    await sleep(100);
  }
}

interface Owner {
  pid: number;
  startTime: number;
}

async function readOwner(path: string): Promise<Owner | undefined> {
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as Partial<Owner>;
    if (typeof v.pid === 'number' && typeof v.startTime === 'number')
      return { pid: v.pid, startTime: v.startTime };
  } catch {
    // Missing, empty or half-written.
  }
  return undefined;
}

async function olderThan(path: string, ms: number): Promise<boolean> {
  try {
    return Date.now() - (await stat(path)).mtimeMs > ms;
  } catch {
    return true; // gone: just retry the open
  }
}
