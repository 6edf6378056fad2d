/** Locks for the image store: the project's lock file, busy as IMAGE_BUSY. */
import { withLock } from '../util/lock.js';

/** Runs fn while holding the lock file at path; IMAGE_BUSY after timeoutMs. */
export function withImageLock<T>(
  path: string,
  what: string,
  timeoutMs: number,
  fn: () => Promise<T>,
): Promise<T> {
  return withLock(path, { what, timeoutMs, busyCode: 'IMAGE_BUSY' }, fn);
}
