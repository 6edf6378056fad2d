/**
 * A qcow2 (version 3) overlay over a raw backing file, written directly:
 * the same bytes `qemu-img create -f qcow2 -F raw -b BACKING` writes
 * (QEMU 7.2's layout, checked byte for byte against qemu-img in
 * test/integration/default-image.test.ts), without spawning it on every
 * workspace start.
 *
 * Layout, 64 KiB clusters: cluster 0 holds the header, its extensions
 * (backing format, feature names) and the backing path; cluster 1 the
 * refcount table; cluster 2 the one refcount block (clusters 0-3 used once
 * each); cluster 3 the L1 table, all entries unallocated. The file ends
 * right after the L1 table.
 */
import { open } from 'node:fs/promises';
import { MicroagentError } from '../errors.js';

const CLUSTER_BITS = 16;
const CLUSTER = 1 << CLUSTER_BITS;
const HEADER_LENGTH = 0x70;
const MAGIC = 'QFI\xfb';
/** Where the header keeps the virtual size (u64, big-endian). */
const SIZE_OFFSET = 24;
/** Bytes one L2 table maps: CLUSTER / 8 entries of one cluster each. */
const L2_SPAN = (CLUSTER / 8) * CLUSTER;
/** This layout keeps the L1 table in one cluster: up to 4 TiB. */
export const QCOW2_MAX_DIRECT_SIZE = (CLUSTER / 8) * L2_SPAN;
/** QEMU refuses longer backing file names. */
const MAX_BACKING_NAME = 1023;

const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_FEATURE_TABLE = 0x6803f857;
const FEATURES: ReadonlyArray<[type: number, bit: number, name: string]> = [
  [0, 0, 'dirty bit'],
  [0, 1, 'corrupt bit'],
  [0, 2, 'external data file'],
  [0, 3, 'compression type'],
  [0, 4, 'extended L2 entries'],
  [1, 0, 'lazy refcounts'],
  [2, 0, 'bitmaps'],
  [2, 1, 'raw external data'],
];

/** The overlay's bytes for a raw backing file of `size` bytes at `backingPath`. */
export function qcow2Overlay(backingPath: string, backingSize: number): Buffer {
  let size = backingSize;
  const name = Buffer.from(backingPath, 'utf8');
  if (name.length === 0 || name.length > MAX_BACKING_NAME) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `a qcow2 backing file name must be 1-${MAX_BACKING_NAME} bytes (got ${name.length})`,
    );
  }
  if (!Number.isSafeInteger(size) || size <= 0 || size > QCOW2_MAX_DIRECT_SIZE) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `qcow2 overlay size ${size} is outside 1..${QCOW2_MAX_DIRECT_SIZE}`,
    );
  }
  size = Math.ceil(size / 512) * 512; // the virtual size is whole sectors
  const l1Size = Math.ceil(size / L2_SPAN);
  const l1Offset = 3 * CLUSTER;
  const out = Buffer.alloc(l1Offset + l1Size * 8);

  // Header extensions, each 8-byte aligned, then the backing file name.
  let p = HEADER_LENGTH;
  p = extension(out, p, EXT_BACKING_FORMAT, Buffer.from('raw'));
  const table = Buffer.alloc(FEATURES.length * 48);
  FEATURES.forEach(([type, bit, label], i) => {
    table.writeUInt8(type, i * 48);
    table.writeUInt8(bit, i * 48 + 1);
    table.write(label, i * 48 + 2, 46, 'latin1');
  });
  p = extension(out, p, EXT_FEATURE_TABLE, table);
  p += 8; // end of extensions: type 0, length 0
  const backingOffset = p;
  name.copy(out, backingOffset);

  out.write(MAGIC, 0, 'latin1');
  out.writeUInt32BE(3, 4); // version
  out.writeBigUInt64BE(BigInt(backingOffset), 8);
  out.writeUInt32BE(name.length, 16);
  out.writeUInt32BE(CLUSTER_BITS, 20);
  out.writeBigUInt64BE(BigInt(size), SIZE_OFFSET);
  // crypt_method 0 at 32
  out.writeUInt32BE(l1Size, 36);
  out.writeBigUInt64BE(BigInt(l1Offset), 40);
  out.writeBigUInt64BE(BigInt(CLUSTER), 48); // refcount table
  out.writeUInt32BE(1, 56); // refcount table clusters
  // nb_snapshots, snapshots_offset, incompatible/compatible/autoclear features: 0
  out.writeUInt32BE(4, 96); // refcount_order: 16-bit refcounts
  out.writeUInt32BE(HEADER_LENGTH, 100);
  // compression type 0 (zlib) and padding up to HEADER_LENGTH

  out.writeBigUInt64BE(BigInt(2 * CLUSTER), CLUSTER); // refcount table[0] -> block
  for (let c = 0; c < 4; c++) out.writeUInt16BE(1, 2 * CLUSTER + c * 2);
  return out;
}

function extension(out: Buffer, at: number, type: number, data: Buffer): number {
  out.writeUInt32BE(type, at);
  out.writeUInt32BE(data.length, at + 4);
  data.copy(out, at + 8);
  return at + 8 + Math.ceil(data.length / 8) * 8;
}

/** A qcow2 file's virtual size from its header (bytes 24-31); undefined for another format. */
export async function qcow2VirtualSize(path: string): Promise<number | undefined> {
  const h = await open(path, 'r');
  try {
    const b = Buffer.alloc(SIZE_OFFSET + 8);
    const { bytesRead } = await h.read(b, 0, b.length, 0);
    if (bytesRead < b.length || b.toString('latin1', 0, 4) !== MAGIC) return undefined;
    return Number(b.readBigUInt64BE(SIZE_OFFSET));
  } finally {
    await h.close();
  }
}
