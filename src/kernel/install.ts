/**
 * installKernel: fetch and check a kernel, derive the boot image and the
 * initramfs, and move the finished kernel dir into place atomically.
 */
import {
  chmod,
  mkdir,
  mkdtemp,
  open,
  readFile,
  readdir,
  rename,
  rm,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { MicroagentError } from '../errors.js';
import { BUILD, type StatePaths } from '../paths.js';
import { ensurePrivateDir, exists, fsyncDir, sha256 } from '../util/fs.js';
import { readGuestInit } from './guest-init.js';
import { obtainDeb, extractDeb, resolveAptKernel, DEFAULT_KERNEL_METAPACKAGE } from './apt.js';
import { extractVmlinux, isBzImage, parseBzImageHeader } from './bzimage.js';
import { findLinuxRelease, findPvhEntry, isElf, isX8664Executable } from '../util/elf.js';
import { buildInitramfs } from './initramfs.js';
import { withLock } from '../util/lock.js';
import {
  INITRAMFS_FILE,
  MODULES_DIR,
  moduleFileName,
  readManifest,
  writeManifest,
  type BootFormat,
  type KernelManifest,
} from './manifest.js';
import { DEFAULT_WANTED_MODULES, ModuleTree } from './modules.js';
import {
  fetchUrlSource,
  parseKernelSource,
  verifyFileSource,
  type KernelSource,
} from './source.js';
import { manifestFiles, seedVerifyCache } from './verify.js';
import {
  checkKernelId,
  kernelLockPath,
  readDefaultKernelId,
  writeDefaultKernelId,
} from './store.js';

export interface InstallKernelOptions {
  /** Reinstall even when the id is already installed (replaces it atomically). */
  force?: boolean;
  /** Point `kernels/default` at it. Default: for apt, or when no default exists yet. */
  setDefault?: boolean;
  /** The guest init to pack as /init (default BUILD.guestInit). */
  guestInit?: string;
  /** Modules to put in the initramfs (plus their dependencies). Default virtio_mmio/blk/console/net. */
  modules?: readonly string[];
  /** Kernel id; default debian-<release> (apt) or custom-<sha12> (file/url). */
  id?: string;
  signal?: AbortSignal;
}

export interface InstallKernelResult {
  id: string;
  dir: string;
  manifest: KernelManifest;
  /** False when the kernel was already installed and force was not given. */
  installed: boolean;
  isDefault: boolean;
}

/**
 * Installs a kernel into `<state>/kernels/<id>/`: vmlinux (or bzImage when
 * the kernel has no PVH entry), initramfs.cpio, modules/, manifest.json.
 *
 * Sources: `{kind:'apt'}` (Debian's linux-image-cloud-amd64, .deb checked
 * against the signed archive index), `{kind:'file', path, sha256}` and
 * `{kind:'url', url, sha256}` (ELF vmlinux or bzImage; the digest is
 * required). Concurrent installs of one id are serialised by a lock; the
 * dir is built under `<state>/tmp` and renamed into place.
 *
 * @throws KERNEL_CHECKSUM_MISMATCH, KERNEL_INVALID, KERNEL_INSTALL_FAILED,
 *   GUEST_INIT_MISSING, KERNEL_BUSY, HOST_TOOL_MISSING/FAILED
 */
export async function installKernel(
  paths: StatePaths,
  source: KernelSource = { kind: 'apt' },
  opts: InstallKernelOptions = {},
): Promise<InstallKernelResult> {
  const src = parseKernelSource(source);
  const init = await readGuestInit(opts.guestInit ?? BUILD.guestInit);
  const apt =
    src.kind === 'apt'
      ? await resolveAptKernel(src.package ?? DEFAULT_KERNEL_METAPACKAGE)
      : undefined;
  const id = checkKernelId(
    opts.id ??
      (src.kind === 'apt' ? `debian-${apt?.release ?? ''}` : `custom-${src.sha256.slice(0, 12)}`),
  );
  const dir = paths.kernelDir(id);
  await ensurePrivateDir(paths.kernels);
  await ensurePrivateDir(paths.tmp);

  const lock = { what: `kernel ${id}`, busyCode: 'KERNEL_BUSY', operation: 'install' } as const;
  const result = await withLock(kernelLockPath(paths, id), lock, async () => {
    if (!opts.force && (await exists(join(dir, 'manifest.json')))) {
      try {
        return { manifest: await readManifest(dir, id), installed: false };
      } catch {
        // Unreadable manifest: reinstall over it.
      }
    }
    const work = await mkdtemp(join(paths.tmp, `kernel-${id}-`));
    try {
      const stage = join(work, 'kernel');
      await mkdir(stage, { mode: 0o700 });
      let kernelImage: Buffer;
      let moduleTree: ModuleTree | undefined;
      let record: KernelManifest['source'];
      if (src.kind === 'apt') {
        if (!apt) throw new MicroagentError('INTERNAL', 'apt source without a resolved package');
        const deb = await obtainDeb(apt, work);
        const tree = join(work, 'deb');
        await extractDeb(deb.path, tree);
        const image = join(tree, 'boot', `vmlinuz-${apt.release}`);
        if (!(await exists(image))) {
          throw new MicroagentError(
            'KERNEL_INSTALL_FAILED',
            `${apt.package} has no boot/vmlinuz-${apt.release}`,
          );
        }
        kernelImage = await readFile(image);
        for (const base of [
          join(tree, 'lib', 'modules', apt.release),
          join(tree, 'usr', 'lib', 'modules', apt.release),
        ]) {
          if (await exists(base)) moduleTree = await ModuleTree.open(base);
        }
        if (!moduleTree)
          throw new MicroagentError(
            'KERNEL_INSTALL_FAILED',
            `${apt.package} has no lib/modules/${apt.release}`,
          );
        record = {
          kind: 'apt',
          package: apt.package,
          packageVersion: apt.version,
          debSha256: deb.sha256,
        };
      } else if (src.kind === 'file') {
        await verifyFileSource(src.path, src.sha256);
        kernelImage = await readFile(src.path);
        // Hash what we read, not what we checked a moment ago (the file may change in between).
        if (sha256(kernelImage) !== src.sha256) await verifyFileSource(src.path, src.sha256);
        record = { kind: 'file', path: src.path, sha256: src.sha256 };
      } else {
        const path = await fetchUrlSource(src.url, src.sha256, work, opts.signal);
        kernelImage = await readFile(path);
        record = { kind: 'url', url: src.url, sha256: src.sha256 };
      }

      const boot = await deriveBootImage(kernelImage);
      const version = apt?.release ?? boot.release ?? 'unknown';
      const kernelFile = boot.format === 'elf-pvh' ? 'vmlinux' : 'bzImage';
      await writeFile(join(stage, kernelFile), boot.image, { mode: 0o600 });

      const modules = moduleTree
        ? await moduleTree.closure(opts.modules ?? DEFAULT_WANTED_MODULES)
        : [];
      await mkdir(join(stage, MODULES_DIR), { mode: 0o700 });
      for (const [i, m] of modules.entries()) {
        await writeFile(join(stage, MODULES_DIR, moduleFileName(i, m.name)), m.data, {
          mode: 0o600,
        });
      }
      const initramfs = buildInitramfs({ init, modules });
      await writeFile(join(stage, INITRAMFS_FILE), initramfs, { mode: 0o600 });

      const manifest: KernelManifest = {
        v: 1,
        id,
        version,
        source: record,
        bootFormat: boot.format,
        files: {
          kernel: { path: kernelFile, sha256: sha256(boot.image), size: boot.image.length },
          initramfs: { path: INITRAMFS_FILE, sha256: sha256(initramfs), size: initramfs.length },
        },
        modules: modules.map((m) => ({ name: m.name, sha256: sha256(m.data) })),
        initSha256: sha256(init),
        installedAt: new Date().toISOString(),
      };
      await writeManifest(stage, manifest);
      await fsyncTree(stage);
      await swapIntoPlace(stage, dir, work);
      await seedVerifyCache(dir, manifestFiles(manifest).slice(0, 2));
      return { manifest, installed: true };
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  const currentDefault = await readDefaultKernelId(paths).catch(() => undefined);
  const makeDefault = opts.setDefault ?? (src.kind === 'apt' || currentDefault === undefined);
  if (makeDefault && currentDefault !== id) await writeDefaultKernelId(paths, id);
  return { id, dir, ...result, isDefault: makeDefault || currentDefault === id };
}

export interface BootImage {
  image: Buffer;
  format: BootFormat;
  release?: string;
  /** How a bzImage payload was compressed, when it was unpacked. */
  compression?: string;
}

/**
 * Picks the boot image: the ELF vmlinux when it has a PVH entry (QEMU boots
 * it directly, ~0.45 s faster under TCG), else the bzImage itself. An ELF
 * without PVH cannot be booted by `-kernel` and is refused.
 */
export async function deriveBootImage(image: Buffer): Promise<BootImage> {
  if (isElf(image)) {
    if (!isX8664Executable(image))
      throw new MicroagentError('KERNEL_INVALID', 'the ELF kernel is not an x86-64 executable');
    if (findPvhEntry(image) === undefined) {
      throw new MicroagentError(
        'KERNEL_INVALID',
        'the ELF vmlinux has no PVH entry note (Xen, XEN_ELFNOTE_PHYS32_ENTRY), so QEMU cannot boot it',
        {
          remediation: 'Build the kernel with CONFIG_PVH=y, or install its bzImage instead.',
        },
      );
    }
    return { image, format: 'elf-pvh', ...release(findLinuxRelease(image)) };
  }
  if (!isBzImage(image))
    throw new MicroagentError(
      'KERNEL_INVALID',
      'the file is neither an ELF vmlinux nor an x86 bzImage',
    );
  const header = parseBzImageHeader(image);
  const headerRelease = header?.versionString?.split(' ')[0];
  const { vmlinux, compression } = await extractVmlinux(image);
  const rel = headerRelease ?? findLinuxRelease(vmlinux);
  if (findPvhEntry(vmlinux) !== undefined)
    return { image: vmlinux, format: 'elf-pvh', compression, ...release(rel) };
  return { image, format: 'bzimage', compression, ...release(rel) };
}

function release(r: string | undefined): { release?: string } {
  return r ? { release: r } : {};
}

/**
 * Moves the staged dir to dir. An existing dir (force) is renamed aside
 * first and removed after; rename(2) of a dir onto a non-empty dir fails,
 * so this is two renames, both under the kernel's lock.
 */
async function swapIntoPlace(stage: string, dir: string, work: string): Promise<void> {
  await chmod(stage, 0o700);
  const old = join(work, 'old');
  let moved = false;
  try {
    await rename(dir, old);
    moved = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  try {
    await rename(stage, dir);
  } catch (err) {
    if (moved) await rename(old, dir).catch(() => undefined);
    throw err;
  }
  await fsyncDir(join(dir, '..'));
}

async function fsyncTree(dir: string): Promise<void> {
  // Files were written with writeFile (no fsync); one sync of each before the
  // rename makes the install durable as a whole.
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const h = await open(p, 'r');
        try {
          await h.sync();
        } finally {
          await h.close();
        }
      }
    }
    await fsyncDir(d);
  };
  await walk(dir);
}
