/**
 * Locks for the image store: the kernel store's O_EXCL lock file (owner pid
 * + start time, stale locks broken), reported with the image store's code.
 */
import { MicroagentError } from '../errors.js';
import { withLock as withLockFile } from '../kernel/lock.js';

/** Runs fn while holding the lock file at path; IMAGE_BUSY after timeoutMs. */
export async function withImageLock<T>(
  path: string,
  what: string,
  timeoutMs: number,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await withLockFile(path, { what, timeoutMs }, fn);
  } catch (err) {
    if (err instanceof MicroagentError && err.code === 'KERNEL_BUSY') {
      throw new MicroagentError('IMAGE_BUSY', err.message, { data: err.data, cause: err });
    }
    throw err;
  }
}
