import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KernelManifestSchema } from '../../src/kernel/manifest.js';
import { KernelSourceSchema } from '../../src/kernel/source.js';

const h = (c: string): string => c.repeat(64);
const valid = {
  v: 1,
  id: 'debian-6.1.0-56-cloud-amd64',
  version: '6.1.0-56-cloud-amd64',
  source: {
    kind: 'apt',
    package: 'linux-image-6.1.0-56-cloud-amd64',
    packageVersion: '6.1.192-2',
    debSha256: h('a'),
  },
  bootFormat: 'elf-pvh',
  files: {
    kernel: { path: 'vmlinux', sha256: h('b'), size: 53243444 },
    initramfs: { path: 'initramfs.cpio', sha256: h('c'), size: 2474116 },
  },
  modules: [{ name: 'virtio_ring', sha256: h('d') }],
  initSha256: h('e'),
  installedAt: '2026-11-21T14:34:01.286Z',
};

test('accepts a complete manifest', () => {
  assert.deepEqual(KernelManifestSchema.parse(valid), valid);
});

test('rejects unknown fields at every level', () => {
  assert.equal(KernelManifestSchema.safeParse({ ...valid, extra: 1 }).success, false);
  assert.equal(
    KernelManifestSchema.safeParse({ ...valid, source: { ...valid.source, x: 1 } }).success,
    false,
  );
  assert.equal(
    KernelManifestSchema.safeParse({
      ...valid,
      files: { ...valid.files, kernel: { ...valid.files.kernel, mode: 1 } },
    }).success,
    false,
  );
});

test('rejects a wrong version, bad digests, escaping paths and reserved ids', () => {
  assert.equal(KernelManifestSchema.safeParse({ ...valid, v: 2 }).success, false);
  assert.equal(KernelManifestSchema.safeParse({ ...valid, initSha256: 'ABC' }).success, false);
  const escaping = {
    ...valid,
    files: { ...valid.files, kernel: { ...valid.files.kernel, path: '../../etc/passwd' } },
  };
  assert.equal(KernelManifestSchema.safeParse(escaping).success, false);
  assert.equal(KernelManifestSchema.safeParse({ ...valid, id: 'default' }).success, false);
  assert.equal(KernelManifestSchema.safeParse({ ...valid, id: '../x' }).success, false);
  assert.equal(KernelManifestSchema.safeParse({ ...valid, bootFormat: 'pe' }).success, false);
});

test('custom kernel sources require a SHA-256 (fail closed)', () => {
  assert.equal(KernelSourceSchema.safeParse({ kind: 'file', path: '/k' }).success, false);
  assert.equal(KernelSourceSchema.safeParse({ kind: 'url', url: 'https://x/k' }).success, false);
  assert.equal(
    KernelSourceSchema.safeParse({ kind: 'file', path: '/k', sha256: 'short' }).success,
    false,
  );
  const ok = KernelSourceSchema.parse({ kind: 'file', path: '/k', sha256: 'sha256:' + h('A') });
  assert.equal(ok.kind === 'file' && ok.sha256, h('a'));
  assert.equal(KernelSourceSchema.safeParse({ kind: 'apt' }).success, true);
});
