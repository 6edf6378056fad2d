/**
 * Per-workspace lock for state transitions. The lock is a file created with
 * O_EXCL holding the owner's pid and process start time; a lock whose owner
 * is gone (or whose pid was reused) is stale and is broken. Transitions are
 * short, so a busy lock is reported at once rather than waited for.
 */
import { randomBytes } from 'node:crypto';
import { link, readFile, rm, writeFile } from 'node:fs/promises';
import { MicroagentError } from '../errors.js';
import { currentProcess, processAlive } from '../proc/spawn.js';

interface LockOwner {
  pid: number;
  startTime: number;
  operation: string;
}

export interface WorkspaceLock extends AsyncDisposable {
  release(): Promise<void>;
}

/**
 * Takes the lock at path for operation, or throws WORKSPACE_BUSY naming the
 * operation that holds it. Dispose (or release) to give it back.
 */
export async function acquireLock(
  path: string,
  name: string,
  operation: string,
): Promise<WorkspaceLock> {
  const me: LockOwner = { ...currentProcess(), operation };
  for (let attempt = 0; attempt < 3; attempt++) {
    // Write the owner to a private file, then link it into place: the lock
    // appears atomically with its content, so no reader sees it half-written.
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
    const holder = await readOwner(path);
    if (holder && processAlive(holder)) {
      throw new MicroagentError(
        'WORKSPACE_BUSY',
        `workspace ${name} is busy: another process (pid ${holder.pid}) is running "${holder.operation}"`,
        { data: { name, holderPid: holder.pid, operation: holder.operation } },
      );
    }
    // Stale: the owner is gone (or the file is unreadable). Break it and retry.
    await rm(path, { force: true });
  }
  throw new MicroagentError('WORKSPACE_BUSY', `could not take the lock of workspace ${name}`, {
    data: { name },
  });
}

async function readOwner(path: string): Promise<LockOwner | undefined> {
  try {
    const value = JSON.parse(await readFile(path, 'utf8')) as Partial<LockOwner>;
    if (typeof value.pid !== 'number' || typeof value.startTime !== 'number') return undefined;
    return { pid: value.pid, startTime: value.startTime, operation: String(value.operation) };
  } catch {
    return undefined;
  }
}
