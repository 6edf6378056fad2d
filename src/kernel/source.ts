/**
 * Custom kernel sources: a local file or an URL, each with a required
 * SHA-256 (fail closed: no digest, no install).
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { z } from 'zod';
import { MicroagentError } from '../errors.js';
import { sha256File } from '../util/fs.js';

const Sha256Schema = z
  .string()
  .transform((s) => s.toLowerCase().replace(/^sha256:/, ''))
  .pipe(z.string().regex(/^[0-9a-f]{64}$/, 'a SHA-256 in hex (64 digits)'));

export const KernelSourceSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('apt'),
      /** Metapackage or linux-image-<release>; default linux-image-cloud-amd64. */
      package: z
        .string()
        .regex(/^[a-z0-9][a-z0-9+.-]+$/)
        .optional(),
    })
    .strict(),
  z.object({ kind: z.literal('file'), path: z.string().min(1), sha256: Sha256Schema }).strict(),
  z.object({ kind: z.literal('url'), url: z.string().url(), sha256: Sha256Schema }).strict(),
]);
export type KernelSource = z.input<typeof KernelSourceSchema>;
export type ParsedKernelSource = z.output<typeof KernelSourceSchema>;

export function parseKernelSource(source: unknown): ParsedKernelSource {
  const r = KernelSourceSchema.safeParse(source);
  if (!r.success) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `invalid kernel source: ${r.error.issues.map((i) => `${i.path.join('.') || 'source'}: ${i.message}`).join('; ')}`,
      {
        remediation:
          'Give {kind:"apt"}, {kind:"file", path, sha256} or {kind:"url", url, sha256}; custom kernels need their SHA-256.',
      },
    );
  }
  return r.data;
}

/** Largest kernel image accepted from a file or URL. */
const MAX_KERNEL_BYTES = 512 * 1024 * 1024;

/** Checks a local file against the required digest. */
export async function verifyFileSource(path: string, sha256: string): Promise<void> {
  let actual: string;
  try {
    actual = await sha256File(path);
  } catch (err) {
    throw new MicroagentError(
      'KERNEL_INSTALL_FAILED',
      `cannot read kernel file ${path}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (actual !== sha256) throw mismatch(path, sha256, actual);
}

/**
 * Downloads url into dir while hashing it; throws unless the content has
 * the required SHA-256. https only, except to a loopback host (tests, local
 * mirrors).
 */
export async function fetchUrlSource(
  url: string,
  sha256: string,
  dir: string,
  signal?: AbortSignal,
): Promise<string> {
  checkUrl(url);
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow', ...(signal ? { signal } : {}) });
  } catch (err) {
    throw new MicroagentError(
      'KERNEL_INSTALL_FAILED',
      `cannot fetch ${url}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  checkUrl(res.url || url); // a redirect must not downgrade to plain http
  if (!res.ok || !res.body) {
    throw new MicroagentError(
      'KERNEL_INSTALL_FAILED',
      `fetching ${url} returned HTTP ${res.status}`,
      { data: { url, status: res.status } },
    );
  }
  const path = join(dir, 'download');
  const hash = createHash('sha256');
  let size = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      if (size > MAX_KERNEL_BYTES) return cb(new Error(`larger than ${MAX_KERNEL_BYTES} bytes`));
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  try {
    await pipeline(
      Readable.fromWeb(res.body as import('node:stream/web').ReadableStream),
      meter,
      createWriteStream(path, { mode: 0o600 }),
    );
  } catch (err) {
    throw new MicroagentError(
      'KERNEL_INSTALL_FAILED',
      `downloading ${url} failed: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const actual = hash.digest('hex');
  if (actual !== sha256) throw mismatch(url, sha256, actual);
  return path;
}

function checkUrl(raw: string): void {
  const u = new URL(raw);
  if (u.protocol === 'https:') return;
  if (u.protocol === 'http:' && isLoopback(u.hostname)) return;
  throw new MicroagentError(
    'INVALID_ARGUMENT',
    `refusing kernel URL ${raw}: only https (or http to a loopback address) is allowed`,
    {
      data: { url: raw },
    },
  );
}

function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1';
  return false;
}

function mismatch(what: string, expected: string, actual: string): MicroagentError {
  return new MicroagentError(
    'KERNEL_CHECKSUM_MISMATCH',
    `${what} has SHA-256 ${actual}, not the required ${expected}`,
    {
      data: { source: what, expected, actual },
    },
  );
}
