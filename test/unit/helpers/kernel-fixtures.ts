/**
 * Tiny synthetic ELF files and bzImages for kernel tests: just the parts
 * microagent reads (header, PT_NOTE with the PVH note, a .modinfo section,
 * the "Linux version" banner, the x86 setup header).
 */

/** An x86-64 ELF executable with a banner and (optionally) a PVH entry note. */
export function makeVmlinux(opts: { pvh: boolean; release?: string; padding?: number }): Buffer {
  const note = Buffer.alloc(12 + 4 + 8);
  note.writeUInt32LE(4, 0); // namesz "Xen\0"
  note.writeUInt32LE(8, 4); // descsz
  note.writeUInt32LE(opts.pvh ? 18 : 17, 8); // 18 = XEN_ELFNOTE_PHYS32_ENTRY
  note.write('Xen\0', 12, 'latin1');
  note.writeBigUInt64LE(0x1000850n, 16);
  const banner = Buffer.from(
    `Linux version ${opts.release ?? '6.9.9-test'} (builder@host) (gcc) #1 SMP\n\0`,
    'latin1',
  );
  const ehdr = Buffer.alloc(64);
  const phdr = Buffer.alloc(56);
  const noteOff = 64 + 56;
  const body = Buffer.concat([note, banner, Buffer.alloc(opts.padding ?? 4096, 0x90)]);
  ehdr.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  ehdr.writeUInt16LE(2, 16); // ET_EXEC
  ehdr.writeUInt16LE(62, 18); // EM_X86_64
  ehdr.writeUInt32LE(1, 20);
  ehdr.writeBigUInt64LE(0x1000000n, 24); // entry
  ehdr.writeBigUInt64LE(64n, 32); // phoff
  ehdr.writeUInt16LE(64, 52); // ehsize
  ehdr.writeUInt16LE(56, 54); // phentsize
  ehdr.writeUInt16LE(1, 56); // phnum
  ehdr.writeUInt16LE(64, 58); // shentsize
  phdr.writeUInt32LE(4, 0); // PT_NOTE
  phdr.writeBigUInt64LE(BigInt(noteOff), 8);
  phdr.writeBigUInt64LE(BigInt(note.length), 32); // filesz
  phdr.writeBigUInt64LE(BigInt(note.length), 40); // memsz
  return Buffer.concat([ehdr, phdr, body]);
}

/** A relocatable ELF (.ko) whose .modinfo holds the given key=value strings. */
export function makeKo(modinfo: string[]): Buffer {
  const info = Buffer.from(modinfo.map((s) => s + '\0').join(''), 'utf8');
  const shstr = Buffer.from('\0.modinfo\0.shstrtab\0', 'latin1');
  const infoOff = 64;
  const strOff = infoOff + info.length;
  const shOff = Math.ceil((strOff + shstr.length) / 8) * 8;
  const out = Buffer.alloc(shOff + 3 * 64);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  out.writeUInt16LE(1, 16); // ET_REL
  out.writeUInt16LE(62, 18);
  out.writeUInt32LE(1, 20);
  out.writeBigUInt64LE(BigInt(shOff), 40);
  out.writeUInt16LE(64, 52);
  out.writeUInt16LE(64, 58); // shentsize
  out.writeUInt16LE(3, 60); // shnum
  out.writeUInt16LE(2, 62); // shstrndx
  info.copy(out, infoOff);
  shstr.copy(out, strOff);
  const sh = (i: number, name: number, type: number, off: number, size: number): void => {
    const o = shOff + i * 64;
    out.writeUInt32LE(name, o);
    out.writeUInt32LE(type, o + 4);
    out.writeBigUInt64LE(BigInt(off), o + 24);
    out.writeBigUInt64LE(BigInt(size), o + 32);
  };
  sh(1, 1, 1, infoOff, info.length); // .modinfo, PROGBITS
  sh(2, 10, 3, strOff, shstr.length); // .shstrtab, STRTAB
  return out;
}

/** An x86 bzImage (boot protocol 2.15) around an already compressed payload. */
export function makeBzImage(
  payload: Buffer,
  versionString = '6.9.9-test (builder@host) #1 SMP',
): Buffer {
  const setupSects = 3;
  const setup = Buffer.alloc((setupSects + 1) * 512);
  setup[0x1f1] = setupSects;
  setup.write('HdrS', 0x202, 'latin1');
  setup.writeUInt16LE(0x020f, 0x206);
  const vOff = 0x400; // kernel_version string, relative to 0x200
  setup.write(versionString + '\0', vOff + 0x200, 'latin1');
  setup.writeUInt16LE(vOff, 0x20e);
  const payloadOffset = 0x100; // relative to the protected-mode code
  setup.writeUInt32LE(payloadOffset, 0x248);
  setup.writeUInt32LE(payload.length, 0x24c);
  return Buffer.concat([
    setup,
    Buffer.alloc(payloadOffset, 0xcc),
    payload,
    Buffer.alloc(512, 0xcc),
  ]);
}
