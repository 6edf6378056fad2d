/**
 * cpio "newc" (SVR4, no CRC) writer: the format the kernel unpacks as an
 * initramfs. Every entry is owned by 0:0 with mtime 0, and inode numbers
 * are assigned in order, so the same entries always give the same bytes
 * (and the same sha256).
 */

export type CpioEntry =
  | { type: 'dir'; path: string; mode: number }
  | { type: 'file'; path: string; mode: number; data: Uint8Array }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'chardev'; path: string; mode: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/**
 * Serialises entries (in the given order; parents must come before their
 * children) followed by the TRAILER!!! record. Paths are archive-relative
 * ("init", "dev/console"); a leading "/" is stripped.
 */
export function writeCpioNewc(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer): void => {
    parts.push(b);
    offset += b.length;
  };
  const pad = (): void => {
    const n = (4 - (offset % 4)) % 4;
    if (n) push(Buffer.alloc(n));
  };
  let ino = 1;
  const record = (
    name: string,
    mode: number,
    nlink: number,
    data: Uint8Array,
    rdev: [number, number] = [0, 0],
    inode = ino++,
  ): void => {
    const nameBytes = Buffer.from(name + '\0', 'utf8');
    const fields = [
      inode,
      mode,
      0, // uid
      0, // gid
      nlink,
      0, // mtime: fixed for reproducible output
      data.length,
      0, // devmajor
      0, // devminor
      rdev[0],
      rdev[1],
      nameBytes.length,
      0, // check: only used by the "070702" CRC variant
    ];
    push(Buffer.from('070701' + fields.map(hex8).join(''), 'ascii'));
    push(nameBytes);
    pad(); // header + name are padded to a multiple of 4
    if (data.length) {
      push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      pad();
    }
  };
  for (const e of entries) {
    const name = normalise(e.path);
    switch (e.type) {
      case 'dir':
        record(name, S_IFDIR | (e.mode & 0o7777), 2, new Uint8Array());
        break;
      case 'file':
        record(name, S_IFREG | (e.mode & 0o7777), 1, e.data);
        break;
      case 'symlink':
        record(name, S_IFLNK | 0o777, 1, Buffer.from(e.target, 'utf8'));
        break;
      case 'chardev':
        record(name, S_IFCHR | (e.mode & 0o7777), 1, new Uint8Array(), [e.major, e.minor]);
        break;
    }
  }
  record('TRAILER!!!', 0, 1, new Uint8Array(), [0, 0], 0);
  return Buffer.concat(parts, offset);
}

function normalise(path: string): string {
  const name = path.replace(/^\/+/, '');
  if (name === '' || name.split('/').some((c) => c === '' || c === '.' || c === '..')) {
    throw new RangeError(`invalid cpio path ${JSON.stringify(path)}`);
  }
  return name;
}

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff)
    throw new RangeError(`cpio field ${n} out of range`);
  return n.toString(16).padStart(8, '0').toUpperCase();
}
