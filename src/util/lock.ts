/**
 * The one lock file of the project (kernels, baselines, the image store,
 * workspaces). The lock is a file holding its owner's pid, process start
 * time and operation, put in place atomically with its content (written
 * aside, then hard-linked), so no reader sees it half-written. A lock whose
 * owner is gone, or whose pid now names another process, is stale: it is
 * renamed away (of several breakers only one rename succeeds, so nobody
 * removes a lock someone else has just taken) and taken again. A live
 * holder makes waiters poll until their deadline; then the caller's own
 * error code is thrown (KERNEL_BUSY, IMAGE_BUSY, BASELINE_BUSY,
 * WORKSPACE_BUSY), so nothing has to rewrite one code into another.
 */
import { randomBytes } from 'node:crypto';
import { link, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { MicroagentError, type ErrorCode } from '../errors.js';
import { currentProcess, processAlive, sleep } from '../proc/spawn.js';
import { ensurePrivateDir } from './fs.js';

export interface LockHolder {
  pid: number;
  startTime: number;
  /** What the holder is doing (shown to those it keeps waiting). */
  operation?: string;
}

export interface LockOptions {
  /** What the lock protects, for the error ("kernel debian-6.1", "workspace dev"). */
  what: string;
  /** The error a caller gets when the lock stays held past timeoutMs. */
  busyCode: ErrorCode;
  /** How long to wait for a live holder; 0 fails at once. Default 10 minutes. */
  timeoutMs?: number;
  /** Recorded in the lock for others to see. */
  operation?: string;
  /** Create the lock's folder (0700) when it is missing. Default true. */
  createDir?: boolean;
  /** Extra fields for the busy error's data. */
  data?: Record<string, unknown>;
}

export interface HeldLock extends AsyncDisposable {
  release(): Promise<void>;
}

const POLL_MS = 100;

/** Takes the lock at path, waiting up to options.timeoutMs for a live holder. */
export async function acquireLock(path: string, options: LockOptions): Promise<HeldLock> {
  if (options.createDir !== false) await ensurePrivateDir(dirname(path));
  const deadline = Date.now() + (options.timeoutMs ?? 10 * 60_000);
  const me: LockHolder = {
    ...currentProcess(),
    ...(options.operation !== undefined ? { operation: options.operation } : {}),
  };
  for (;;) {
    const tmp = `${path}.${randomBytes(6).toString('hex')}`;
    await writeFile(tmp, JSON.stringify(me), { mode: 0o600 });
    try {
      await link(tmp, path);
      let released = false;
      const release = async (): Promise<void> => {
        if (released) return;
        released = true;
        await rm(path, { force: true });
      };
      return { release, [Symbol.asyncDispose]: release };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    } finally {
      await rm(tmp, { force: true });
    }
    const holder = await readHolder(path);
    if (holder === undefined || !processAlive(holder)) {
      // Stale (its owner is gone), or not a lock this code wrote.
      const aside = `${path}.stale-${randomBytes(4).toString('hex')}`;
      try {
        await rename(path, aside);
        await rm(aside, { force: true });
      } catch {
        // someone else broke it first
      }
      continue;
    }
    if (Date.now() >= deadline) {
      throw new MicroagentError(
        options.busyCode,
        `${options.what} is busy: process ${holder.pid} holds it${holder.operation ? ` for "${holder.operation}"` : ''}`,
        {
          data: {
            ...options.data,
            lock: path,
            holderPid: holder.pid,
            ...(holder.operation ? { operation: holder.operation } : {}),
          },
        },
      );
    }
    await sleep(POLL_MS);
  }
}

/** Runs fn while holding the lock at path. */
export async function withLock<T>(
  path: string,
  options: LockOptions,
  fn: () => Promise<T>,
): Promise<T> {
  await using _lock = await acquireLock(path, options);
  return await fn();
}

/** The holder of the lock at path, when it is a lock this code wrote. */
export async function readHolder(path: string): Promise<LockHolder | undefined> {
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as Partial<LockHolder>;
    if (typeof v.pid === 'number' && typeof v.startTime === 'number')
      return {
        pid: v.pid,
        startTime: v.startTime,
        ...(typeof v.operation === 'string' ? { operation: v.operation } : {}),
      };
  } catch {
    // missing, or not ours
  }
  return undefined;
}

/** True while some live process holds the lock at path. */
export async function isLocked(path: string): Promise<boolean> {
  const holder = await readHolder(path);
  return holder !== undefined && processAlive(holder);
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
