/** Resource profiles: the disk size rules and --disk-size parsing. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MicroagentError } from '../../src/errors.js';
import {
  DISK_MIB_MAX,
  DISK_MIB_MIN,
  PROFILES,
  parseDiskSize,
  resolveResources,
} from '../../src/workspace/profiles.js';

describe('resource profiles', () => {
  it("give each workspace its profile's disk, unpinned, unless --disk-size pins one", () => {
    for (const [name, p] of Object.entries(PROFILES)) {
      const r = resolveResources({ profile: name });
      assert.equal(r.diskMiB, p.diskMiB);
      assert.equal(r.diskPinned, undefined);
    }
    const pinned = resolveResources({ profile: 'large', diskMiB: 700 });
    assert.deepEqual([pinned.diskMiB, pinned.diskPinned], [700, true]);
    // A record's resources stay as they were (pinned or not).
    assert.equal(resolveResources({ profile: 'small', diskMiB: 1024 }).diskPinned, true);
    assert.equal(
      resolveResources({ profile: 'small', diskMiB: 1024, diskPinned: false }).diskPinned,
      undefined,
    );
  });

  it('refuses disk sizes out of range, naming the limits', () => {
    for (const diskMiB of [DISK_MIB_MIN - 1, DISK_MIB_MAX + 1, 1.5]) {
      assert.throws(
        () => resolveResources({ diskMiB }),
        (e: MicroagentError) =>
          e.code === 'INVALID_ARGUMENT' && /disk size must be/.test(e.message),
      );
    }
  });

  it('parses --disk-size in M, G and T', () => {
    assert.equal(parseDiskSize('512'), 512);
    assert.equal(parseDiskSize('512M'), 512);
    assert.equal(parseDiskSize('4G'), 4096);
    assert.equal(parseDiskSize('4GiB'), 4096);
    assert.equal(parseDiskSize('1T'), 1024 * 1024);
    assert.throws(() => parseDiskSize('4X'), /--disk-size must look like/);
    assert.throws(() => parseDiskSize('-1G'), /--disk-size must look like/);
  });
});
