/**
 * Per-workspace lock for state transitions: the project's lock file
 * (util/lock.ts). Transitions are short, so a busy lock is reported at once
 * (WORKSPACE_BUSY, naming the operation that holds it) rather than waited for.
 */
import { acquireLock as acquireLockFile, type HeldLock } from '../util/lock.js';

export type WorkspaceLock = HeldLock;

/** Takes the lock at path for operation, or throws WORKSPACE_BUSY. Dispose to give it back. */
export function acquireLock(path: string, name: string, operation: string): Promise<WorkspaceLock> {
  return acquireLockFile(path, {
    what: `workspace ${name}`,
    busyCode: 'WORKSPACE_BUSY',
    timeoutMs: 0,
    operation,
    createDir: false,
    data: { name },
  });
}
