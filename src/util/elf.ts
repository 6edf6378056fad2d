/**
 * Just enough ELF64 (little-endian) reading for kernels, modules and the
 * default image's programs: header checks, the PVH entry note of a
 * vmlinux, and named sections of a .ko. Every offset read from the file is
 * bounds-checked.
 */

export const EM_X86_64 = 62;
const PT_NOTE = 4;
const SHT_NOTE = 7;
/** XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry point QEMU's -kernel uses. */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;

export class ElfError extends Error {
  override readonly name = 'ElfError';
}

export interface ElfInfo {
  /** e_type: 1 relocatable (.ko), 2 executable (vmlinux). */
  type: number;
  machine: number;
}

export function isElf(buf: Uint8Array): boolean {
  return (
    buf.length >= 4 && buf[0] === 0x7f && buf[1] === 0x45 && buf[2] === 0x4c && buf[3] === 0x46
  );
}

/** Checks the ELF identification and returns type/machine; throws ElfError. */
export function readElfHeader(buf: Uint8Array): ElfInfo {
  if (!isElf(buf)) throw new ElfError('not an ELF file');
  if (buf.length < 64) throw new ElfError('truncated ELF header');
  if (buf[4] !== 2) throw new ElfError('not a 64-bit ELF');
  if (buf[5] !== 1) throw new ElfError('not a little-endian ELF');
  const v = view(buf);
  return { type: v.getUint16(16, true), machine: v.getUint16(18, true) };
}

/** True when buf is an x86-64 ELF executable. */
export function isX8664Executable(buf: Uint8Array): boolean {
  try {
    const h = readElfHeader(buf);
    return h.machine === EM_X86_64 && h.type === 2;
  } catch {
    return false;
  }
}

interface Note {
  name: string;
  type: number;
  desc: Uint8Array;
}

function* parseNotes(buf: Uint8Array, start: number, size: number): Generator<Note> {
  const v = view(buf);
  let p = start;
  const end = Math.min(start + size, buf.length);
  while (p + 12 <= end) {
    const namesz = v.getUint32(p, true);
    const descsz = v.getUint32(p + 4, true);
    const type = v.getUint32(p + 8, true);
    const nameStart = p + 12;
    const descStart = nameStart + align4(namesz);
    const next = descStart + align4(descsz);
    if (next > end || next <= p) return;
    const rawName = buf.subarray(nameStart, nameStart + namesz);
    const nul = rawName.indexOf(0);
    const name = Buffer.from(nul >= 0 ? rawName.subarray(0, nul) : rawName).toString('latin1');
    yield { name, type, desc: buf.subarray(descStart, descStart + descsz) };
    p = next;
  }
}

/**
 * Finds the PVH entry note ("Xen", type 18) in PT_NOTE segments (or, for
 * images without program headers, SHT_NOTE sections). Returns the entry
 * address, or undefined when the kernel has no PVH entry.
 */
export function findPvhEntry(buf: Uint8Array): number | undefined {
  readElfHeader(buf);
  const v = view(buf);
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  const regions: Array<[number, number]> = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    if (o + 56 > buf.length) break;
    if (v.getUint32(o, true) === PT_NOTE) {
      regions.push([Number(v.getBigUint64(o + 8, true)), Number(v.getBigUint64(o + 32, true))]);
    }
  }
  if (regions.length === 0) {
    for (const s of sectionHeaders(buf)) if (s.type === SHT_NOTE) regions.push([s.offset, s.size]);
  }
  for (const [off, size] of regions) {
    for (const note of parseNotes(buf, off, size)) {
      if (note.name === 'Xen' && note.type === XEN_ELFNOTE_PHYS32_ENTRY) {
        const d = note.desc;
        if (d.length >= 8) return Number(view(d).getBigUint64(0, true));
        if (d.length >= 4) return view(d).getUint32(0, true);
      }
    }
  }
  return undefined;
}

interface SectionHeader {
  name: string;
  type: number;
  offset: number;
  size: number;
}

function sectionHeaders(buf: Uint8Array): SectionHeader[] {
  const v = view(buf);
  const shoff = Number(v.getBigUint64(40, true));
  const shentsize = v.getUint16(58, true);
  const shnum = v.getUint16(60, true);
  const shstrndx = v.getUint16(62, true);
  if (shoff === 0 || shnum === 0) return [];
  if (shentsize < 64 || shoff + shnum * shentsize > buf.length) {
    throw new ElfError('section header table out of bounds');
  }
  const raw = [];
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize;
    raw.push({
      nameOff: v.getUint32(o, true),
      type: v.getUint32(o + 4, true),
      offset: Number(v.getBigUint64(o + 24, true)),
      size: Number(v.getBigUint64(o + 32, true)),
    });
  }
  const strtab = raw[shstrndx];
  return raw.map((s) => {
    let name = '';
    if (strtab && strtab.offset + s.nameOff < buf.length) {
      const start = strtab.offset + s.nameOff;
      const end = buf.indexOf(0, start);
      name = Buffer.from(buf.subarray(start, end < 0 ? buf.length : end)).toString('latin1');
    }
    return { name, type: s.type, offset: s.offset, size: s.size };
  });
}

/** The bytes of the named section, or undefined when absent. */
export function readSection(buf: Uint8Array, name: string): Uint8Array | undefined {
  readElfHeader(buf);
  const s = sectionHeaders(buf).find((h) => h.name === name);
  if (!s) return undefined;
  if (s.offset + s.size > buf.length) throw new ElfError(`section ${name} out of bounds`);
  return buf.subarray(s.offset, s.offset + s.size);
}

/**
 * The kernel release from the "Linux version <release> (...)" banner that
 * every kernel image embeds; undefined when not found.
 */
export function findLinuxRelease(buf: Uint8Array): string | undefined {
  const needle = Buffer.from('Linux version ');
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  let from = 0;
  for (;;) {
    const i = b.indexOf(needle, from);
    if (i < 0) return undefined;
    const rest = b.subarray(i + needle.length, i + needle.length + 128).toString('latin1');
    const m = /^([0-9]+\.[0-9]+[^\s()%]*) \(/.exec(rest);
    if (m?.[1]) return m[1];
    from = i + 1; // e.g. a printf format "Linux version %s" in .rodata
  }
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** True when the ELF has a PT_INTERP segment (is dynamically linked). */
export function hasInterpreter(buf: Uint8Array): boolean {
  readElfHeader(buf);
  const v = view(buf);
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    if (o + 4 > buf.length) break;
    if (v.getUint32(o, true) === 3) return true; // PT_INTERP
  }
  return false;
}
