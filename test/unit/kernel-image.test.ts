import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { extractVmlinux, parseBzImageHeader } from '../../src/kernel/bzimage.js';
import {
  findLinuxRelease,
  findPvhEntry,
  hasInterpreter,
  isX8664Executable,
} from '../../src/util/elf.js';
import { deriveBootImage } from '../../src/kernel/install.js';
import { isMicroagentError } from '../../src/errors.js';
import { run } from '../../src/proc/spawn.js';
import { makeBzImage, makeVmlinux } from './helpers/kernel-fixtures.js';

async function tool(argv: string[], input: Buffer): Promise<Buffer | undefined> {
  try {
    return (await run(argv, { input })).stdout;
  } catch {
    return undefined;
  }
}

test('finds the PVH entry note and the release in an ELF vmlinux', () => {
  const elf = makeVmlinux({ pvh: true, release: '6.1.0-99-test' });
  assert.ok(isX8664Executable(elf));
  assert.equal(findPvhEntry(elf), 0x1000850);
  assert.equal(findLinuxRelease(elf), '6.1.0-99-test');
  assert.equal(hasInterpreter(elf), false);
  assert.equal(findPvhEntry(makeVmlinux({ pvh: false })), undefined);
});

test('parses the bzImage setup header (payload offset, length, version)', () => {
  const payload = gzipSync(makeVmlinux({ pvh: true }));
  const h = parseBzImageHeader(makeBzImage(payload));
  assert.ok(h);
  assert.equal(h.payloadLength, payload.length);
  assert.equal(h.protocol, 0x020f);
  assert.match(h.versionString ?? '', /^6\.9\.9-test /);
});

for (const [name, compress] of [
  ['gzip', async (b: Buffer) => gzipSync(b)],
  ['xz', (b: Buffer) => tool(['xz', '-c', '--check=crc32'], b)],
  ['zstd', (b: Buffer) => tool(['zstd', '-c', '-q'], b)],
  ['lz4', (b: Buffer) => tool(['lz4', '-l', '-c', '-q'], b)],
] as const) {
  test(`extracts a ${name}-compressed vmlinux from a bzImage (with the kernel's size trailer)`, async (t) => {
    const elf = makeVmlinux({ pvh: true, padding: 100_000 });
    const compressed = await compress(elf);
    if (!compressed) return t.skip(`needs the ${name} CLI`);
    const size = Buffer.alloc(4);
    size.writeUInt32LE(elf.length);
    const r = await extractVmlinux(makeBzImage(Buffer.concat([compressed, size])));
    assert.equal(r.compression, name);
    assert.ok(r.vmlinux.equals(elf));
  });
}

test('extracts by scanning when the setup header is missing', async () => {
  const elf = makeVmlinux({ pvh: true });
  const blob = Buffer.concat([Buffer.alloc(1000, 0x11), gzipSync(elf), Buffer.alloc(10)]);
  const r = await extractVmlinux(blob);
  assert.ok(r.vmlinux.equals(elf));
});

test('boot image: PVH vmlinux is used as ELF; without PVH the bzImage is kept', async () => {
  const pvh = await deriveBootImage(makeBzImage(gzipSync(makeVmlinux({ pvh: true }))));
  assert.equal(pvh.format, 'elf-pvh');
  assert.equal(pvh.release, '6.9.9-test');
  const bz = makeBzImage(gzipSync(makeVmlinux({ pvh: false })));
  const kept = await deriveBootImage(bz);
  assert.equal(kept.format, 'bzimage');
  assert.ok(kept.image.equals(bz));
});

test('an ELF without PVH, or garbage, is refused with KERNEL_INVALID', async () => {
  for (const bad of [makeVmlinux({ pvh: false }), Buffer.from('not a kernel at all'.repeat(100))]) {
    await assert.rejects(
      deriveBootImage(bad),
      (e) => isMicroagentError(e) && e.code === 'KERNEL_INVALID',
    );
  }
});
