/** The guest init binary that goes into every initramfs. */
import { readFile } from 'node:fs/promises';
import { MicroagentError } from '../errors.js';

/** @throws GUEST_INIT_MISSING */
export async function readGuestInit(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new MicroagentError('GUEST_INIT_MISSING', `the guest init ${path} is not built`, {
      data: { path },
      cause: err,
    });
  }
}
