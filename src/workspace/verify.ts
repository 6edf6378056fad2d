/**
 * Runtime verification: the SHA-256 of the kernel, the initramfs, the guest
 * init injected into the image, and the image identity, compared with what
 * was recorded when the workspace was created. `start` refuses to boot on any
 * divergence (fail closed); `status` reports them.
 */
import { createHash } from 'node:crypto';
import { access } from 'node:fs/promises';
import type { StatePaths } from '../paths.js';
import { run } from '../proc/spawn.js';
import { sha256File } from '../util/fs.js';
import type { BootKernel } from '../kernel/index.js';
import type { WorkspaceRecord } from './record.js';

export interface VerifiedArtifact {
  path?: string;
  sha256?: string;
  recordedSha256: string;
  error?: string;
}

export interface Divergence {
  artifact: 'kernel' | 'initramfs' | 'init' | 'image';
  field: string;
  expected: string;
  actual: string;
}

export interface Verification {
  ok: boolean;
  kernel: VerifiedArtifact;
  initramfs: VerifiedArtifact;
  init: VerifiedArtifact;
  image: { ref: string; key: string; baseline: string; present: boolean };
  divergence: Divergence[];
}

/** Path of the injected guest init inside every image we build. */
const INJECTED_INIT = '/sbin/microagent-init';

/**
 * Compares the workspace's artifacts with its record. `verified` is a kernel
 * prepareBootKernel has just checked against its manifest: its hashes are
 * used instead of re-hashing the same files (start); without it every file
 * is hashed (status).
 */
export async function verifyWorkspace(
  _paths: StatePaths,
  record: WorkspaceRecord,
  verified?: Pick<BootKernel, 'kernelPath' | 'initramfsPath' | 'sha256'>,
): Promise<Verification> {
  const divergence: Divergence[] = [];
  // A kernel prepareBootKernel just verified vouches for the same files.
  const kernelSha =
    verified?.kernelPath === record.kernel.kernelPath ? verified.sha256.kernel : undefined;
  const initramfsSha =
    verified?.initramfsPath === record.kernel.initramfsPath ? verified.sha256.initramfs : undefined;
  const [kernel, initramfs, init, present] = await Promise.all([
    hashArtifact(record.kernel.kernelPath, record.kernel.kernelSha256, kernelSha),
    hashArtifact(record.kernel.initramfsPath, record.kernel.initramfsSha256, initramfsSha),
    hashInjectedInit(record.image.baseline, record.image.initSha256),
    access(record.image.baseline).then(
      () => true,
      () => false,
    ),
  ]);
  for (const [artifact, a] of [
    ['kernel', kernel],
    ['initramfs', initramfs],
    ['init', init],
  ] as const) {
    if (a.sha256 !== a.recordedSha256) {
      divergence.push({
        artifact,
        field: 'sha256',
        expected: a.recordedSha256,
        actual: a.sha256 ?? a.error ?? 'unreadable',
      });
    }
  }
  if (!present) {
    divergence.push({
      artifact: 'image',
      field: 'baseline',
      expected: record.image.baseline,
      actual: 'missing',
    });
  }
  return {
    ok: divergence.length === 0,
    kernel,
    initramfs,
    init,
    image: { ...record.image, present },
    divergence,
  };
}

async function hashArtifact(
  path: string,
  recorded: string,
  knownSha256?: string,
): Promise<VerifiedArtifact> {
  try {
    return { path, sha256: knownSha256 ?? (await sha256File(path)), recordedSha256: recorded };
  } catch (err) {
    return { path, recordedSha256: recorded, error: (err as Error).message };
  }
}

/** Hashes the init inside the image baseline (read with debugfs, no mount). */
async function hashInjectedInit(baseline: string, recorded: string): Promise<VerifiedArtifact> {
  try {
    const result = await run(['debugfs', '-R', `cat ${INJECTED_INIT}`, baseline], {
      providedBy: 'e2fsprogs',
      timeoutMs: 30_000,
    });
    if (result.stdout.length === 0) throw new Error(`${INJECTED_INIT} not found in the image`);
    return {
      path: `${baseline}:${INJECTED_INIT}`,
      sha256: createHash('sha256').update(result.stdout).digest('hex'),
      recordedSha256: recorded,
    };
  } catch (err) {
    return {
      path: `${baseline}:${INJECTED_INIT}`,
      recordedSha256: recorded,
      error: (err as Error).message,
    };
  }
}
