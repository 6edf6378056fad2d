/**
 * Hash verification of a kernel dir against its manifest.
 *
 * Verification cache (verify-cache.json next to the manifest), used only by
 * the check before every boot: hashing the ~53 MB vmlinux takes 50-75 ms
 * with SHA-NI and a warm page cache (more when cold), on every boot. A file
 * whose (dev, ino, size, mtime ns, ctime ns) are unchanged since it last
 * hashed correctly is not re-hashed.
 *
 * Trade-off: any write through the file system changes ctime (which no
 * unprivileged process can set back), and a replaced file has a new inode,
 * so the cache misses nothing that goes through the VFS. It does miss
 * changes below it: media corruption, or writes to the raw block device.
 * `kernel verify` (verifyKernel) therefore always re-hashes everything.
 * Whoever can write the kernel dir can also rewrite the manifest and the
 * cache; the manifest protects against accidents and partial tampering, and
 * the apt archive signature (checked at install) against a bad source.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { sha256File, writeJsonAtomic } from '../util/fs.js';
import { moduleFileName, MODULES_DIR, type FileRecord, type KernelManifest } from './manifest.js';

export const VERIFY_CACHE_FILE = 'verify-cache.json';

const CacheEntrySchema = z
  .object({
    dev: z.string(),
    ino: z.string(),
    size: z.string(),
    mtimeNs: z.string(),
    ctimeNs: z.string(),
    sha256: z.string(),
  })
  .strict();
const CacheSchema = z.object({ v: z.literal(1), entries: z.record(CacheEntrySchema) }).strict();
type CacheEntry = z.infer<typeof CacheEntrySchema>;

export interface FileCheck {
  /** Path relative to the kernel dir (e.g. "vmlinux", "modules/01-virtio_ring.ko"). */
  name: string;
  expected: string;
  /** The SHA-256 found, or "missing". */
  actual: string;
  ok: boolean;
  /** True when the result came from the verification cache (not re-hashed). */
  cached?: boolean;
}

/** Every file the manifest vouches for. */
export function manifestFiles(
  manifest: KernelManifest,
): Array<{ name: string; sha256: string; size?: number }> {
  return [
    record(manifest.files.kernel),
    record(manifest.files.initramfs),
    ...manifest.modules.map((m, i) => ({
      name: `${MODULES_DIR}/${moduleFileName(i, m.name)}`,
      sha256: m.sha256,
    })),
  ];
}

function record(r: FileRecord): { name: string; sha256: string; size: number } {
  return { name: r.path, sha256: r.sha256, size: r.size };
}

/**
 * Hashes the given files of kernelDir. With useCache, files whose stat
 * identity matches a cache entry for the expected hash are not re-read.
 * Files that hash correctly are (re)entered into the cache either way.
 */
export async function checkFiles(
  kernelDir: string,
  files: ReadonlyArray<{ name: string; sha256: string; size?: number }>,
  useCache: boolean,
): Promise<FileCheck[]> {
  const cache = await readCache(kernelDir);
  let dirty = false;
  const results: FileCheck[] = [];
  for (const f of files) {
    const path = join(kernelDir, f.name);
    let st;
    try {
      st = await stat(path, { bigint: true });
    } catch {
      results.push({ name: f.name, expected: f.sha256, actual: 'missing', ok: false });
      continue;
    }
    const key = identity(st, f.sha256);
    const hit = cache.entries[f.name];
    if (useCache && hit && sameEntry(hit, key)) {
      results.push({ name: f.name, expected: f.sha256, actual: f.sha256, ok: true, cached: true });
      continue;
    }
    const actual = await sha256File(path);
    const ok = actual === f.sha256;
    results.push({ name: f.name, expected: f.sha256, actual, ok });
    if (ok && !(hit && sameEntry(hit, key))) {
      cache.entries[f.name] = key;
      dirty = true;
    } else if (!ok && hit) {
      delete cache.entries[f.name];
      dirty = true;
    }
  }
  if (dirty)
    await writeJsonAtomic(join(kernelDir, VERIFY_CACHE_FILE), cache).catch(() => undefined);
  return results;
}

function identity(
  st: { dev: bigint; ino: bigint; size: bigint; mtimeNs: bigint; ctimeNs: bigint },
  sha256: string,
): CacheEntry {
  return {
    dev: st.dev.toString(),
    ino: st.ino.toString(),
    size: st.size.toString(),
    mtimeNs: st.mtimeNs.toString(),
    ctimeNs: st.ctimeNs.toString(),
    sha256,
  };
}

function sameEntry(a: CacheEntry, b: CacheEntry): boolean {
  return (
    a.dev === b.dev &&
    a.ino === b.ino &&
    a.size === b.size &&
    a.mtimeNs === b.mtimeNs &&
    a.ctimeNs === b.ctimeNs &&
    a.sha256 === b.sha256
  );
}

async function readCache(kernelDir: string): Promise<z.infer<typeof CacheSchema>> {
  try {
    const parsed = CacheSchema.safeParse(
      JSON.parse(await readFile(join(kernelDir, VERIFY_CACHE_FILE), 'utf8')),
    );
    if (parsed.success) return parsed.data;
  } catch {
    // Missing or unreadable: start empty (the cache only ever saves work).
  }
  return { v: 1, entries: {} };
}

/**
 * Records files this process has just written (and so knows the hashes of)
 * in the verification cache, so the first boot after an install does not
 * re-hash them.
 */
export async function seedVerifyCache(
  kernelDir: string,
  files: ReadonlyArray<{ name: string; sha256: string }>,
): Promise<void> {
  const cache = await readCache(kernelDir);
  for (const f of files) {
    try {
      cache.entries[f.name] = identity(
        await stat(join(kernelDir, f.name), { bigint: true }),
        f.sha256,
      );
    } catch {
      delete cache.entries[f.name];
    }
  }
  await writeJsonAtomic(join(kernelDir, VERIFY_CACHE_FILE), cache).catch(() => undefined);
}
