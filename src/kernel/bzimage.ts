/**
 * bzImage → vmlinux: find the compressed payload (from the x86 boot
 * protocol's setup header when present, else by scanning for compression
 * magics the way the kernel's scripts/extract-vmlinux does), decompress it
 * and check that the result is an x86-64 ELF.
 */
import { inflateRawSync } from 'node:zlib';
import { MicroagentError } from '../errors.js';
import { run } from '../proc/spawn.js';
import { isX8664Executable } from '../util/elf.js';
import { decodeLz4Legacy } from './lz4.js';

export type Compression = 'gzip' | 'xz' | 'zstd' | 'lz4';

const MAGICS: ReadonlyArray<{ name: Compression; bytes: Buffer }> = [
  { name: 'gzip', bytes: Buffer.from([0x1f, 0x8b, 0x08]) },
  { name: 'xz', bytes: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) },
  { name: 'zstd', bytes: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]) },
  { name: 'lz4', bytes: Buffer.from([0x02, 0x21, 0x4c, 0x18]) },
];
/** Formats Linux can use that we do not decode; named in the error. */
const UNSUPPORTED: ReadonlyArray<{ name: string; bytes: Buffer }> = [
  { name: 'bzip2', bytes: Buffer.from('BZh') },
  { name: 'lzma', bytes: Buffer.from([0x5d, 0x00, 0x00, 0x00]) },
  { name: 'lzo', bytes: Buffer.from([0x89, 0x4c, 0x5a]) },
];

/** A vmlinux is ~50-100 MB; this bounds a hostile or broken payload. */
const MAX_VMLINUX = 512 * 1024 * 1024;

export interface BzImageHeader {
  /** Boot protocol version, e.g. 0x020f. */
  protocol: number;
  /** The kernel_version string (release first), when the header has one. */
  versionString?: string;
  payloadOffset: number;
  payloadLength: number;
}

/** True when buf starts like an x86 bzImage ("HdrS" setup header). */
export function isBzImage(buf: Uint8Array): boolean {
  return (
    buf.length > 0x250 && Buffer.from(buf.subarray(0x202, 0x206)).toString('latin1') === 'HdrS'
  );
}

/** Parses the setup header (Documentation/x86/boot.rst); undefined if not a bzImage. */
export function parseBzImageHeader(buf: Uint8Array): BzImageHeader | undefined {
  if (!isBzImage(buf)) return undefined;
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const protocol = b.readUInt16LE(0x206);
  if (protocol < 0x208) return undefined; // no payload_offset before 2.08
  const setupSects = b[0x1f1] || 4; // 0 means 4, for ancient compatibility
  const pmStart = (setupSects + 1) * 512;
  const payloadOffset = pmStart + b.readUInt32LE(0x248);
  const payloadLength = b.readUInt32LE(0x24c);
  if (payloadOffset + payloadLength > b.length) return undefined;
  let versionString: string | undefined;
  const kv = b.readUInt16LE(0x20e);
  if (kv !== 0 && kv + 0x200 < b.length) {
    const start = kv + 0x200;
    const end = b.indexOf(0, start);
    versionString = b
      .subarray(start, end < 0 ? start + 256 : Math.min(end, start + 256))
      .toString('latin1');
  }
  return {
    protocol,
    ...(versionString ? { versionString } : {}),
    payloadOffset,
    payloadLength,
  };
}

export interface ExtractResult {
  vmlinux: Buffer;
  compression: Compression;
}

/**
 * Extracts the ELF vmlinux from a bzImage. Throws KERNEL_INVALID when no
 * payload decodes to an x86-64 ELF (naming an unsupported compression when
 * that is the reason).
 */
export async function extractVmlinux(bzImage: Buffer): Promise<ExtractResult> {
  const header = parseBzImageHeader(bzImage);
  if (header) {
    const payload = bzImage.subarray(
      header.payloadOffset,
      header.payloadOffset + header.payloadLength,
    );
    const kind = MAGICS.find((m) => startsWith(payload, m.bytes));
    if (kind) {
      const out = await tryDecompress(kind.name, payload);
      if (out) return { vmlinux: out, compression: kind.name };
    }
    const unsupported = UNSUPPORTED.find((m) => startsWith(payload, m.bytes));
    if (unsupported) {
      throw new MicroagentError(
        'KERNEL_INVALID',
        `the bzImage payload is ${unsupported.name}-compressed, which microagent cannot decode`,
        { remediation: 'Install the kernel as an uncompressed ELF vmlinux instead.' },
      );
    }
  }
  // No usable header: scan for each magic, as scripts/extract-vmlinux does.
  for (const m of MAGICS) {
    let from = 0;
    for (let tries = 0; tries < 64; tries++) {
      const at = bzImage.indexOf(m.bytes, from);
      if (at < 0) break;
      const out = await tryDecompress(m.name, bzImage.subarray(at));
      if (out) return { vmlinux: out, compression: m.name };
      from = at + 1;
    }
  }
  throw new MicroagentError(
    'KERNEL_INVALID',
    'no gzip/xz/zstd/lz4 payload in the image decompresses to an x86-64 ELF vmlinux',
  );
}

/** Decompresses data; undefined when it is not a valid stream of that kind or not a vmlinux. */
async function tryDecompress(kind: Compression, data: Buffer): Promise<Buffer | undefined> {
  let out: Buffer | undefined;
  try {
    switch (kind) {
      case 'lz4':
        out = decodeLz4Legacy(data, MAX_VMLINUX).data;
        break;
      case 'gzip':
        out = gunzipFirstMember(data);
        break;
      case 'xz':
        // --single-stream: ignore whatever follows the first stream (trailer).
        out = await decompressWithTool(['xz', '-dc', '--single-stream'], data, 'xz-utils');
        break;
      case 'zstd':
        out = await decompressWithTool(['zstd', '-dcq'], data, 'zstd');
        break;
    }
  } catch (err) {
    if (err instanceof MicroagentError && err.code === 'HOST_TOOL_MISSING') throw err;
    return undefined;
  }
  return out && isX8664Executable(out) ? out : undefined;
}

/**
 * Runs a decompressor over data. A non-zero exit is tolerated when output
 * was produced: the kernel build appends a 4-byte size after the stream,
 * which zstd reports as trailing garbage. The caller validates the output.
 */
async function decompressWithTool(argv: string[], data: Buffer, pkg: string): Promise<Buffer> {
  const r = await run(argv, {
    input: data,
    allowFailure: true,
    providedBy: pkg,
    maxOutputBytes: MAX_VMLINUX,
    timeoutMs: 120_000,
  });
  return r.stdout;
}

function startsWith(buf: Uint8Array, prefix: Uint8Array): boolean {
  if (buf.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (buf[i] !== prefix[i]) return false;
  return true;
}

/**
 * Inflates the first gzip member and ignores what follows. (gunzipSync
 * would parse trailing bytes as another member and fail; raw inflate stops
 * at the final deflate block.) The CRC is not checked: the caller validates
 * the result as an ELF, and the file's own SHA-256 was checked before.
 */
function gunzipFirstMember(data: Buffer): Buffer {
  if (data.length < 18 || data[0] !== 0x1f || data[1] !== 0x8b || data[2] !== 8)
    throw new Error('not gzip');
  const flags = data[3]!;
  let p = 10;
  if (flags & 4) p += 2 + data.readUInt16LE(p); // FEXTRA
  if (flags & 8) p = data.indexOf(0, p) + 1; // FNAME
  if (flags & 16) p = data.indexOf(0, p) + 1; // FCOMMENT
  if (flags & 2) p += 2; // FHCRC
  if (p <= 0 || p >= data.length) throw new Error('truncated gzip header');
  return inflateRawSync(data.subarray(p), { maxOutputLength: MAX_VMLINUX });
}
