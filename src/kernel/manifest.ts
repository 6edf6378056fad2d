/**
 * The kernel manifest (`<state>/kernels/<id>/manifest.json`): what was
 * installed, from where, and the SHA-256 of every file, checked by
 * `kernel verify` and before every boot.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { MicroagentError } from '../errors.js';
import { writeJsonAtomic } from '../util/fs.js';

export const MANIFEST_FILE = 'manifest.json';
export const INITRAMFS_FILE = 'initramfs.cpio';
export const MODULES_DIR = 'modules';

const Sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, 'a lowercase hex SHA-256');

/** Kernel ids double as directory names. */
export const KernelIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/, 'letters, digits, ".", "_", "+", "-"')
  .refine((s) => s !== 'default', '"default" is reserved');

/** A file of the kernel dir; path is relative to it and may not leave it. */
const FileRecordSchema = z
  .object({
    path: z
      .string()
      .min(1)
      .refine(
        (p) => !p.startsWith('/') && !p.split('/').includes('..'),
        'a relative path inside the kernel dir',
      ),
    sha256: Sha256Schema,
    size: z.number().int().nonnegative(),
  })
  .strict();
export type FileRecord = z.infer<typeof FileRecordSchema>;

export const KernelSourceRecordSchema = z
  .object({
    kind: z.enum(['apt', 'file', 'url']),
    /** apt: the binary package, e.g. linux-image-6.1.0-56-cloud-amd64. */
    package: z.string().optional(),
    packageVersion: z.string().optional(),
    /** apt: SHA-256 of the .deb, as vouched for by the signed archive index. */
    debSha256: Sha256Schema.optional(),
    url: z.string().optional(),
    path: z.string().optional(),
    /** file/url: the SHA-256 the caller required of the source file. */
    sha256: Sha256Schema.optional(),
  })
  .strict();

export const BootFormatSchema = z.enum(['elf-pvh', 'bzimage']);
export type BootFormat = z.infer<typeof BootFormatSchema>;

export const KernelManifestSchema = z
  .object({
    v: z.literal(1),
    id: KernelIdSchema,
    /** Kernel release, e.g. 6.1.0-56-cloud-amd64 ("unknown" if the image does not say). */
    version: z.string().min(1),
    source: KernelSourceRecordSchema,
    bootFormat: BootFormatSchema,
    files: z.object({ kernel: FileRecordSchema, initramfs: FileRecordSchema }).strict(),
    /** In load order; each is kept as modules/NN-<name>.ko for regenerating the initramfs. */
    modules: z.array(
      z.object({ name: z.string().regex(/^[A-Za-z0-9_]+$/), sha256: Sha256Schema }).strict(),
    ),
    /** SHA-256 of the guest init packed as /init in the initramfs. */
    initSha256: Sha256Schema,
    installedAt: z.string().datetime(),
  })
  .strict();
export type KernelManifest = z.infer<typeof KernelManifestSchema>;

/** File name of module i (0-based) in the kernel's modules/ dir and the initramfs. */
export function moduleFileName(index: number, name: string): string {
  return `${String(index + 1).padStart(2, '0')}-${name}.ko`;
}

export async function readManifest(kernelDir: string, id: string): Promise<KernelManifest> {
  const path = join(kernelDir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new MicroagentError(
        'KERNEL_NOT_INSTALLED',
        `kernel ${id} is not installed (no ${path})`,
        {
          data: { id },
          cause: err,
        },
      );
    }
    throw err;
  }
  let parsed;
  try {
    parsed = KernelManifestSchema.safeParse(JSON.parse(text));
  } catch (err) {
    throw new MicroagentError('KERNEL_VERIFY_FAILED', `kernel manifest ${path} is not JSON`, {
      data: { id, path },
      cause: err,
    });
  }
  if (!parsed.success) {
    throw new MicroagentError(
      'KERNEL_VERIFY_FAILED',
      `kernel manifest ${path} is invalid: ${parsed.error.message}`,
      {
        data: { id, path },
      },
    );
  }
  if (parsed.data.id !== id) {
    throw new MicroagentError(
      'KERNEL_VERIFY_FAILED',
      `kernel manifest ${path} names id ${parsed.data.id}, not ${id}`,
      {
        data: { id, path },
      },
    );
  }
  return parsed.data;
}

export async function writeManifest(kernelDir: string, manifest: KernelManifest): Promise<void> {
  await writeJsonAtomic(join(kernelDir, MANIFEST_FILE), KernelManifestSchema.parse(manifest));
}
