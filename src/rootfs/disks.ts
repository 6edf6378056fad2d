/**
 * Per-workspace disks: the copy-on-write root disk over a baseline image,
 * and the read-only config disk (docs/protocol.md §4).
 */
import { chmod, rename, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { MicroagentError } from '../errors.js';
import { encodeConfigDisk, type GuestConfig } from '../guest/protocol.js';
import { run } from '../proc/spawn.js';
import { fsyncDir, writeFileAtomic } from '../util/fs.js';
import { qcow2Overlay, QCOW2_MAX_DIRECT_SIZE } from './qcow2.js';

/**
 * Creates a qcow2 overlay whose backing file is the (raw ext4) baseline:
 * writes land in the overlay, the baseline is never modified, so many
 * workspaces share one baseline. Created under a temporary name and renamed
 * into place; mode 0600. Written directly (rootfs/qcow2.ts) up to 4 TiB,
 * by qemu-img beyond. Its virtual size is sizeBytes when that is larger
 * than the baseline (reads past the baseline's end return zeros; the guest
 * grows its file system into the room), else the baseline's.
 *
 * @throws IMAGE_BUILD_FAILED when the baseline is missing; HOST_TOOL_* from qemu-img
 */
export async function createOverlay(
  baselinePath: string,
  overlayPath: string,
  sizeBytes = 0,
): Promise<void> {
  // The backing path is stored in the overlay header as given: make it
  // absolute so the overlay works from any working directory.
  const baseline = resolve(baselinePath);
  const size = await stat(baseline).then(
    (st) => (st.isFile() ? st.size : undefined),
    () => undefined,
  );
  if (size === undefined) {
    throw new MicroagentError('IMAGE_BUILD_FAILED', `baseline image ${baseline} does not exist`);
  }
  const virtual = Math.max(size, sizeBytes);
  if (size > 0 && virtual <= QCOW2_MAX_DIRECT_SIZE) {
    // What qemu-img would write, without a process start per workspace.
    await writeFileAtomic(overlayPath, qcow2Overlay(baseline, virtual), 0o600);
    return;
  }
  const tmp = join(
    dirname(overlayPath),
    `.${basename(overlayPath)}.${randomBytes(6).toString('hex')}.tmp`,
  );
  try {
    await run(
      [
        'qemu-img',
        'create',
        '-q', // no "Formatting ..." line
        '-f',
        'qcow2', // the overlay's own format (copy-on-write)
        '-F',
        'raw', // the backing file's format, stated so qemu never probes it
        '-b',
        baseline, // the backing file (absolute)
        tmp,
        String(Math.ceil(virtual / 512) * 512), // bytes; at least the baseline's
      ],
      { providedBy: 'qemu-utils', timeoutMs: 60_000 },
    );
    await chmod(tmp, 0o600);
    await rename(tmp, overlayPath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dirname(overlayPath));
}

/** Writes the config disk image for config to path (mode 0600, atomic). */
export async function writeConfigDisk(path: string, config: GuestConfig): Promise<void> {
  if (!isAbsolute(path)) path = resolve(path);
  await writeFileAtomic(path, encodeConfigDisk(config), 0o600);
}
