import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeLz4Legacy, Lz4Error } from '../../src/kernel/lz4.js';
import { run } from '../../src/proc/spawn.js';

const haveLz4 = await run(['lz4', '--version'], { allowFailure: true }).then(
  (r) => r.exitCode === 0,
  () => false,
);
const skip = haveLz4
  ? false
  : 'needs the lz4 CLI (apt-get install lz4) to produce reference streams';

/** Compresses data with `lz4 -l` (legacy frame, the format the kernel build uses). */
async function lz4Legacy(data: Buffer, level = '-1'): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'lz4-test-'));
  try {
    await writeFile(join(dir, 'in'), data);
    await run(['lz4', '-l', level, '-f', '-q', join(dir, 'in'), join(dir, 'out')]);
    return await readFile(join(dir, 'out'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function repetitive(size: number): Buffer {
  const out = Buffer.alloc(size);
  const words = ['virtio', 'mmio', '\0\0\0\0', 'microagent ', 'A'];
  let p = 0;
  let i = 0;
  while (p < size) {
    const w = words[i++ % words.length]!.repeat((i % 7) + 1);
    p += out.write(w, p);
  }
  return out;
}

test('decodes lz4 -l output of random data (incompressible, literals only)', { skip }, async () => {
  const data = randomBytes(300_000);
  const { data: out } = decodeLz4Legacy(await lz4Legacy(data));
  assert.ok(out.equals(data));
});

test('decodes repetitive data with overlapping matches', { skip }, async () => {
  const data = Buffer.concat([repetitive(200_000), Buffer.alloc(70_000, 0x41), repetitive(1000)]);
  const compressed = await lz4Legacy(data, '-9');
  assert.ok(compressed.length < data.length / 4, 'the sample really compresses');
  assert.ok(decodeLz4Legacy(compressed).data.equals(data));
});

test(
  'decodes a multi-block stream (> 8 MiB) and stops at the kernel size trailer',
  { skip },
  async () => {
    const data = Buffer.concat([repetitive(9 * 1024 * 1024), randomBytes(100_000)]);
    const compressed = await lz4Legacy(data);
    const trailer = Buffer.alloc(4);
    trailer.writeUInt32LE(data.length); // what the kernel's size_append adds
    const withTrailer = Buffer.concat([compressed, trailer]);
    const r = decodeLz4Legacy(withTrailer);
    assert.ok(r.data.equals(data));
    assert.equal(r.consumed, compressed.length);
  },
);

test('empty input compresses to a stream that decodes to nothing', { skip }, async () => {
  assert.equal(decodeLz4Legacy(await lz4Legacy(Buffer.alloc(0))).data.length, 0);
});

test('rejects a wrong magic and a corrupt block', () => {
  assert.throws(() => decodeLz4Legacy(Buffer.from([1, 2, 3, 4, 5])), Lz4Error);
  // magic, block of 3 bytes: token says 15+ literals but the block ends.
  const bad = Buffer.from([0x02, 0x21, 0x4c, 0x18, 3, 0, 0, 0, 0xf0, 0xff, 0x01]);
  assert.throws(() => decodeLz4Legacy(bad), Lz4Error);
  // match offset pointing before the start of the output
  const badOffset = Buffer.from([0x02, 0x21, 0x4c, 0x18, 4, 0, 0, 0, 0x10, 0x41, 0x05, 0x00]);
  assert.throws(() => decodeLz4Legacy(badOffset), /bad match offset/);
});
