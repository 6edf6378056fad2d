/**
 * The content-addressed blob cache: `<state>/blobs/sha256/<hex>`, shared by
 * all images, files 0600. A blob lands there only after its digest has been
 * verified, by rename from a `.partial` file, so a present blob is always
 * complete and correct.
 *
 * Downloads of one blob are serialised across processes by a per-blob lock
 * file (`.<hex>.lock`, holder pid + start time, stale locks broken); a
 * waiter re-checks the cache once the lock frees. A `.partial` left by an
 * interrupted download is re-hashed and resumed with a Range request.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  chmod,
  open,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  truncate,
  utimes,
} from 'node:fs/promises';
import { join } from 'node:path';
import { MicroagentError } from '../errors.js';
import type { StatePaths } from '../paths.js';
import { ensurePrivateDir, fsyncDir, sha256, writeFileAtomic } from '../util/fs.js';
import { withImageLock } from './lock.js';
import { isNetworkError } from './registry.js';
import { isDigest } from './reference.js';

/** Folder of sha256 blobs. */
export function blobDir(paths: StatePaths): string {
  return join(paths.blobs, 'sha256');
}

/** Path of a blob in the cache (it may not exist yet). */
export function blobPath(paths: StatePaths, digest: string): string {
  return join(blobDir(paths), hexOf(digest));
}

function hexOf(digest: string): string {
  if (!isDigest(digest)) {
    throw new MicroagentError('INVALID_ARGUMENT', `"${digest}" is not a sha256 digest`, {
      data: { digest },
    });
  }
  return digest.slice('sha256:'.length);
}

function partialPath(paths: StatePaths, digest: string): string {
  return join(blobDir(paths), `.${hexOf(digest)}.partial`);
}

export function blobLockPath(paths: StatePaths, digest: string): string {
  return join(blobDir(paths), `.${hexOf(digest)}.lock`);
}

/** True when the blob is cached (and has the expected size, when given). */
export async function hasBlob(paths: StatePaths, digest: string, size?: number): Promise<boolean> {
  try {
    const s = await stat(blobPath(paths, digest));
    return size === undefined || s.size === size;
  } catch {
    return false;
  }
}

/** Reads a cached blob whole (manifests, configs); undefined when absent. */
export async function readBlob(paths: StatePaths, digest: string): Promise<Buffer | undefined> {
  try {
    return await readFile(blobPath(paths, digest));
  } catch {
    return undefined;
  }
}

/** Stores small content (a manifest or config already in memory) after checking its digest. */
export async function writeBlob(
  paths: StatePaths,
  digest: string,
  bytes: Uint8Array,
): Promise<string> {
  const path = blobPath(paths, digest);
  const actual = `sha256:${sha256(bytes)}`;
  if (actual !== digest) {
    throw new MicroagentError(
      'BLOB_DIGEST_MISMATCH',
      `content for ${digest} has digest ${actual}`,
      {
        data: { expected: digest, actual },
      },
    );
  }
  if (await hasBlob(paths, digest, bytes.byteLength)) return path;
  await ensurePrivateDir(blobDir(paths));
  await writeFileAtomic(path, bytes, 0o600);
  return path;
}

/** Lists the digests in the cache. */
export async function listBlobs(paths: StatePaths): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(blobDir(paths));
  } catch {
    return [];
  }
  return names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
}

/** Marks a cached blob as used now (prune's grace and "last used" go by mtime). */
export async function touchBlob(paths: StatePaths, digest: string): Promise<void> {
  const now = new Date();
  await utimes(blobPath(paths, digest), now, now).catch(() => undefined);
}

export interface BlobProgress {
  digest: string;
  /** Bytes on disk so far (resumed bytes included). */
  done: number;
  total: number;
}

/** Starts a GET of the blob from `offset` (Range when > 0); see RegistryClient.openBlob. */
export type BlobOpener = (offset: number) => Promise<Response>;

export interface FetchBlobOptions {
  /** Attempts for network failures mid-body (each resumes; default 4). */
  tries?: number;
  backoff?: (attempt: number) => Promise<void>;
  onProgress?: (p: BlobProgress) => void;
  /** How long to wait for another process's download of the same blob (default 30 min). */
  lockTimeoutMs?: number;
  /** Names the image in messages. */
  what?: string;
}

/**
 * Makes sure the blob is in the cache, downloading it if needed. Returns
 * its path and whether it was already there. Verifies size and digest while
 * streaming; a mismatch discards the download and retries once, then
 * throws BLOB_DIGEST_MISMATCH (nothing is left in the cache).
 */
export async function fetchBlob(
  paths: StatePaths,
  desc: { digest: string; size: number },
  open: BlobOpener,
  options: FetchBlobOptions = {},
): Promise<{ path: string; cached: boolean }> {
  const path = blobPath(paths, desc.digest);
  if (await hasBlob(paths, desc.digest, desc.size)) {
    await touchBlob(paths, desc.digest);
    options.onProgress?.({ digest: desc.digest, done: desc.size, total: desc.size });
    return { path, cached: true };
  }
  await ensurePrivateDir(blobDir(paths));
  return withImageLock(
    blobLockPath(paths, desc.digest),
    `blob ${desc.digest}`,
    options.lockTimeoutMs ?? 30 * 60_000,
    async () => {
      // Another process may have finished it while we waited for the lock.
      if (await hasBlob(paths, desc.digest, desc.size)) {
        options.onProgress?.({ digest: desc.digest, done: desc.size, total: desc.size });
        return { path, cached: true };
      }
      await download(paths, desc, open, options);
      return { path, cached: false };
    },
  );
}

class DigestMismatch extends Error {}

async function download(
  paths: StatePaths,
  desc: { digest: string; size: number },
  openBlob: BlobOpener,
  options: FetchBlobOptions,
): Promise<void> {
  const tries = Math.max(1, options.tries ?? 4);
  let mismatches = 0;
  let failures = 0;
  const partial = partialPath(paths, desc.digest);
  for (;;) {
    try {
      await attempt(paths, desc, openBlob, options);
      return;
    } catch (err) {
      if (err instanceof DigestMismatch) {
        await rm(partial, { force: true });
        if (++mismatches >= 2) {
          throw new MicroagentError(
            'BLOB_DIGEST_MISMATCH',
            `blob ${desc.digest}${options.what ? ` of ${options.what}` : ''} did not match its digest twice: ${err.message}`,
            { data: { digest: desc.digest, size: desc.size } },
          );
        }
        continue;
      }
      if (isNetworkError(err) && ++failures < tries) {
        await (options.backoff ?? defaultBackoff)(failures);
        continue; // the .partial keeps what arrived: resume
      }
      if (isNetworkError(err)) {
        throw new MicroagentError(
          'REGISTRY_UNREACHABLE',
          `download of blob ${desc.digest} failed ${failures} times: ${(err as Error).message}; the part downloaded is kept and resumed next time`,
          { data: { digest: desc.digest }, cause: err },
        );
      }
      throw err;
    }
  }
}

async function defaultBackoff(attempt: number): Promise<void> {
  const base = 250 * 2 ** (attempt - 1);
  await new Promise((r) => setTimeout(r, base + Math.random() * base * 0.5));
}

/** One GET: resume from the partial file when there is one. */
async function attempt(
  paths: StatePaths,
  desc: { digest: string; size: number },
  openBlob: BlobOpener,
  options: FetchBlobOptions,
): Promise<void> {
  const partial = partialPath(paths, desc.digest);
  let offset = 0;
  let hash = createHash('sha256');
  try {
    const s = await stat(partial);
    if (s.size > 0 && s.size <= desc.size) {
      hash = await hashFile(partial);
      offset = s.size;
    } else {
      await truncate(partial, 0);
    }
  } catch {
    // no partial
  }

  const handle = await open(partial, offset > 0 ? 'a' : 'w', 0o600);
  try {
    if (offset < desc.size) {
      let res = await openBlob(offset);
      if (offset > 0 && !(res.status === 206 && contentRangeStartsAt(res, offset))) {
        // The server ignored the range (200: the body is the whole blob) or
        // refused it (416, or a 206 for other bytes): start over.
        await handle.truncate(0);
        hash = createHash('sha256');
        offset = 0;
        if (res.status !== 200) {
          await res.body?.cancel().catch(() => undefined);
          res = await openBlob(0);
        }
      }
      if (offset === 0 && res.status !== 200) {
        await res.body?.cancel().catch(() => undefined);
        throw new MicroagentError(
          'REGISTRY_ERROR',
          `blob ${desc.digest}: the registry answered ${res.status} to a plain GET`,
        );
      }
      let lastReport = 0;
      // Gather the fetch's small chunks into ~1 MiB writes.
      const pending: Uint8Array[] = [];
      let pendingBytes = 0;
      const flush = async (): Promise<void> => {
        if (pendingBytes === 0) return;
        await writeAll(handle, pending.length === 1 ? pending[0]! : Buffer.concat(pending));
        pending.length = 0;
        pendingBytes = 0;
      };
      try {
        if (res.body) {
          for await (const chunk of res.body) {
            if (offset + chunk.byteLength > desc.size) {
              await res.body.cancel().catch(() => undefined);
              throw new DigestMismatch(
                `the registry sent more than the ${desc.size} bytes the manifest lists`,
              );
            }
            hash.update(chunk);
            pending.push(chunk);
            pendingBytes += chunk.byteLength;
            offset += chunk.byteLength;
            if (pendingBytes >= 1024 * 1024) await flush();
            const now = Date.now();
            if (options.onProgress && (now - lastReport > 100 || offset === desc.size)) {
              lastReport = now;
              options.onProgress({ digest: desc.digest, done: offset, total: desc.size });
            }
          }
        }
      } finally {
        // Keep what arrived before a network failure: the next attempt resumes from it.
        await flush();
      }
      if (offset < desc.size) {
        // Cut short: a network failure; the next attempt resumes.
        throw Object.assign(new TypeError(`terminated after ${offset} of ${desc.size} bytes`), {
          code: 'ECONNRESET',
        });
      }
    }
    const actual = `sha256:${hash.digest('hex')}`;
    if (actual !== desc.digest) throw new DigestMismatch(`the content has digest ${actual}`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await chmod(partial, 0o600);
  await rename(partial, blobPath(paths, desc.digest));
  await fsyncDir(blobDir(paths));
  options.onProgress?.({ digest: desc.digest, done: desc.size, total: desc.size });
}

function contentRangeStartsAt(res: Response, offset: number): boolean {
  const cr = res.headers.get('content-range');
  return cr !== null && new RegExp(`^bytes ${offset}-`).test(cr);
}

async function writeAll(
  handle: import('node:fs/promises').FileHandle,
  chunk: Uint8Array,
): Promise<void> {
  let written = 0;
  while (written < chunk.byteLength) {
    const { bytesWritten } = await handle.write(chunk, written, chunk.byteLength - written);
    written += bytesWritten;
  }
}

async function hashFile(path: string): Promise<Hash> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
  }
  return hash;
}

/** Removes a blob from the cache (no error when absent). */
export async function removeBlob(paths: StatePaths, digest: string): Promise<number> {
  const path = blobPath(paths, digest);
  try {
    const s = await stat(path);
    await rm(path, { force: true });
    return s.size;
  } catch {
    return 0;
  }
}

/** Partial downloads in the cache (digest and bytes), for prune. */
export async function listPartials(paths: StatePaths): Promise<{ digest: string; path: string }[]> {
  let names: string[];
  try {
    names = await readdir(blobDir(paths));
  } catch {
    return [];
  }
  return names
    .map((n) => /^\.([a-f0-9]{64})\.partial$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ digest: `sha256:${m[1]}`, path: join(blobDir(paths), m[0]) }));
}
