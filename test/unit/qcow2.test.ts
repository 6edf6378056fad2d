/**
 * The qcow2 overlay writer's limits (its bytes are compared with qemu-img's
 * in test/integration/default-image.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { qcow2Overlay, QCOW2_MAX_DIRECT_SIZE } from '../../src/rootfs/qcow2.js';

describe('qcow2 overlay', () => {
  it('has the qcow2 v3 header, the backing path and one L1 entry per 512 MiB', () => {
    const b = qcow2Overlay('/img/rootfs.ext4', 1024 ** 3 + 1);
    assert.equal(b.subarray(0, 4).toString('latin1'), 'QFI\xfb');
    assert.equal(b.readUInt32BE(4), 3);
    assert.equal(b.readUInt32BE(36), 3, 'L1 entries for 1 GiB + 1 sector');
    assert.equal(b.length, 3 * 65536 + 3 * 8);
    const at = Number(b.readBigUInt64BE(8));
    assert.equal(b.subarray(at, at + b.readUInt32BE(16)).toString(), '/img/rootfs.ext4');
  });

  it('refuses sizes and backing names it cannot describe', () => {
    for (const size of [0, -1, 1.5, QCOW2_MAX_DIRECT_SIZE + 512, Number.MAX_SAFE_INTEGER + 2]) {
      assert.throws(() => qcow2Overlay('/b', size), /size/, String(size));
    }
    assert.throws(() => qcow2Overlay('', 4096), /backing file name/);
    assert.throws(() => qcow2Overlay('/' + 'x'.repeat(1023), 4096), /backing file name/);
  });
});
