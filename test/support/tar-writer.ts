/**
 * A small tar writer for tests that need layers no tool makes on request:
 * whiteouts, hostile names, PAX xattrs, GNU long names, base-256 numbers.
 */
import { gzipSync, zstdCompressSync } from 'node:zlib';

export interface TarSpec {
  path: string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'other';
  content?: Buffer | string;
  linkpath?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds; a fraction goes into a PAX mtime record. */
  mtime?: number;
  devmajor?: number;
  devminor?: number;
  /** Written as SCHILY.xattr.<name> PAX records (raw bytes). */
  xattrs?: Record<string, Buffer | string>;
  /** Written as LIBARCHIVE.xattr.<name> (url-encoded name, base64 value). */
  libarchiveXattrs?: Record<string, Buffer | string>;
  /** How to carry a long name: 'pax' (default) or 'gnu' ('L'/'K' entries). */
  longNames?: 'pax' | 'gnu';
  /** Write uid/gid in base-256 even when octal would do. */
  base256?: boolean;
}

const TYPE_FLAG: Record<NonNullable<TarSpec['type']>, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
  other: 'V',
};

/** Builds an uncompressed tar stream (with the two end blocks). */
export function tar(entries: readonly TarSpec[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) blocks.push(...entry(e));
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

export function gzipTar(entries: readonly TarSpec[]): Buffer {
  return gzipSync(tar(entries));
}

export function zstdTar(entries: readonly TarSpec[]): Buffer {
  return zstdCompressSync(tar(entries));
}

function entry(e: TarSpec): Buffer[] {
  const out: Buffer[] = [];
  const type = e.type ?? 'file';
  const body = type === 'file' ? Buffer.from(e.content ?? '') : Buffer.alloc(0);
  const linkpath = e.linkpath ?? '';
  const pax: Array<[string, Buffer]> = [];
  let name = e.path;
  let link = linkpath;
  const long = Buffer.byteLength(name) > 100 || Buffer.byteLength(link) > 100;
  if (long && e.longNames === 'gnu') {
    if (Buffer.byteLength(name) > 100) {
      out.push(...raw({ path: '././@LongLink', flag: 'L', body: Buffer.from(name + '\0') }));
      name = name.slice(0, 100);
    }
    if (Buffer.byteLength(link) > 100) {
      out.push(...raw({ path: '././@LongLink', flag: 'K', body: Buffer.from(link + '\0') }));
      link = link.slice(0, 100);
    }
  } else {
    if (Buffer.byteLength(name) > 100) {
      pax.push(['path', Buffer.from(name)]);
      name = name.slice(0, 100);
    }
    if (Buffer.byteLength(link) > 100) {
      pax.push(['linkpath', Buffer.from(link)]);
      link = link.slice(0, 100);
    }
  }
  const mtime = e.mtime ?? 1_700_000_000;
  if (!Number.isInteger(mtime)) pax.push(['mtime', Buffer.from(mtime.toFixed(9))]);
  for (const [k, v] of Object.entries(e.xattrs ?? {}))
    pax.push([`SCHILY.xattr.${k}`, Buffer.from(v)]);
  for (const [k, v] of Object.entries(e.libarchiveXattrs ?? {})) {
    pax.push([
      `LIBARCHIVE.xattr.${encodeURIComponent(k)}`,
      Buffer.from(Buffer.from(v).toString('base64')),
    ]);
  }
  if (pax.length > 0) out.push(...raw({ path: 'PaxHeaders/x', flag: 'x', body: paxBody(pax) }));
  out.push(
    ...raw({
      path: name,
      flag: TYPE_FLAG[type],
      body,
      linkpath: link,
      mode: e.mode ?? (type === 'dir' ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: Math.floor(mtime),
      devmajor: e.devmajor ?? 0,
      devminor: e.devminor ?? 0,
      base256: e.base256 ?? false,
    }),
  );
  return out;
}

function paxBody(records: Array<[string, Buffer]>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of records) {
    const rest = Buffer.concat([Buffer.from(` ${k}=`), v, Buffer.from('\n')]);
    let len = rest.length + 1;
    while (String(len).length + rest.length !== len) len = String(len).length + rest.length;
    parts.push(Buffer.from(String(len)), rest);
  }
  return Buffer.concat(parts);
}

interface Raw {
  path: string;
  flag: string;
  body: Buffer;
  linkpath?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  devmajor?: number;
  devminor?: number;
  base256?: boolean;
}

function raw(r: Raw): Buffer[] {
  const h = Buffer.alloc(512);
  h.write(r.path, 0, 100, 'utf8');
  octal(h, 100, 8, r.mode ?? 0o644);
  numeric(h, 108, 8, r.uid ?? 0, r.base256 ?? false);
  numeric(h, 116, 8, r.gid ?? 0, r.base256 ?? false);
  numeric(h, 124, 12, r.body.length, false);
  numeric(h, 136, 12, r.mtime ?? 0, false);
  h.write('        ', 148, 8, 'latin1');
  h.write(r.flag, 156, 1, 'latin1');
  h.write(r.linkpath ?? '', 157, 100, 'utf8');
  h.write('ustar\0', 257, 6, 'latin1');
  h.write('00', 263, 2, 'latin1');
  octal(h, 329, 8, r.devmajor ?? 0);
  octal(h, 337, 8, r.devminor ?? 0);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  const pad = (512 - (r.body.length % 512)) % 512;
  return [h, r.body, Buffer.alloc(pad)];
}

function octal(h: Buffer, off: number, len: number, v: number): void {
  h.write(v.toString(8).padStart(len - 1, '0') + '\0', off, len, 'latin1');
}

function numeric(h: Buffer, off: number, len: number, v: number, base256: boolean): void {
  if (!base256 && v < 8 ** (len - 1)) return octal(h, off, len, v);
  let x = BigInt(v);
  for (let i = len - 1; i >= 1; i--) {
    h[off + i] = Number(x & 0xffn);
    x >>= 8n;
  }
  h[off] = 0x80;
}
