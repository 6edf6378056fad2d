/**
 * The kernel store: `<state>/kernels/<id>/` dirs and the `default` pointer.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MicroagentError } from '../errors.js';
import type { StatePaths } from '../paths.js';
import { ensurePrivateDir, writeFileAtomic } from '../util/fs.js';
import { KernelIdSchema, readManifest, type KernelManifest } from './manifest.js';

export interface KernelSummary {
  id: string;
  version: string;
  bootFormat: KernelManifest['bootFormat'];
  source: KernelManifest['source'];
  installedAt: string;
  isDefault: boolean;
  /** Set when the manifest cannot be read; the other fields are then placeholders. */
  error?: string;
}

/** The lock guarding installs and initramfs updates of one kernel. */
export function kernelLockPath(paths: StatePaths, id: string): string {
  return join(paths.locks, `kernel-${id}.lock`);
}

export function checkKernelId(id: string): string {
  const r = KernelIdSchema.safeParse(id);
  if (!r.success)
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `invalid kernel id ${JSON.stringify(id)}: ${r.error.issues[0]?.message ?? ''}`,
    );
  return r.data;
}

/** The default kernel's id, or undefined when none is set. */
export async function readDefaultKernelId(paths: StatePaths): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(paths.defaultKernelPointer, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const id = text.trim();
  if (!KernelIdSchema.safeParse(id).success) {
    throw new MicroagentError(
      'STATE_CORRUPT',
      `${paths.defaultKernelPointer} does not name a kernel id`,
      {
        remediation:
          'Run `microagent kernel install` (it rewrites the pointer) or delete the file.',
      },
    );
  }
  return id;
}

export async function writeDefaultKernelId(paths: StatePaths, id: string): Promise<void> {
  await ensurePrivateDir(paths.kernels);
  await writeFileAtomic(paths.defaultKernelPointer, checkKernelId(id) + '\n');
}

/** Every installed kernel (dirs with a manifest), sorted by id. */
export async function listKernels(paths: StatePaths): Promise<KernelSummary[]> {
  let names: string[];
  try {
    names = (await readdir(paths.kernels, { withFileTypes: true }))
      .filter((d) => d.isDirectory() && !d.name.startsWith('.'))
      .map((d) => d.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  let def: string | undefined;
  try {
    def = await readDefaultKernelId(paths);
  } catch {
    def = undefined;
  }
  const out: KernelSummary[] = [];
  for (const id of names.sort()) {
    if (!KernelIdSchema.safeParse(id).success) continue;
    try {
      const m = await readManifest(paths.kernelDir(id), id);
      out.push({
        id,
        version: m.version,
        bootFormat: m.bootFormat,
        source: m.source,
        installedAt: m.installedAt,
        isDefault: id === def,
      });
    } catch (err) {
      if (err instanceof MicroagentError && err.code === 'KERNEL_NOT_INSTALLED') continue; // not (yet) a kernel
      out.push({
        id,
        version: 'unknown',
        bootFormat: 'bzimage',
        source: { kind: 'file' },
        installedAt: new Date(0).toISOString(),
        isDefault: id === def,
        error: (err as Error).message,
      });
    }
  }
  return out;
}
