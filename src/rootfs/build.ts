/**
 * Builds a bootable ext4 rootfs from an image's layer blobs: stage the
 * layers (apply.ts), inject the guest init, `mke2fs -d` the staged tree,
 * then replay the metadata ledger with one `debugfs -w` run. docs/rootfs.md
 * explains the model.
 */
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { MicroagentError } from '../errors.js';
import { BUILD, type StatePaths } from '../paths.js';
import { currentProcess, processAlive, type ProcessIdentity } from '../proc/spawn.js';
import { debugfsWrite, mkfsExt4 } from '../image/e2fs.js';
import { ensurePrivateDir, sha256 } from '../util/fs.js';
import { ledgerCommands, Staging, type LayerStats, type RejectedEntry } from './apply.js';
import { openLayer } from './tar.js';

/** How far the next layer may decompress ahead while one is being applied (memory bound). */
const LAYER_AHEAD_BYTES = 64 * 1024 * 1024;

/** Where the guest init lives in every rootfs (the kernel runs it as PID 1). */
export const GUEST_INIT_PATH = '/sbin/microagent-init';

const MIB = 1024 * 1024;

export interface LayerRef {
  /** The layer blob on disk (e.g. `<oci layout>/blobs/sha256/<hex>`). */
  path: string;
  /** Decides the decompression: tar, tar+gzip, tar+zstd (OCI and Docker types). */
  mediaType: string;
  /** For progress and errors; the blob cache has verified it. */
  digest: string;
}

export interface RootfsBuildInput {
  /** Lowest layer first, as in the manifest. */
  layers: readonly LayerRef[];
  /** The image (manifest) digest the layers come from, recorded in the result. */
  imageDigest: string;
  /** Keep setuid/setgid bits on files (default: stripped). */
  allowGuestSetuid?: boolean;
  /** Pin the file system size (default: from the content plus headroom). */
  sizeBytes?: number;
  /** The static guest init to inject (default BUILD.guestInit). */
  guestInit?: string;
}

export type RootfsProgress =
  | { phase: 'layer'; index: number; count: number; digest: string; stats: LayerStats; ms: number }
  | { phase: 'mkfs'; sizeBytes: number; inodes: number }
  | { phase: 'ledger'; commands: number }
  | { phase: 'note'; message: string };

export interface RootfsBuildOptions {
  onProgress?: (p: RootfsProgress) => void;
  /** Where to write the image (default: a new file under `<state>/tmp/`). */
  outPath?: string;
}

export interface RootfsBuildResult {
  path: string;
  imageDigest: string;
  /** The file system size (the file is sparse: it allocates far less). */
  sizeBytes: number;
  /** Regular-file bytes in the tree (hard links counted once). */
  contentBytes: number;
  inodes: number;
  paths: number;
  initSha256: string;
  debugfsCommands: number;
  setuidStripped: number;
  rejected: RejectedEntry[];
  notes: string[];
  timings: { stageMs: number; mkfsMs: number; debugfsMs: number; totalMs: number };
}

/** tmpfs to stage trees on when it has room (see stagingParent). */
const SHM = '/dev/shm';
const TMPFS_MAGIC = 0x01021994;

/**
 * Where to unpack the layers. Staging is write-heavy and short-lived, so a
 * tmpfs (/dev/shm) halves the build when it clearly has room: five times the
 * compressed layers, and 1 GiB to spare. Otherwise the state directory's tmp.
 * MICROAGENT_STAGING_DIR pins it. mkdtemp makes a private (0700) directory.
 */
async function stagingParent(
  paths: StatePaths,
  layers: readonly { path: string }[],
): Promise<string> {
  const pinned = process.env.MICROAGENT_STAGING_DIR;
  if (pinned) {
    await ensurePrivateDir(pinned);
    return pinned;
  }
  try {
    let compressed = 0;
    for (const layer of layers) compressed += (await lstat(layer.path)).size;
    const fs = await statfs(SHM);
    const free = fs.bavail * fs.bsize;
    if (fs.type === TMPFS_MAGIC && free > compressed * 5 + 1024 ** 3) return SHM;
  } catch {
    // no /dev/shm, or a layer we cannot stat (the build reports that itself)
  }
  return paths.tmp;
}

const STAGING_PREFIX = 'microagent-rootfs-';
const STAGING_OWNER = 'owner.json';

/**
 * Removes staging trees left by builds that died (a crash skips their
 * clean-up; on tmpfs they would hold RAM until reboot). A tree belongs to the
 * process named in its owner.json; one whose owner is gone is removed.
 */
async function reapStaleStaging(parent: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(STAGING_PREFIX)) continue;
    const dir = join(parent, name);
    try {
      const owner = JSON.parse(await readFile(join(dir, STAGING_OWNER), 'utf8')) as ProcessIdentity;
      if (processAlive(owner)) continue;
    } catch {
      // No readable owner: only trees older than an hour (a build may be
      // between mkdtemp and writing its owner file).
      const st = await lstat(dir).catch(() => undefined);
      if (st === undefined || Date.now() - st.mtimeMs < 3_600_000) continue;
    }
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Directories every guest needs; created (root:root) when the image lacks them. */
const GUEST_DIRS: ReadonlyArray<[string, number]> = [
  ['proc', 0o555],
  ['sys', 0o555],
  ['dev', 0o755],
  ['run', 0o755],
  ['tmp', 0o1777],
  ['root', 0o700],
];

/**
 * Turns layer blobs into an ext4 image at options.outPath (or a temporary
 * file under `<state>/tmp/`). Owners, modes, device nodes, FIFOs and xattrs
 * are those of the layers even when the caller is not root; setuid/setgid
 * bits on files are dropped unless allowGuestSetuid. The staging tree lives
 * under `<state>/tmp/` and is always removed; on failure the partial image
 * is removed too.
 *
 * @throws GUEST_INIT_MISSING, LAYER_INVALID, LAYER_UNSUPPORTED, DISK_FULL,
 *   ROOTFS_TOO_SMALL, ROOTFS_BUILD_FAILED, HOST_TOOL_MISSING
 */
export async function buildRootfs(
  paths: StatePaths,
  input: RootfsBuildInput,
  options: RootfsBuildOptions = {},
): Promise<RootfsBuildResult> {
  const t0 = performance.now();
  const progress = options.onProgress ?? (() => undefined);
  if (
    input.sizeBytes !== undefined &&
    (!Number.isSafeInteger(input.sizeBytes) || input.sizeBytes <= 0)
  ) {
    throw new MicroagentError('INVALID_ARGUMENT', `sizeBytes must be a positive integer`, {
      data: { sizeBytes: input.sizeBytes },
    });
  }
  const initPath = input.guestInit ?? BUILD.guestInit;
  let init: Buffer;
  try {
    init = await readFile(initPath);
  } catch (err) {
    throw new MicroagentError('GUEST_INIT_MISSING', `the guest init ${initPath} cannot be read`, {
      data: { path: initPath },
      cause: err,
    });
  }
  const initSha256 = sha256(init);
  const allowSetuid = input.allowGuestSetuid ?? false;

  let work: string | undefined;
  let out: string | undefined;
  try {
    await ensurePrivateDir(paths.tmp);
    const parent = await stagingParent(paths, input.layers);
    await reapStaleStaging(parent);
    work = await mkdtemp(join(parent, STAGING_PREFIX));
    await writeFile(join(work, STAGING_OWNER), JSON.stringify(currentProcess()), { mode: 0o600 });
    out = options.outPath ?? join(paths.tmp, `rootfs-${randomBytes(6).toString('hex')}.ext4`);

    // 1. Stage the layers, lowest first.
    const staging = await Staging.create(join(work, 'root'), {
      onNote: (message) => progress({ phase: 'note', message }),
    });
    // Each next layer starts decompressing (up to LAYER_AHEAD_BYTES) while
    // the current one is applied.
    const openAhead = (l: LayerRef): Readable => {
      const s = openLayer(l.path, l.mediaType, LAYER_AHEAD_BYTES);
      s.on('error', () => {}); // kept on the stream (errored); applyLayer's read rethrows it
      return s;
    };
    let next: Readable | undefined;
    try {
      for (const [index, layer] of input.layers.entries()) {
        const t = performance.now();
        const stream = next ?? openAhead(layer);
        const following = input.layers[index + 1];
        next = following ? openAhead(following) : undefined;
        const stats = await staging.applyLayer(stream, layer.path, index);
        progress({
          phase: 'layer',
          index,
          count: input.layers.length,
          digest: layer.digest,
          stats,
          ms: performance.now() - t,
        });
      }
    } finally {
      next?.destroy();
    }

    // 2. What microagent adds: the guest init and the mount points it needs.
    for (const [name, mode] of GUEST_DIRS) await staging.ensureTopDir(name, mode);
    const initHost = await staging.injectFile(GUEST_INIT_PATH, init, {
      mode: 0o755,
      uid: 0,
      gid: 0,
    });
    await staging.finishDirectoryTimes();
    // mke2fs copies the staged files' owner: ours, whatever group rules applied.
    const owner = await lstat(initHost);
    const stageMs = performance.now() - t0;

    // 3. The ledger replay, computed before mke2fs: it also sizes the disk.
    const replay = ledgerCommands(
      staging,
      { uid: owner.uid, gid: owner.gid },
      allowSetuid,
      join(work, 'xattrs'),
    );
    const plan = planSize(replay.dataBytes, replay.paths, input.sizeBytes);
    await checkHostSpace(dirname(out), plan.minHostBytes);

    // 4. mke2fs -d, then one debugfs run.
    const tm = performance.now();
    progress({ phase: 'mkfs', sizeBytes: plan.sizeBytes, inodes: plan.inodes });
    try {
      await mkfsExt4(staging.dir, out, plan.sizeBytes, 'microagent-root', { inodes: plan.inodes });
    } catch (err) {
      throw await mkfsError(err, out, input.sizeBytes !== undefined);
    }
    const mkfsMs = performance.now() - tm;
    // The staged copies are no longer needed: free their space for debugfs.
    await rm(staging.dir, { recursive: true, force: true });

    const td = performance.now();
    progress({ phase: 'ledger', commands: replay.commands.length });
    if (replay.commands.length > 0) {
      if (replay.xattrFiles.length > 0) {
        await mkdir(join(work, 'xattrs'), { mode: 0o700 });
        for (const f of replay.xattrFiles) await writeFile(f.path, f.value, { mode: 0o600 });
      }
      try {
        await debugfsWrite(out, replay.commands);
      } catch (err) {
        throw await mkfsError(err, out, input.sizeBytes !== undefined);
      }
    }
    const debugfsMs = performance.now() - td;

    return {
      path: out,
      imageDigest: input.imageDigest,
      sizeBytes: plan.sizeBytes,
      contentBytes: replay.contentBytes,
      inodes: replay.inodes,
      paths: replay.paths,
      initSha256,
      debugfsCommands: replay.commands.length,
      setuidStripped: replay.setuidStripped,
      rejected: staging.rejected,
      notes: staging.notes,
      timings: { stageMs, mkfsMs, debugfsMs, totalMs: performance.now() - t0 },
    };
  } catch (err) {
    if (out !== undefined) await rm(out, { force: true }).catch(() => undefined);
    throw asBuildError(err);
  } finally {
    if (work !== undefined) await rm(work, { recursive: true, force: true }).catch(() => undefined);
  }
}

export interface SizePlan {
  sizeBytes: number;
  inodes: number;
  /** Host bytes the image needs at least (it is sparse). */
  minHostBytes: number;
}

/**
 * The file system size and inode count for a tree. Unpinned: data × 1.5 +
 * 256 MiB + inode tables, in whole MiB. Pinned: that size, checked against
 * what the data, inode tables, journal and metadata need.
 *
 * @throws ROOTFS_TOO_SMALL when pinned below the need
 */
export function planSize(dataBytes: number, paths: number, pinned?: number): SizePlan {
  const inodeBytes = 256; // mke2fs's ext4 default inode size
  if (pinned === undefined) {
    const inodes = paths * 2 + 16384; // room for what the workload creates
    const size = roundUp(dataBytes * 1.5 + 256 * MIB + inodes * inodeBytes, MIB);
    const n = Math.max(inodes, Math.ceil(size / 16384));
    return { sizeBytes: size, inodes: n, minHostBytes: hostNeed(dataBytes, n) };
  }
  const inodes = Math.max(paths + 1024, Math.ceil(pinned / 16384));
  const need =
    dataBytes * 1.05 + inodes * inodeBytes + journalBytes(pinned) + pinned * 0.05 + 8 * MIB;
  if (pinned < need) {
    throw new MicroagentError(
      'ROOTFS_TOO_SMALL',
      `a ${fmtMiB(pinned)} disk cannot hold this image: it needs about ${fmtMiB(need)}`,
      { data: { sizeBytes: pinned, neededBytes: Math.ceil(need), dataBytes, paths } },
    );
  }
  return { sizeBytes: roundUp(pinned, 4096), inodes, minHostBytes: hostNeed(dataBytes, inodes) };
}

/**
 * What the sparse image allocates at least: data, inode tables, slack. The
 * journal is not counted: mke2fs leaves it unwritten (sparse) in a file.
 */
function hostNeed(dataBytes: number, inodes: number): number {
  return dataBytes + inodes * 256 + 4 * MIB;
}

/** mke2fs's default journal size for a file system of this size (4 KiB blocks). */
function journalBytes(size: number): number {
  const blocks = size / 4096;
  const j =
    blocks < 2048
      ? 0
      : blocks < 32768
        ? 1024
        : blocks < 256 * 1024
          ? 4096
          : blocks < 512 * 1024
            ? 8192
            : blocks < 4096 * 1024
              ? 16384
              : blocks < 8192 * 1024
                ? 32768
                : blocks < 16384 * 1024
                  ? 65536
                  : 262144;
  return j * 4096;
}

async function checkHostSpace(dir: string, need: number): Promise<void> {
  let free: number;
  try {
    const s = await statfs(dir);
    free = s.bavail * s.bsize;
  } catch {
    return; // unknown: let mke2fs find out
  }
  if (free < need) {
    throw new MicroagentError(
      'DISK_FULL',
      `${dir} has ${fmtMiB(free)} free; the rootfs image needs about ${fmtMiB(need)}`,
      { data: { dir, freeBytes: free, neededBytes: need } },
    );
  }
}

/** Sorts an e2fsprogs failure into host-disk-full, image-too-small or plain failure. */
async function mkfsError(err: unknown, img: string, pinned: boolean): Promise<unknown> {
  if (!(err instanceof MicroagentError) || err.code === 'HOST_TOOL_MISSING') return err;
  const text = `${err.message}\n${String(err.data.stderr ?? '')}`;
  let hostFree = Number.POSITIVE_INFINITY;
  try {
    const s = await statfs(dirname(img));
    hostFree = s.bavail * s.bsize;
  } catch {
    // unknown
  }
  if (/No space left on device|short write/i.test(text) || hostFree < 4 * MIB) {
    return new MicroagentError('DISK_FULL', `no space left on the host while writing ${img}`, {
      data: { ...err.data, freeBytes: hostFree },
      cause: err,
    });
  }
  if (/Could not allocate|No free space|not enough space|Inode bitmap/i.test(text)) {
    return new MicroagentError(
      pinned ? 'ROOTFS_TOO_SMALL' : 'ROOTFS_BUILD_FAILED',
      `the file system is too small for the image: ${err.message}`,
      { data: err.data, cause: err },
    );
  }
  return new MicroagentError('ROOTFS_BUILD_FAILED', err.message, { data: err.data, cause: err });
}

function asBuildError(err: unknown): unknown {
  if (err instanceof MicroagentError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new MicroagentError('DISK_FULL', `no space left on the host: ${String(err)}`, {
      cause: err,
    });
  }
  return new MicroagentError('ROOTFS_BUILD_FAILED', `rootfs build failed: ${String(err)}`, {
    data: { errno: code },
    cause: err,
  });
}

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

function fmtMiB(n: number): string {
  return `${(n / MIB).toFixed(1)} MiB`;
}
