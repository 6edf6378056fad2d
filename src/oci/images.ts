/**
 * The local image index: `<state>/images/index.json`, one entry per
 * canonical reference (`docker.io/library/ubuntu:24.04`) naming the
 * manifest digest, platform and the blobs it needs. Written atomically under
 * a lock. Also: pins of pulls in progress, and prune of unreferenced blobs.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { MicroagentError } from '../errors.js';
import type { StatePaths } from '../paths.js';
import { currentProcess, processAlive } from '../proc/spawn.js';
import { ensurePrivateDir, writeJsonAtomic } from '../util/fs.js';
import { blobLockPath, listBlobs, listPartials, removeBlob } from './blobs.js';
import { withImageLock } from './lock.js';
import { PlatformSchema } from './manifest.js';
import { canonicalReference, isDigest, parseReference } from './reference.js';

export const ImageEntrySchema = z
  .object({
    /** Manifest digest (of the platform's image manifest). */
    digest: z.string(),
    /** Digest of the image index / manifest list it was picked from, if any. */
    indexDigest: z.string().optional(),
    platform: PlatformSchema.strict(),
    pulledAt: z.string(),
    /** Compressed bytes: config + layers. */
    size: z.number().int().nonnegative(),
    configDigest: z.string(),
    /** Layer digests, in order. */
    layers: z.array(z.string()),
  })
  .strict();
export type ImageEntry = z.infer<typeof ImageEntrySchema>;

const IndexFileSchema = z
  .object({ version: z.literal(1), images: z.record(ImageEntrySchema) })
  .strict();
type IndexFile = z.infer<typeof IndexFileSchema>;

export interface ImageRecord extends ImageEntry {
  /** Canonical reference (the key). */
  reference: string;
}

function indexLock(paths: StatePaths): string {
  return join(paths.locks, 'images-index.lock');
}

async function readIndex(paths: StatePaths): Promise<IndexFile> {
  let text: string;
  try {
    text = await readFile(paths.imageIndex, 'utf8');
  } catch {
    return { version: 1, images: {} };
  }
  const parsed = IndexFileSchema.safeParse(JSON.parse(text));
  if (!parsed.success) {
    throw new MicroagentError(
      'STATE_CORRUPT',
      `${paths.imageIndex} is malformed: ${parsed.error.message}`,
      {
        data: { file: paths.imageIndex },
      },
    );
  }
  return parsed.data;
}

/** Runs fn on the index under its lock and writes the result back if fn changed it. */
async function updateIndex<T>(
  paths: StatePaths,
  fn: (index: IndexFile) => Promise<T> | T,
): Promise<T> {
  await ensurePrivateDir(paths.images);
  return withImageLock(indexLock(paths), 'the image index', 60_000, async () => {
    const index = await readIndex(paths);
    const before = JSON.stringify(index);
    const result = await fn(index);
    if (JSON.stringify(index) !== before) await writeJsonAtomic(paths.imageIndex, index);
    return result;
  });
}

/** Records (or replaces) an image under its canonical reference. */
export async function recordImage(
  paths: StatePaths,
  reference: string,
  entry: ImageEntry,
): Promise<ImageRecord> {
  const key = canonicalReference(reference);
  const checked = ImageEntrySchema.parse(entry);
  await updateIndex(paths, (index) => {
    index.images[key] = checked;
  });
  return { reference: key, ...checked };
}

/** All pulled images, sorted by reference. */
export async function listImages(paths: StatePaths): Promise<ImageRecord[]> {
  const index = await readIndex(paths);
  return Object.entries(index.images)
    .map(([reference, e]) => ({ reference, ...e }))
    .sort((a, b) => a.reference.localeCompare(b.reference));
}

/**
 * Finds images by reference (normalised: `ubuntu` finds
 * `docker.io/library/ubuntu:latest`) or by manifest digest (full, or a
 * unique hex prefix of at least 12). Returns [] when nothing matches.
 */
export async function findImages(paths: StatePaths, refOrDigest: string): Promise<ImageRecord[]> {
  const all = await listImages(paths);
  return matchImages(all, refOrDigest);
}

function matchImages(all: ImageRecord[], refOrDigest: string): ImageRecord[] {
  const s = refOrDigest.trim();
  const hex = s.startsWith('sha256:') ? s.slice(7) : s;
  if (isDigest(s) || (/^[a-f0-9]{12,64}$/.test(hex) && !s.includes('/'))) {
    const byDigest = all.filter((r) => r.digest.slice(7).startsWith(hex));
    if (byDigest.length > 0 || isDigest(s)) return byDigest;
  }
  const key = canonicalReference(s);
  return all.filter((r) => r.reference === key);
}

/** One image by reference or digest; IMAGE_NOT_FOUND when absent. */
export async function getImage(paths: StatePaths, refOrDigest: string): Promise<ImageRecord> {
  const found = await findImages(paths, refOrDigest);
  const first = found[0];
  if (first === undefined) throw notPulled(refOrDigest);
  return first;
}

function notPulled(ref: string): MicroagentError {
  return new MicroagentError('IMAGE_NOT_FOUND', `image ${ref} has not been pulled`, {
    remediation:
      'Pull it first (`microagent image pull IMAGE`); `microagent image list` shows what is here.',
    data: { reference: ref },
  });
}

/**
 * Adds another reference for a pulled image (`tag SOURCE TARGET`). The
 * target may be any valid reference; it is normalised.
 */
export async function tagImage(
  paths: StatePaths,
  source: string,
  target: string,
): Promise<ImageRecord> {
  const targetKey = canonicalReference(target);
  return updateIndex(paths, (index) => {
    const all = Object.entries(index.images).map(([reference, e]) => ({ reference, ...e }));
    const [src] = matchImages(all, source);
    if (src === undefined) throw notPulled(source);
    const { reference: _ref, ...entry } = src;
    const t = parseReference(target);
    if (t.digest !== undefined && t.digest !== entry.digest) {
      throw new MicroagentError(
        'INVALID_ARGUMENT',
        `target ${target} names digest ${t.digest}, but ${source} is ${entry.digest}`,
        { data: { source, target } },
      );
    }
    index.images[targetKey] = entry;
    return { reference: targetKey, ...entry };
  });
}

/**
 * Removes image records: by reference (that one record) or by digest (every
 * record with it). Blobs stay until pruneImages. IMAGE_NOT_FOUND when none match.
 */
export async function removeImage(paths: StatePaths, refOrDigest: string): Promise<ImageRecord[]> {
  return updateIndex(paths, (index) => {
    const all = Object.entries(index.images).map(([reference, e]) => ({ reference, ...e }));
    const matched = matchImages(all, refOrDigest);
    if (matched.length === 0) throw notPulled(refOrDigest);
    for (const r of matched) delete index.images[r.reference];
    return matched;
  });
}

/**
 * Something outside the image index that keeps blobs alive (a rootfs
 * baseline being built, a workspace). Returns the digests it needs.
 */
export type BlobRootProvider = (paths: StatePaths) => Promise<Iterable<string>> | Iterable<string>;

const rootProviders: BlobRootProvider[] = [];

/** Registers a provider of blob digests that pruneImages must keep. */
export function registerBlobRoots(provider: BlobRootProvider): void {
  rootProviders.push(provider);
}

export interface PruneResult {
  removedBlobs: string[];
  reclaimedBytes: number;
  /** Stale partial downloads removed. */
  removedPartials: number;
}

/**
 * Deletes every cached blob that no image in the index, no pull in
 * progress (pins), and no registered root provider references. Runs under
 * the index lock, so it never races with a pull's pin or record.
 */
export async function pruneImages(
  paths: StatePaths,
  options: { roots?: BlobRootProvider[] } = {},
): Promise<PruneResult> {
  await ensurePrivateDir(paths.images);
  return withImageLock(indexLock(paths), 'the image index', 60_000, async () => {
    const keep = new Set<string>();
    const index = await readIndex(paths);
    for (const e of Object.values(index.images)) {
      keep.add(e.digest);
      keep.add(e.configDigest);
      if (e.indexDigest) keep.add(e.indexDigest);
      for (const l of e.layers) keep.add(l);
    }
    for (const d of await livePins(paths)) keep.add(d);
    for (const provider of [...rootProviders, ...(options.roots ?? [])]) {
      for (const d of await provider(paths)) keep.add(d);
    }
    const result: PruneResult = { removedBlobs: [], reclaimedBytes: 0, removedPartials: 0 };
    for (const digest of await listBlobs(paths)) {
      if (keep.has(digest)) continue;
      result.reclaimedBytes += await removeBlob(paths, digest);
      result.removedBlobs.push(digest);
    }
    for (const p of await listPartials(paths)) {
      if (keep.has(p.digest) || (await lockHeld(blobLockPath(paths, p.digest)))) continue;
      await rm(p.path, { force: true });
      result.removedPartials++;
    }
    return result;
  });
}

async function lockHeld(path: string): Promise<boolean> {
  try {
    const owner = JSON.parse(await readFile(path, 'utf8')) as { pid?: number; startTime?: number };
    return (
      typeof owner.pid === 'number' &&
      processAlive({ pid: owner.pid, startTime: owner.startTime ?? 0 })
    );
  } catch {
    return false;
  }
}

// --- Pins: the blobs a pull in progress needs, so prune keeps them. ---

const PinSchema = z
  .object({ pid: z.number().int(), startTime: z.number(), digests: z.array(z.string()) })
  .strict();

/**
 * Records (under the index lock) that this process is about to use these
 * blobs. Returns a release function. Pins of dead processes are ignored and
 * removed by the next prune.
 */
export async function pinBlobs(paths: StatePaths, digests: string[]): Promise<() => Promise<void>> {
  await ensurePrivateDir(paths.imagePins);
  const { startTime } = currentProcess();
  const file = join(
    paths.imagePins,
    `${process.pid}-${startTime}-${Math.random().toString(36).slice(2, 10)}.json`,
  );
  await withImageLock(indexLock(paths), 'the image index', 60_000, () =>
    writeJsonAtomic(file, { pid: process.pid, startTime, digests }),
  );
  return () => rm(file, { force: true });
}

async function livePins(paths: StatePaths): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(paths.imagePins);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const name of names.filter((n) => n.endsWith('.json'))) {
    const file = join(paths.imagePins, name);
    try {
      const pin = PinSchema.parse(JSON.parse(await readFile(file, 'utf8')));
      if (processAlive(pin)) out.push(...pin.digests);
      else await rm(file, { force: true });
    } catch {
      await rm(file, { force: true });
    }
  }
  return out;
}
