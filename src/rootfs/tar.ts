/**
 * A streaming tar reader for OCI image layers: ustar, GNU long names and
 * long links ('L', 'K'), PAX extended and global headers, base-256 numbers.
 * A layer is never held in memory: each entry's body is handed out as a
 * sequence of chunks, read straight from the (decompressed) input.
 */
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream';
import type { Readable } from 'node:stream';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import { MicroagentError } from '../errors.js';

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarEntry {
  type: TarEntryType;
  /** The name as written in the layer (not normalized: see apply.ts). */
  path: string;
  /** Target of a symlink or hardlink; '' otherwise. */
  linkpath: string;
  /** Body size in bytes (0 for everything but files). */
  size: number;
  /** Permission bits including setuid, setgid and sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Modification time in seconds since the epoch, with PAX fractions. */
  mtime: number;
  devmajor: number;
  devminor: number;
  /** Extended attributes, byte-exact (SCHILY.xattr.* and LIBARCHIVE.xattr.*). */
  xattrs: Map<string, Buffer>;
  /**
   * The body, in chunks. Read it at most once, before asking for the next
   * entry; an unread body is skipped.
   */
  body(): AsyncIterable<Buffer>;
}

export interface TarReadOptions {
  /** Called for each entry the reader skips (sparse files, tape volumes, ...). */
  onNote?: (note: string) => void;
}

/** Layer media types microagent applies, by compression. */
export type LayerCompression = 'gzip' | 'zstd' | 'none';

const MEDIA_TYPES: Record<string, LayerCompression> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
};

/**
 * The compression of a layer media type.
 * @throws LAYER_UNSUPPORTED for a media type that is not a tar layer
 */
export function layerCompression(mediaType: string): LayerCompression {
  const c = MEDIA_TYPES[mediaType];
  if (c === undefined) {
    throw new MicroagentError(
      'LAYER_UNSUPPORTED',
      `layer media type ${JSON.stringify(mediaType)} is not a tar layer microagent can apply`,
      { data: { mediaType, supported: Object.keys(MEDIA_TYPES) } },
    );
  }
  return c;
}

/**
 * Opens a layer blob as a stream of decompressed tar bytes. Decompressor
 * errors (a corrupt or truncated blob) surface from the returned stream.
 *
 * aheadBytes lets the stream decompress that much before anyone reads it
 * (its buffer limit): the next layer is opened this way while the current
 * one is applied, so its decompression (zlib, in the thread pool) overlaps
 * the staging work on the main thread.
 */
export function openLayer(path: string, mediaType: string, aheadBytes?: number): Readable {
  const compression = layerCompression(mediaType);
  const file = createReadStream(path, { highWaterMark: 1024 * 1024 });
  if (compression === 'none') return file;
  // Large output chunks: fewer, bigger writes when staging files.
  const opts = {
    chunkSize: 256 * 1024,
    ...(aheadBytes !== undefined ? { readableHighWaterMark: aheadBytes } : {}),
  };
  const dec = compression === 'gzip' ? createGunzip(opts) : createZstdDecompress(opts);
  pipeline(file, dec, () => {
    // Errors reach the consumer through dec, which pipeline destroys.
  });
  return dec;
}

const BLOCK = 512;

/** Reads exact byte counts from an async stream of chunks. */
class ByteSource {
  private bufs: Buffer[] = [];
  private len = 0;
  private done = false;
  offset = 0;

  constructor(private readonly it: AsyncIterator<Buffer>) {}

  private async fill(n: number): Promise<void> {
    while (this.len < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else if (r.value.length > 0) {
        this.bufs.push(r.value);
        this.len += r.value.length;
      }
    }
  }

  /** Exactly n bytes, or undefined at a clean end of input; throws if cut short. */
  async read(n: number): Promise<Buffer | undefined> {
    await this.fill(n);
    if (this.len === 0 && this.done) return undefined;
    if (this.len < n) throw truncated(this.offset);
    const first = this.bufs[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      this.consumeFirst(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const b = this.bufs[0]!;
        const take = Math.min(b.length, n - at);
        b.copy(out, at, 0, take);
        at += take;
        this.consumeFirst(take);
      }
    }
    return out;
  }

  /** Yields n bytes as they arrive, without joining chunks. */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.len === 0) await this.fill(1);
      if (this.len === 0) throw truncated(this.offset);
      const b = this.bufs[0]!;
      const take = Math.min(b.length, left);
      const out = b.subarray(0, take);
      this.consumeFirst(take);
      left -= take;
      yield out;
    }
  }

  /** Skips up to n bytes, stopping quietly at the end of input. */
  async skipUpTo(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.len === 0) await this.fill(1);
      if (this.len === 0) return;
      const take = Math.min(this.bufs[0]!.length, left);
      this.consumeFirst(take);
      left -= take;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.chunks(n)) {
      // discard
    }
  }

  private consumeFirst(n: number): void {
    const b = this.bufs[0]!;
    if (n === b.length) this.bufs.shift();
    else this.bufs[0] = b.subarray(n);
    this.len -= n;
    this.offset += n;
  }
}

function truncated(offset: number): MicroagentError {
  return new MicroagentError('LAYER_INVALID', `the tar stream ends in the middle of an entry`, {
    data: { offset },
  });
}

function invalid(message: string, offset: number): MicroagentError {
  return new MicroagentError('LAYER_INVALID', message, { data: { offset } });
}

/** Extended-header values that override the ustar fields of the next entry. */
interface PaxValues {
  path?: string;
  linkpath?: string;
  size?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  xattrs: Map<string, Buffer>;
  /** GNU sparse files are announced in PAX; they are skipped. */
  sparse?: boolean;
}

/**
 * Reads the tar entries of a stream of (already decompressed) bytes.
 *
 * @throws LAYER_INVALID on a bad checksum, a bad number, or a cut-off stream
 */
export async function* readTar(
  source: AsyncIterable<Buffer>,
  options: TarReadOptions = {},
): AsyncGenerator<TarEntry> {
  const src = new ByteSource(source[Symbol.asyncIterator]());
  let global: PaxValues = { xattrs: new Map() };
  let pax: PaxValues | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;

  for (;;) {
    const at = src.offset;
    const header = await src.read(BLOCK);
    // A tar stream should end with zero blocks, but some writers stop right
    // after the last entry (as Go's archive/tar reader, accept that). The
    // blob's digest was verified, so a cut download cannot end up here.
    if (header === undefined) return;
    if (isZero(header)) return; // end of archive (the second zero block is not needed)
    verifyChecksum(header, at);

    const flag = String.fromCharCode(header[156]!);
    const ustarSize = num(header, 124, 12, at);
    const isPaxOrGnuMeta = flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K';
    const size = !isPaxOrGnuMeta && pax?.size !== undefined ? pax.size : ustarSize;
    const padded = Math.ceil(size / BLOCK) * BLOCK;

    if (isPaxOrGnuMeta) {
      if (size > 64 * 1024 * 1024) throw invalid(`a ${flag} header of ${size} bytes`, at);
      const data = size === 0 ? Buffer.alloc(0) : await src.read(size);
      if (data === undefined) throw truncated(src.offset);
      if (padded > size) await src.skip(padded - size);
      if (flag === 'L') longName = cString(data);
      else if (flag === 'K') longLink = cString(data);
      else if (flag === 'x') pax = mergePax(pax ?? { xattrs: new Map() }, parsePax(data, at));
      else {
        // A global header sets defaults (owner, times, xattrs), never a name or size.
        const g = parsePax(data, at);
        delete g.path;
        delete g.linkpath;
        delete g.size;
        global = mergePax(global, g);
      }
      continue;
    }

    const ext = mergePax(mergePax({ xattrs: new Map() }, global), pax ?? { xattrs: new Map() });
    pax = undefined;
    const magic = header.toString('latin1', 257, 263);
    const isUstar = magic === 'ustar\0'; // GNU ("ustar  \0") uses the prefix area for times
    let path = ext.path ?? longName;
    if (path === undefined) {
      const name = cString(header.subarray(0, 100));
      const prefix = isUstar ? cString(header.subarray(345, 500)) : '';
      path = prefix ? `${prefix}/${name}` : name;
    }
    const linkpath = ext.linkpath ?? longLink ?? cString(header.subarray(157, 257));
    longName = undefined;
    longLink = undefined;

    const type = entryType(flag);
    if (type === undefined || ext.sparse) {
      options.onNote?.(
        `skipped ${JSON.stringify(path)}: ${ext.sparse ? 'GNU sparse file' : `tar entry type ${JSON.stringify(flag)}`} is not supported`,
      );
      await src.skip(padded);
      continue;
    }
    // Only regular files have bodies in a layer; a size on anything else is skipped.
    const bodySize = type === 'file' ? size : 0;
    let read = false;
    const entry: TarEntry = {
      type,
      path,
      linkpath,
      size: bodySize,
      mode: num(header, 100, 8, at) & 0o7777,
      uid: ext.uid ?? num(header, 108, 8, at),
      gid: ext.gid ?? num(header, 116, 8, at),
      mtime: ext.mtime ?? num(header, 136, 12, at),
      devmajor: type === 'char' || type === 'block' ? num(header, 329, 8, at) : 0,
      devminor: type === 'char' || type === 'block' ? num(header, 337, 8, at) : 0,
      xattrs: ext.xattrs,
      body: () => {
        if (read) throw new MicroagentError('INTERNAL', 'a tar entry body was read twice');
        read = true;
        return src.chunks(bodySize);
      },
    };
    const before = src.offset;
    yield entry;
    // Skip whatever of the body the consumer left unread (it must all be
    // there), then the padding. Some writers (umoci insert, for one) end the
    // stream right after the last entry's data, without padding or the two
    // zero blocks: a clean end of input there is not an error.
    const consumed = src.offset - before;
    if (consumed > padded) throw new MicroagentError('INTERNAL', 'read past a tar entry');
    if (consumed < size) await src.skip(size - consumed);
    await src.skipUpTo(padded - Math.max(consumed, size));
  }
}

function entryType(flag: string): TarEntryType | undefined {
  switch (flag) {
    case '0':
    case '\0':
    case '7': // contiguous file: an ordinary file everywhere that matters
      return 'file';
    case '1':
      return 'hardlink';
    case '2':
      return 'symlink';
    case '3':
      return 'char';
    case '4':
      return 'block';
    case '5':
      return 'dir';
    case '6':
      return 'fifo';
    default:
      return undefined;
  }
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function verifyChecksum(h: Buffer, at: number): void {
  const stored = num(h, 148, 8, at);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  if (stored !== unsigned && stored !== signed) {
    throw invalid(`bad tar header checksum at offset ${at}`, at);
  }
}

/** A numeric field: octal text, or base-256 (GNU/star) when the top bit is set. */
function num(h: Buffer, off: number, len: number, at: number): number {
  const first = h[off]!;
  if (first & 0x80) {
    const negative = first === 0xff;
    let v = BigInt(first & 0x7f);
    for (let i = 1; i < len; i++) v = (v << 8n) | BigInt(h[off + i]!);
    if (negative) v -= 1n << BigInt(len * 8 - 1);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw invalid(`a base-256 number at offset ${at + off} is out of range`, at);
    }
    return Number(v);
  }
  const text = h
    .toString('latin1', off, off + len)
    .replace(/\0.*$/s, '')
    .trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw invalid(`bad octal field ${JSON.stringify(text)}`, at);
  return parseInt(text, 8);
}

function cString(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.toString('utf8', 0, nul === -1 ? b.length : nul);
}

/** Parses PAX records ("<len> <key>=<value>\n"); values stay bytes until typed. */
function parsePax(data: Buffer, at: number): PaxValues {
  const out: PaxValues = { xattrs: new Map() };
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) break; // NUL padding some writers leave
    const sp = data.indexOf(0x20, i);
    if (sp === -1) throw invalid('bad PAX record (no length)', at);
    const lenText = data.toString('latin1', i, sp);
    if (!/^[0-9]+$/.test(lenText)) throw invalid('bad PAX record length', at);
    const len = Number(lenText);
    const end = i + len;
    if (len <= sp - i + 1 || end > data.length || data[end - 1] !== 0x0a) {
      throw invalid('bad PAX record (length or terminator)', at);
    }
    const eq = data.indexOf(0x3d, sp + 1);
    if (eq === -1 || eq >= end) throw invalid('bad PAX record (no "=")', at);
    const key = data.toString('utf8', sp + 1, eq);
    const value = data.subarray(eq + 1, end - 1);
    applyPax(out, key, value, at);
    i = end;
  }
  return out;
}

function applyPax(out: PaxValues, key: string, value: Buffer, at: number): void {
  const text = (): string => value.toString('utf8');
  const integer = (): number => {
    const t = text();
    if (!/^[0-9]+$/.test(t)) throw invalid(`bad PAX ${key}=${JSON.stringify(t)}`, at);
    return Number(t);
  };
  if (key === 'path') out.path = text();
  else if (key === 'linkpath') out.linkpath = text();
  else if (key === 'size') out.size = integer();
  else if (key === 'uid') out.uid = integer();
  else if (key === 'gid') out.gid = integer();
  else if (key === 'mtime') {
    const t = text();
    if (!/^-?[0-9]+(\.[0-9]+)?$/.test(t)) throw invalid(`bad PAX mtime ${JSON.stringify(t)}`, at);
    out.mtime = Number(t);
  } else if (key.startsWith('SCHILY.xattr.')) {
    // Raw bytes: binary values such as security.capability survive as they are.
    out.xattrs.set(key.slice('SCHILY.xattr.'.length), Buffer.from(value));
  } else if (key.startsWith('LIBARCHIVE.xattr.')) {
    // libarchive URL-encodes the name and base64-encodes the value.
    const name = decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length));
    out.xattrs.set(name, Buffer.from(text(), 'base64'));
  } else if (key.startsWith('GNU.sparse.')) out.sparse = true;
  // uname/gname, atime, ctime, comments, charset...: ignored (numeric ids rule).
}

function mergePax(base: PaxValues, over: PaxValues): PaxValues {
  const merged: PaxValues = { ...base, xattrs: new Map(base.xattrs) };
  for (const k of ['path', 'linkpath', 'size', 'uid', 'gid', 'mtime', 'sparse'] as const) {
    if (over[k] !== undefined) (merged as unknown as Record<string, unknown>)[k] = over[k];
  }
  for (const [k, v] of over.xattrs) merged.xattrs.set(k, v);
  return merged;
}
