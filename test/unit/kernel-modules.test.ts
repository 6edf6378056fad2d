import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ModuleTree,
  modinfoOf,
  moduleName,
  parseModinfo,
  DEFAULT_WANTED_MODULES,
} from '../../src/kernel/modules.js';
import { isMicroagentError } from '../../src/errors.js';
import { makeKo } from './helpers/kernel-fixtures.js';
import { moduleWaves } from '../../src/kernel/initramfs.js';
import { HAVE_APT, kernelDeb } from '../support/kernel-deb.js';

/** The real kernel's modules: an unpacked Debian .deb (test/support/kernel-deb.ts). */
const skipReal = HAVE_APT ? false : 'host capability: Debian apt (for the kernel package)';

test('parses depends/name/vermagic from .modinfo, "-" and "_" as one', () => {
  const info = parseModinfo(
    Buffer.from('license=GPL\0depends=virtio-ring,virtio\0name=virtio_mmio\0vermagic=6.1 SMP\0\0'),
  );
  assert.deepEqual(info.depends, ['virtio_ring', 'virtio']);
  assert.equal(info.name, 'virtio_mmio');
  assert.equal(info.vermagic, '6.1 SMP');
  assert.deepEqual(parseModinfo(Buffer.from('depends=\0')).depends, []);
  assert.equal(moduleName('net-failover'), 'net_failover');
});

test('reads .modinfo from an ELF relocatable', () => {
  const ko = makeKo(['depends=a,b-c', 'name=x']);
  assert.deepEqual(modinfoOf(ko, 'x.ko').depends, ['a', 'b_c']);
  assert.throws(
    () => modinfoOf(Buffer.from('nope'), 'y.ko'),
    (e) => isMicroagentError(e) && e.code === 'KERNEL_INVALID',
  );
});

test('closure orders dependencies first and skips built-in modules', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mods-test-'));
  try {
    await mkdir(join(dir, 'kernel', 'drivers'), { recursive: true });
    const mods: Record<string, string[]> = {
      top: ['mid-one', 'builtin_x'],
      mid_one: ['base'],
      base: [],
      other: ['base'],
    };
    for (const [name, deps] of Object.entries(mods)) {
      await writeFile(
        join(dir, 'kernel', 'drivers', `${name.replace('_', '-')}.ko`),
        makeKo([`depends=${deps.join(',')}`]),
      );
    }
    await writeFile(join(dir, 'modules.builtin'), 'kernel/drivers/builtin_x.ko\n');
    const tree = await ModuleTree.open(dir);
    assert.deepEqual(
      (await tree.closure(['top', 'other'])).map((m) => m.name),
      ['base', 'mid_one', 'top', 'other'],
    );
    await assert.rejects(
      tree.closure(['missing']),
      (e) => isMicroagentError(e) && e.code === 'KERNEL_INVALID',
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('load waves: after every dependency in the list, virtio drivers after the transport', () => {
  const mod = (name: string, deps: string[]): { name: string; data: Buffer } => ({
    name,
    data: makeKo([`depends=${deps.join(',')}`]),
  });
  // The Debian cloud kernel's closure, in the order closure() gives it.
  const waves = moduleWaves([
    mod('virtio_ring', []),
    mod('virtio', ['virtio_ring']),
    mod('virtio_mmio', ['virtio', 'virtio_ring']),
    mod('virtio_blk', ['virtio', 'virtio_ring']),
    mod('virtio_console', ['virtio', 'virtio_ring']),
    mod('failover', []),
    mod('net_failover', ['failover']),
    mod('virtio_net', ['virtio_ring', 'virtio', 'net_failover']),
    mod('ext4_helper', ['builtin_crc', 'failover']), // a built-in dependency does not count
  ]);
  assert.deepEqual(waves, [0, 1, 2, 3, 3, 0, 1, 3, 1]);
});

test('real Debian modules: virtio closure in load order', { skip: skipReal }, async () => {
  const realDir = (await kernelDeb()).modules;
  const tree = await ModuleTree.open(realDir);
  const names = (await tree.closure(DEFAULT_WANTED_MODULES)).map((m) => m.name);
  assert.deepEqual(
    new Set(names),
    new Set([
      'virtio',
      'virtio_ring',
      'virtio_mmio',
      'virtio_blk',
      'virtio_console',
      'failover',
      'net_failover',
      'virtio_net',
    ]),
  );
  const before = (a: string, b: string): void =>
    assert.ok(names.indexOf(a) < names.indexOf(b), `${a} before ${b}`);
  before('virtio', 'virtio_mmio');
  before('virtio_ring', 'virtio_mmio');
  before('failover', 'net_failover');
  before('net_failover', 'virtio_net');
  // ext4 is built into the Debian cloud kernel, so it is never a module here
  assert.ok(tree.isBuiltin('ext4'));
  assert.ok((await readdir(realDir)).includes('modules.builtin'));
});
