/**
 * The baseline cache: one read-only ext4 image per (manifest digest, guest
 * init, build options), under `<state>/baselines/<key>/`. Workspaces never
 * write to a baseline; each gets a qcow2 overlay on it (disks.ts), so the
 * second workspace from an image costs an overlay, not a build.
 */
import { chmod, mkdtemp, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { MicroagentError } from '../errors.js';
import { withLock, isLocked } from '../util/lock.js';
import { BUILD, type StatePaths } from '../paths.js';
import { ensurePrivateDir, fsyncDir, sha256, sha256File, writeJsonAtomic } from '../util/fs.js';
import {
  buildRootfs,
  type RootfsBuildInput,
  type RootfsBuildOptions,
  type RootfsBuildResult,
} from './build.js';
import { createOverlay } from './disks.js';

/** Bump when the build's output changes for the same inputs: it is part of the key. */
export const ROOTFS_BUILDER_VERSION = 1;
const ROOTFS_FILE = 'rootfs.ext4';
const RECORD_FILE = 'baseline.json';
const BUILDING_PREFIX = '.building-';
const HEX64 = /^[0-9a-f]{64}$/;

export const BaselineOptionsSchema = z
  .object({
    allowGuestSetuid: z.boolean(),
    /** Pinned size, or null when sized from the content. */
    sizeBytes: z.number().int().positive().nullable(),
  })
  .strict();
export type BaselineOptions = z.infer<typeof BaselineOptionsSchema>;

export const BaselineKeyInputSchema = z
  .object({
    manifestDigest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
    initSha256: z.string().regex(HEX64),
    options: BaselineOptionsSchema,
  })
  .strict();
export type BaselineKeyInput = z.infer<typeof BaselineKeyInputSchema>;

export const BaselineRecordSchema = z
  .object({
    v: z.literal(1),
    key: z.string().regex(HEX64),
    builderVersion: z.number().int(),
    manifestDigest: z.string(),
    initSha256: z.string().regex(HEX64),
    options: BaselineOptionsSchema,
    /** File system size (the file's apparent size). */
    sizeBytes: z.number().int().positive(),
    /** Regular-file bytes in the image. */
    contentBytes: z.number().int().nonnegative(),
    inodes: z.number().int().nonnegative(),
    buildMs: z.number().nonnegative(),
    builtAt: z.string().datetime(),
  })
  .strict();
export type BaselineRecord = z.infer<typeof BaselineRecordSchema>;

export interface Baseline {
  key: string;
  dir: string;
  /** The ext4 image: a backing file, never written. */
  path: string;
  record: BaselineRecord;
  /** True when this call built it, false when the cache had it. */
  built: boolean;
}

/** What a build callback reports about the image it wrote. */
export interface BaselineBuildInfo {
  sizeBytes: number;
  contentBytes: number;
  inodes: number;
}

/** The cache key: sha256 of the builder version, manifest digest, init hash and options. */
export function baselineKey(input: BaselineKeyInput): string {
  const k = BaselineKeyInputSchema.parse(input);
  return sha256(
    JSON.stringify({
      builder: ROOTFS_BUILDER_VERSION,
      manifestDigest: k.manifestDigest,
      initSha256: k.initSha256,
      allowGuestSetuid: k.options.allowGuestSetuid,
      sizeBytes: k.options.sizeBytes,
    }),
  );
}

/**
 * Returns the baseline for key, calling build(outPath) to make it when the
 * cache has none. The build writes into a temporary directory next to the
 * cache entry, which is renamed into place when complete (atomic). One
 * builder per key at a time (a lock file); a concurrent caller waits and
 * reuses the result. The cached path is the warm path: one small JSON read
 * and one stat.
 *
 * @throws BASELINE_BUSY when the lock is not released within lockTimeoutMs;
 *   whatever build throws (the partial output is removed)
 */
export async function ensureBaseline(
  paths: StatePaths,
  keyInput: BaselineKeyInput,
  build: (outPath: string) => Promise<BaselineBuildInfo>,
  options: { lockTimeoutMs?: number } = {},
): Promise<Baseline> {
  const key = baselineKey(keyInput);
  const dir = paths.baselineDir(key);
  const cached = await readBaseline(dir, key);
  if (cached) return { key, dir, path: join(dir, ROOTFS_FILE), record: cached, built: false };

  return await withLock(
    paths.baselineLock(key),
    {
      what: `rootfs baseline ${key}`,
      busyCode: 'BASELINE_BUSY',
      operation: 'build',
      timeoutMs: options.lockTimeoutMs ?? 30 * 60_000,
    },
    async () => {
      const theirs = await readBaseline(dir, key);
      if (theirs) return { key, dir, path: join(dir, ROOTFS_FILE), record: theirs, built: false };
      await ensurePrivateDir(paths.baselines);
      const tmp = await mkdtemp(join(paths.baselines, `${BUILDING_PREFIX}${key}-`));
      try {
        const t = performance.now();
        const info = await build(join(tmp, ROOTFS_FILE));
        const img = join(tmp, ROOTFS_FILE);
        await chmod(img, 0o400); // a backing file: nobody writes to it
        const record: BaselineRecord = {
          v: 1,
          key,
          builderVersion: ROOTFS_BUILDER_VERSION,
          manifestDigest: keyInput.manifestDigest,
          initSha256: keyInput.initSha256,
          options: keyInput.options,
          sizeBytes: (await stat(img)).size,
          contentBytes: info.contentBytes,
          inodes: info.inodes,
          buildMs: Math.round(performance.now() - t),
          builtAt: new Date().toISOString(),
        };
        await writeJsonAtomic(join(tmp, RECORD_FILE), record);
        // An unreadable entry left by an older version or a crash: replace it.
        await rm(dir, { recursive: true, force: true });
        await rename(tmp, dir);
        await fsyncDir(paths.baselines);
        return { key, dir, path: join(dir, ROOTFS_FILE), record, built: true };
      } catch (err) {
        await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
        throw err;
      }
    },
  );
}

export interface ImageRootfsInput extends Omit<RootfsBuildInput, 'imageDigest'> {
  /** The manifest digest ("sha256:…"): the image's identity in the cache key. */
  manifestDigest: string;
}

/**
 * The baseline for an image: from the cache, or built from its layers with
 * buildRootfs. The build result (timings, rejected entries, notes) is
 * returned when this call built it.
 */
export async function ensureImageBaseline(
  paths: StatePaths,
  input: ImageRootfsInput,
  options: Omit<RootfsBuildOptions, 'outPath'> & { lockTimeoutMs?: number } = {},
): Promise<Baseline & { build?: RootfsBuildResult }> {
  const initPath = input.guestInit ?? BUILD.guestInit;
  let initSha256: string;
  try {
    initSha256 = await sha256File(initPath);
  } catch (err) {
    throw new MicroagentError('GUEST_INIT_MISSING', `the guest init ${initPath} cannot be read`, {
      data: { path: initPath },
      cause: err,
    });
  }
  const keyInput: BaselineKeyInput = {
    manifestDigest: input.manifestDigest,
    initSha256,
    options: {
      allowGuestSetuid: input.allowGuestSetuid ?? false,
      sizeBytes: input.sizeBytes ?? null,
    },
  };
  let result: RootfsBuildResult | undefined;
  const baseline = await ensureBaseline(
    paths,
    keyInput,
    async (outPath) => {
      const { manifestDigest, ...rest } = input;
      result = await buildRootfs(
        paths,
        { ...rest, imageDigest: manifestDigest, guestInit: initPath },
        {
          ...(options.onProgress ? { onProgress: options.onProgress } : {}),
          outPath,
        },
      );
      if (result.initSha256 !== initSha256) {
        throw new MicroagentError(
          'ROOTFS_BUILD_FAILED',
          `the guest init ${initPath} changed during the build; retry`,
          { data: { expected: initSha256, got: result.initSha256 } },
        );
      }
      return result;
    },
    options.lockTimeoutMs === undefined ? {} : { lockTimeoutMs: options.lockTimeoutMs },
  );
  return result ? { ...baseline, build: result } : baseline;
}

/**
 * A workspace's root disk: a qcow2 overlay on the baseline (the warm path
 * when the baseline is cached).
 */
export async function createWorkspaceDisk(baseline: Baseline, diskPath: string): Promise<void> {
  await createOverlay(baseline.path, diskPath);
}

export interface BaselineInfo {
  key: string;
  dir: string;
  path: string;
  record: BaselineRecord;
  /** Bytes the (sparse) image takes on the host. */
  allocatedBytes: number;
}

/** Every complete baseline in the cache (unreadable entries are skipped). */
export async function listBaselines(paths: StatePaths): Promise<BaselineInfo[]> {
  let names: string[];
  try {
    names = await readdir(paths.baselines);
  } catch {
    return [];
  }
  const out: BaselineInfo[] = [];
  for (const name of names.sort()) {
    if (!HEX64.test(name)) continue;
    const dir = paths.baselineDir(name);
    const record = await readBaseline(dir, name);
    if (!record) continue;
    const st = await stat(join(dir, ROOTFS_FILE));
    out.push({
      key: name,
      dir,
      path: join(dir, ROOTFS_FILE),
      record,
      allocatedBytes: st.blocks * 512,
    });
  }
  return out;
}

/**
 * Removes one baseline (under its lock). The caller checks that no
 * workspace overlay still uses it: an overlay without its backing file
 * cannot boot.
 *
 * @throws BASELINE_NOT_FOUND, BASELINE_BUSY
 */
export async function removeBaseline(paths: StatePaths, key: string): Promise<void> {
  if (!HEX64.test(key)) throw new MicroagentError('INVALID_ARGUMENT', `bad baseline key ${key}`);
  const dir = paths.baselineDir(key);
  await withLock(
    paths.baselineLock(key),
    {
      what: `rootfs baseline ${key}`,
      busyCode: 'BASELINE_BUSY',
      operation: 'remove',
      timeoutMs: 5000,
    },
    async () => {
      try {
        await stat(dir);
      } catch {
        throw new MicroagentError('BASELINE_NOT_FOUND', `no baseline ${key} in ${paths.baselines}`);
      }
      // Rename first, so nobody ever sees a half-deleted baseline as valid.
      const aside = join(paths.baselines, `${BUILDING_PREFIX}${key}-removing`);
      await rm(aside, { recursive: true, force: true });
      await rename(dir, aside);
      await rm(aside, { recursive: true, force: true });
    },
  );
}

/**
 * Removes build directories left by crashed builds (their lock is free).
 * Returns the removed paths.
 */
export async function reapBaselineLeftovers(paths: StatePaths): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(paths.baselines);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(BUILDING_PREFIX)) continue;
    const key = name.slice(BUILDING_PREFIX.length, BUILDING_PREFIX.length + 64);
    if (HEX64.test(key) && (await isLocked(paths.baselineLock(key)))) continue;
    await rm(join(paths.baselines, name), { recursive: true, force: true });
    removed.push(join(paths.baselines, name));
  }
  return removed;
}

async function readBaseline(dir: string, key: string): Promise<BaselineRecord | undefined> {
  try {
    const record = BaselineRecordSchema.parse(
      JSON.parse(await readFile(join(dir, RECORD_FILE), 'utf8')),
    );
    if (record.key !== key) return undefined;
    const st = await stat(join(dir, ROOTFS_FILE));
    return st.size === record.sizeBytes ? record : undefined;
  } catch {
    return undefined;
  }
}
