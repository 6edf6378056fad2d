import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { writeCpioNewc, type CpioEntry } from '../../src/kernel/cpio.js';
import { buildInitramfs } from '../../src/kernel/initramfs.js';
import { makeKo } from './helpers/kernel-fixtures.js';
import { run } from '../../src/proc/spawn.js';
import { sha256 } from '../../src/util/fs.js';

const haveBusybox = await run(['busybox', 'cpio', '--help'], { allowFailure: true }).then(
  () => true,
  () => false,
);
const skip = haveBusybox
  ? false
  : 'needs busybox (apt-get install busybox-static) to read the archive';

const big = randomBytes(10_001); // odd size: exercises the data padding
const entries: CpioEntry[] = [
  { type: 'dir', path: 'dev', mode: 0o755 },
  { type: 'chardev', path: 'dev/console', mode: 0o600, major: 5, minor: 1 },
  { type: 'dir', path: '/modules', mode: 0o755 },
  { type: 'file', path: 'modules/01-a.ko', mode: 0o644, data: Buffer.from('abc') },
  { type: 'file', path: 'modules/02-bb.ko', mode: 0o600, data: big },
  { type: 'file', path: 'empty', mode: 0o644, data: Buffer.alloc(0) },
  { type: 'symlink', path: 'sh', target: 'init' },
  { type: 'file', path: 'init', mode: 0o755, data: Buffer.from('#!/bin/sh\n') },
];

async function withTmp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'cpio-test-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('busybox cpio lists every entry in order, with the trailer consumed', { skip }, async () => {
  await withTmp(async (dir) => {
    const archive = join(dir, 'a.cpio');
    await writeFile(archive, writeCpioNewc(entries));
    const r = await run(['busybox', 'cpio', '-t', '-F', archive]);
    assert.deepEqual(r.stdout.toString().trim().split('\n'), [
      'dev',
      'dev/console',
      'modules',
      'modules/01-a.ko',
      'modules/02-bb.ko',
      'empty',
      'sh',
      'init',
    ]);
    const verbose = (await run(['busybox', 'cpio', '-tv', '-F', archive])).stdout.toString();
    assert.match(verbose, /^crw------- 0\/0 .* dev\/console$/m);
    assert.match(verbose, /^-rwxr-xr-x 0\/0 .* init$/m);
  });
});

test(
  'extracting with busybox cpio gives back the same contents, modes and links',
  { skip },
  async () => {
    await withTmp(async (dir) => {
      const archive = join(dir, 'a.cpio');
      await writeFile(archive, writeCpioNewc(entries.filter((e) => e.type !== 'chardev')));
      const out = join(dir, 'x');
      await run(['mkdir', out]);
      await run(['busybox', 'cpio', '-i', '-d', '-F', archive], { cwd: out });
      assert.ok((await readFile(join(out, 'modules/02-bb.ko'))).equals(big));
      assert.equal((await readFile(join(out, 'modules/01-a.ko'))).toString(), 'abc');
      assert.equal((await readFile(join(out, 'empty'))).length, 0);
      assert.equal((await stat(join(out, 'init'))).mode & 0o777, 0o755);
      assert.equal((await stat(join(out, 'modules/02-bb.ko'))).mode & 0o777, 0o600);
      assert.equal(await readlink(join(out, 'sh')), 'init');
    });
  },
);

test('the same entries always give the same bytes', () => {
  assert.equal(sha256(writeCpioNewc(entries)), sha256(writeCpioNewc(entries)));
  const a = buildInitramfs({
    init: Buffer.from('x'),
    modules: [{ name: 'virtio', data: makeKo(['depends=']) }],
  });
  const b = buildInitramfs({
    init: Buffer.from('x'),
    modules: [{ name: 'virtio', data: makeKo(['depends=']) }],
  });
  assert.ok(a.equals(b));
});

test('initramfs module files are named LL-NN-<name>.ko: load wave, then load order', () => {
  const cpio = buildInitramfs({
    init: Buffer.from('x'),
    modules: [
      { name: 'virtio_ring', data: makeKo(['depends=']) },
      { name: 'virtio', data: makeKo(['depends=virtio_ring']) },
      { name: 'failover', data: makeKo(['depends=']) },
    ],
  });
  for (const n of [
    'modules/00-01-virtio_ring.ko',
    'modules/01-02-virtio.ko',
    'modules/00-03-failover.ko',
  ])
    assert.ok(cpio.includes(Buffer.from(n + '\0')), n);
});

test('records are 4-byte aligned and the archive ends with TRAILER!!!', () => {
  const buf = writeCpioNewc(entries);
  assert.equal(buf.length % 4, 0);
  assert.equal(buf.subarray(0, 6).toString(), '070701');
  assert.ok(buf.includes(Buffer.from('TRAILER!!!\0')));
  // every header starts at a multiple of 4
  let at = buf.indexOf('070701');
  while (at >= 0) {
    assert.equal(at % 4, 0);
    at = buf.indexOf('070701', at + 1);
  }
});

test('rejects paths that escape or are empty', () => {
  assert.throws(() => writeCpioNewc([{ type: 'dir', path: '../x', mode: 0o755 }]), RangeError);
  assert.throws(() => writeCpioNewc([{ type: 'dir', path: '/', mode: 0o755 }]), RangeError);
});

test(
  'the initramfs has /init, numbered modules, mount points and /dev/console',
  { skip },
  async () => {
    await withTmp(async (dir) => {
      const archive = join(dir, 'i.cpio');
      const modules = [
        { name: 'virtio_ring', data: makeKo(['depends=']) },
        { name: 'virtio', data: makeKo(['depends=virtio_ring']) },
        { name: 'virtio_mmio', data: makeKo(['depends=virtio,virtio_ring']) },
      ];
      await writeFile(archive, buildInitramfs({ init: Buffer.from('init'), modules }));
      const listing = (await run(['busybox', 'cpio', '-tv', '-F', archive])).stdout.toString();
      for (const p of ['dev', 'proc', 'sys', 'newroot', 'modules', 'init'])
        assert.match(listing, new RegExp(` ${p}$`, 'm'));
      assert.match(listing, /^c.* dev\/console$/m);
      assert.match(listing, /^-rwxr-xr-x .* init$/m);
      const mods = listing
        .split('\n')
        .filter((l) => l.includes('modules/'))
        .map((l) => l.split(' ').at(-1));
      assert.deepEqual(mods, [
        'modules/00-01-virtio_ring.ko',
        'modules/01-02-virtio.ko',
        'modules/02-03-virtio_mmio.ko',
      ]);
    });
  },
);
