/**
 * LZ4 "legacy" frame decoder (magic 0x184C2102), the format `lz4 -l` writes
 * and the Linux build uses for LZ4-compressed bzImage payloads.
 *
 * Legacy frame: the 4-byte magic, then blocks, each a 4-byte little-endian
 * compressed size followed by one LZ4 block that decodes to at most 8 MiB.
 * Blocks are independent (no back-references across blocks). The stream ends
 * at end of input, at a size that cannot be a block (the kernel build appends
 * the 4-byte uncompressed size after the last block), or at a repeated magic
 * (concatenated frames, which we simply continue through).
 */

export const LZ4_LEGACY_MAGIC = 0x184c2102;
/** Largest decoded size of one legacy block. */
export const LZ4_LEGACY_BLOCK_SIZE = 8 * 1024 * 1024;
/** LZ4_compressBound(8 MiB): the largest compressed size a legacy block can have. */
const MAX_COMPRESSED_BLOCK = LZ4_LEGACY_BLOCK_SIZE + Math.floor(LZ4_LEGACY_BLOCK_SIZE / 255) + 16;

export class Lz4Error extends Error {
  override readonly name = 'Lz4Error';
}

export interface Lz4LegacyResult {
  data: Buffer;
  /** Input bytes consumed (magic + blocks); what follows is trailer or garbage. */
  consumed: number;
}

/**
 * Decodes an LZ4 legacy stream starting at input[0] (which must be the magic).
 * Throws Lz4Error on a malformed block; stops quietly at a trailer.
 */
export function decodeLz4Legacy(input: Uint8Array, maxOutput = 1 << 30): Lz4LegacyResult {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  if (input.length < 4 || view.getUint32(0, true) !== LZ4_LEGACY_MAGIC) {
    throw new Lz4Error('not an LZ4 legacy stream (bad magic)');
  }
  const chunks: Buffer[] = [];
  let total = 0;
  let pos = 4;
  const scratch = Buffer.allocUnsafe(LZ4_LEGACY_BLOCK_SIZE);
  while (pos + 4 <= input.length) {
    const size = view.getUint32(pos, true);
    if (size === LZ4_LEGACY_MAGIC) {
      pos += 4; // a second frame concatenated to the first
      continue;
    }
    // A size that cannot be a block (0, too large, or past the end) is the
    // trailer the kernel build appends; the stream ends before it.
    if (size === 0 || size > MAX_COMPRESSED_BLOCK || pos + 4 + size > input.length) break;
    const n = decodeLz4Block(input.subarray(pos + 4, pos + 4 + size), scratch);
    total += n;
    if (total > maxOutput) throw new Lz4Error(`decoded output exceeds ${maxOutput} bytes`);
    chunks.push(Buffer.from(scratch.subarray(0, n)));
    pos += 4 + size;
  }
  return { data: Buffer.concat(chunks, total), consumed: pos };
}

/**
 * Decodes one raw LZ4 block into out; returns the decoded length.
 * Every read and write is bounds-checked: malformed input throws, never
 * reads or writes outside the buffers.
 */
export function decodeLz4Block(src: Uint8Array, out: Uint8Array): number {
  let ip = 0;
  let op = 0;
  const iend = src.length;
  const oend = out.length;
  for (;;) {
    if (ip >= iend) throw new Lz4Error('truncated block (no token)');
    const token = src[ip++]!;
    let litLen = token >>> 4;
    if (litLen === 15) {
      let b: number;
      do {
        if (ip >= iend) throw new Lz4Error('truncated literal length');
        b = src[ip++]!;
        litLen += b;
      } while (b === 255);
    }
    if (ip + litLen > iend) throw new Lz4Error('literals run past the block');
    if (op + litLen > oend) throw new Lz4Error('literals overflow the output');
    out.set(src.subarray(ip, ip + litLen), op);
    ip += litLen;
    op += litLen;
    if (ip === iend) return op; // the last sequence has literals only
    if (ip + 2 > iend) throw new Lz4Error('truncated match offset');
    const offset = src[ip]! | (src[ip + 1]! << 8);
    ip += 2;
    if (offset === 0 || offset > op) throw new Lz4Error(`bad match offset ${offset} at ${op}`);
    let matchLen = (token & 15) + 4;
    if ((token & 15) === 15) {
      let b: number;
      do {
        if (ip >= iend) throw new Lz4Error('truncated match length');
        b = src[ip++]!;
        matchLen += b;
      } while (b === 255);
    }
    if (op + matchLen > oend) throw new Lz4Error('match overflows the output');
    let from = op - offset;
    if (offset >= matchLen) {
      out.copyWithin(op, from, from + matchLen);
      op += matchLen;
    } else {
      // Overlapping copy (a repeated pattern): byte by byte, by definition.
      const end = op + matchLen;
      while (op < end) out[op++] = out[from++]!;
    }
  }
}
