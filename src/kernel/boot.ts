/**
 * verifyKernel (full re-hash, for `kernel verify`) and prepareBootKernel
 * (the check before every boot, which may also refresh the initramfs when
 * the guest init was rebuilt).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MicroagentError } from '../errors.js';
import { BUILD, type StatePaths } from '../paths.js';
import { fsyncDir, sha256, writeFileAtomic } from '../util/fs.js';
import { readGuestInit } from './guest-init.js';
import { waitUnlocked, withLock } from '../util/lock.js';
import {
  INITRAMFS_FILE,
  MODULES_DIR,
  moduleFileName,
  readManifest,
  writeManifest,
  type BootFormat,
  type KernelManifest,
} from './manifest.js';
import { checkKernelId, kernelLockPath, readDefaultKernelId } from './store.js';
import { checkFiles, manifestFiles, seedVerifyCache, type FileCheck } from './verify.js';

export interface VerifyKernelResult {
  ok: boolean;
  id: string;
  files: FileCheck[];
  /** One line per file that differs from the manifest; empty when ok. */
  divergence: string[];
  /** False when the initramfs holds an older guest init than BUILD.guestInit (not an error: the next boot refreshes it). */
  initCurrent?: boolean;
}

/**
 * Re-hashes every file of a kernel (default: the default kernel) against
 * its manifest. Never uses the verification cache. Does not throw on a
 * mismatch: the result says what diverged.
 *
 * @throws KERNEL_NOT_INSTALLED when there is no such kernel (or no default)
 */
export async function verifyKernel(paths: StatePaths, id?: string): Promise<VerifyKernelResult> {
  const kid = id !== undefined ? checkKernelId(id) : await requireDefault(paths);
  const dir = paths.kernelDir(kid);
  const manifest = await readManifest(dir, kid);
  const files = await checkFiles(dir, manifestFiles(manifest), false);
  const divergence = files.filter((f) => !f.ok).map(describe);
  let initCurrent: boolean | undefined;
  try {
    initCurrent = sha256(await readFile(BUILD.guestInit)) === manifest.initSha256;
  } catch {
    initCurrent = undefined;
  }
  return {
    ok: divergence.length === 0,
    id: kid,
    files,
    divergence,
    ...(initCurrent === undefined ? {} : { initCurrent }),
  };
}

export interface PrepareBootOptions {
  /** Install the default apt kernel when none is installed (downloads ~26 MB). */
  autoInstall?: boolean;
  /** Boot this kernel instead of the default. */
  id?: string;
  /** The guest init to boot with (default BUILD.guestInit). */
  guestInit?: string;
}

export interface BootKernel {
  id: string;
  version: string;
  kernelPath: string;
  initramfsPath: string;
  bootFormat: BootFormat;
  sha256: { kernel: string; initramfs: string };
  /** True when the initramfs was rebuilt for a new guest init during this call. */
  initramfsRegenerated: boolean;
}

/**
 * Resolves the kernel to boot and checks it against its manifest. Called
 * before EVERY boot: a kernel or initramfs that does not match its manifest
 * is never booted (KERNEL_VERIFY_FAILED names the file). When the guest init
 * was rebuilt since install, the initramfs is regenerated from the kept
 * modules (each checked against the manifest first) and the manifest updated.
 *
 * @throws KERNEL_NOT_INSTALLED, KERNEL_VERIFY_FAILED, GUEST_INIT_MISSING, KERNEL_BUSY
 */
export async function prepareBootKernel(
  paths: StatePaths,
  opts: PrepareBootOptions = {},
): Promise<BootKernel> {
  const initPath = opts.guestInit ?? BUILD.guestInit;
  const init = await readGuestInit(initPath);
  const initSha = sha256(init);

  let id = opts.id !== undefined ? checkKernelId(opts.id) : await readDefaultKernelId(paths);
  let manifest: KernelManifest | undefined;
  if (id !== undefined) {
    try {
      manifest = await readManifest(paths.kernelDir(id), id);
    } catch (err) {
      if (!(
        err instanceof MicroagentError &&
        err.code === 'KERNEL_NOT_INSTALLED' &&
        opts.autoInstall &&
        opts.id === undefined
      ))
        throw err;
    }
  }
  if (!manifest) {
    if (!opts.autoInstall || opts.id !== undefined) {
      throw new MicroagentError(
        'KERNEL_NOT_INSTALLED',
        id ? `kernel ${id} is not installed` : 'no default kernel is installed',
        {
          data: { id },
        },
      );
    }
    // Loaded here: installing (apt, kernel image formats) is a first-boot path.
    const { installKernel } = await import('./install.js');
    const r = await installKernel(
      paths,
      { kind: 'apt' },
      { setDefault: true, guestInit: initPath },
    );
    id = r.id;
    manifest = r.manifest;
  }
  if (id === undefined) throw new MicroagentError('INTERNAL', 'kernel id unresolved');
  const dir = paths.kernelDir(id);

  let regenerated = false;
  if (manifest.initSha256 !== initSha) {
    manifest = await regenerateInitramfs(paths, id, init);
    regenerated = true;
  }

  let checks = await checkFiles(dir, manifestFiles(manifest).slice(0, 2), true);
  if (checks.some((c) => !c.ok)) {
    // Another process may be regenerating the initramfs right now (it
    // replaces the file, then the manifest): wait for it, then look again.
    await waitUnlocked(kernelLockPath(paths, id), 60_000);
    manifest = await readManifest(dir, id);
    checks = await checkFiles(dir, manifestFiles(manifest).slice(0, 2), true);
  }
  const bad = checks.filter((c) => !c.ok);
  if (bad.length > 0) {
    throw new MicroagentError(
      'KERNEL_VERIFY_FAILED',
      `refusing to boot kernel ${id}: ${bad.map(describe).join('; ')}`,
      {
        data: { id, files: bad },
      },
    );
  }
  return {
    id,
    version: manifest.version,
    kernelPath: join(dir, manifest.files.kernel.path),
    initramfsPath: join(dir, manifest.files.initramfs.path),
    bootFormat: manifest.bootFormat,
    sha256: { kernel: manifest.files.kernel.sha256, initramfs: manifest.files.initramfs.sha256 },
    initramfsRegenerated: regenerated,
  };
}

/**
 * Rebuilds a kernel's initramfs around a new guest init, from the modules
 * kept in its modules/ dir (each must still match the manifest), and
 * records the new hashes. A legitimate rebuild, not tampering: the modules
 * and the kernel are unchanged and checked.
 */
export async function regenerateInitramfs(
  paths: StatePaths,
  id: string,
  init: Buffer,
): Promise<KernelManifest> {
  const dir = paths.kernelDir(id);
  return withLock(
    kernelLockPath(paths, id),
    { what: `kernel ${id}`, busyCode: 'KERNEL_BUSY', operation: 'refresh', timeoutMs: 120_000 },
    async () => {
      const manifest = await readManifest(dir, id);
      const initSha = sha256(init);
      if (manifest.initSha256 === initSha) return manifest; // someone else just did it
      const modules: Array<{ name: string; data: Buffer }> = [];
      for (const [i, m] of manifest.modules.entries()) {
        const file = join(MODULES_DIR, moduleFileName(i, m.name));
        let data: Buffer;
        try {
          data = await readFile(join(dir, file));
        } catch (err) {
          throw verifyFailed(
            id,
            [{ name: file, expected: m.sha256, actual: 'missing', ok: false }],
            err,
          );
        }
        const actual = sha256(data);
        if (actual !== m.sha256)
          throw verifyFailed(id, [{ name: file, expected: m.sha256, actual, ok: false }]);
        modules.push({ name: m.name, data });
      }
      const { buildInitramfs } = await import('./initramfs.js');
      const initramfs = buildInitramfs({ init, modules });
      // Initramfs first, manifest second: a reader that sees the new file with
      // the old manifest finds the lock held and waits (prepareBootKernel).
      await writeFileAtomic(join(dir, INITRAMFS_FILE), initramfs);
      const next: KernelManifest = {
        ...manifest,
        files: {
          ...manifest.files,
          initramfs: { path: INITRAMFS_FILE, sha256: sha256(initramfs), size: initramfs.length },
        },
        initSha256: initSha,
      };
      await writeManifest(dir, next);
      await fsyncDir(dir);
      await seedVerifyCache(dir, manifestFiles(next).slice(1, 2));
      return next;
    },
  );
}

function verifyFailed(id: string, files: FileCheck[], cause?: unknown): MicroagentError {
  return new MicroagentError(
    'KERNEL_VERIFY_FAILED',
    `refusing to use kernel ${id}: ${files.map(describe).join('; ')}`,
    {
      data: { id, files },
      ...(cause === undefined ? {} : { cause }),
    },
  );
}

function describe(f: FileCheck): string {
  return f.actual === 'missing'
    ? `${f.name} is missing`
    : `${f.name} has SHA-256 ${f.actual}, manifest says ${f.expected}`;
}

async function requireDefault(paths: StatePaths): Promise<string> {
  const id = await readDefaultKernelId(paths);
  if (id === undefined)
    throw new MicroagentError('KERNEL_NOT_INSTALLED', 'no default kernel is installed');
  return id;
}
