/**
 * Disk sizing for a rootfs: headroom when unpinned, a clear error when a
 * pinned size cannot hold the content.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planSize } from '../../src/rootfs/build.js';
import { isMicroagentError } from '../../src/errors.js';

const MIB = 1024 * 1024;

test('unpinned: content × 1.5 + 256 MiB + inode tables, whole MiB, inodes for twice the paths', () => {
  const p = planSize(200 * MIB, 10_000);
  assert.equal(p.sizeBytes % MIB, 0);
  assert.ok(p.sizeBytes >= 200 * MIB * 1.5 + 256 * MIB);
  assert.ok(p.sizeBytes < 600 * MIB);
  assert.ok(p.inodes >= 2 * 10_000);
});

test('many small files get enough inodes, beyond the 1-per-16-KiB default', () => {
  const p = planSize(100 * MIB, 200_000);
  assert.ok(p.inodes >= 400_000);
  assert.ok(p.inodes > p.sizeBytes / 16384);
});

test('pinned: kept when it fits, ROOTFS_TOO_SMALL when it does not', () => {
  assert.equal(planSize(10 * MIB, 100, 512 * MIB).sizeBytes, 512 * MIB);
  assert.throws(
    () => planSize(100 * MIB, 100, 64 * MIB),
    (e) => isMicroagentError(e) && e.code === 'ROOTFS_TOO_SMALL' && e.kind === 'usage',
  );
});
