/**
 * The baseline cache with real builds: built once per key, reused by the
 * next workspace (warm path timed), one builder among concurrent callers,
 * list/remove, and a full disk (a 20 MiB tmpfs) leaving nothing behind.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  baselineKey,
  createWorkspaceDisk,
  ensureBaseline,
  ensureImageBaseline,
  listBaselines,
  reapBaselineLeftovers,
  removeBaseline,
  type BaselineKeyInput,
} from '../../src/rootfs/baseline.js';
import { StatePaths } from '../../src/paths.js';
import { run, sleep } from '../../src/proc/spawn.js';
import { sha256, sha256File } from '../../src/util/fs.js';
import { isMicroagentError } from '../../src/errors.js';
import { gzipTar, tar } from '../support/tar-writer.js';
import { e2fsckClean, ext4Stat } from '../support/ext4-inspect.js';

const missing = [
  '/usr/sbin/mke2fs',
  '/usr/sbin/debugfs',
  '/usr/bin/qemu-img',
  '/bin/busybox',
].filter((p) => !existsSync(p));
const skip = missing.length ? `needs ${missing.join(', ')}` : false;
const GZ = 'application/vnd.oci.image.layer.v1.tar+gzip';

describe('rootfs baseline cache', { skip }, () => {
  let root: string;
  let init: string;
  let layer: string;
  let paths: StatePaths;
  const digest = 'sha256:' + sha256('test image');

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ma-baseline-it-'));
    init = join(root, 'init');
    await copyFile('/bin/busybox', init);
    layer = join(root, 'layer');
    await writeFile(
      layer,
      gzipTar([
        { path: 'etc/os-release', content: 'ID=test\n' },
        { path: 'bin/su', content: 'su', mode: 0o4755 },
      ]),
    );
    paths = new StatePaths(join(root, 'state'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('the first workspace builds; the second reuses it, and its disk is a quick overlay', async (t) => {
    const input = {
      manifestDigest: digest,
      layers: [{ path: layer, mediaType: GZ, digest: 'sha256:l' }],
      guestInit: init,
    };
    const first = await ensureImageBaseline(paths, input);
    assert.equal(first.built, true);
    assert.ok(first.build);
    assert.equal(first.record.initSha256, await sha256File(init));
    assert.equal(first.record.manifestDigest, digest);
    await e2fsckClean(first.path);

    const ws = join(root, 'ws');
    await mkdir(ws);
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const again = await ensureImageBaseline(paths, input);
      await createWorkspaceDisk(again, join(ws, `disk-${i}.qcow2`));
      times.push(performance.now() - t0);
      assert.equal(again.built, false);
      assert.equal(again.path, first.path);
    }
    const worst = Math.max(...times);
    t.diagnostic(
      `warm path (cache hit + qcow2 overlay): ${times.map((x) => x.toFixed(0)).join(', ')} ms`,
    );
    assert.ok(worst <= 300, `warm path took ${worst.toFixed(0)} ms (> 300)`);
    const info = JSON.parse(
      (
        await run(['qemu-img', 'info', '--output=json', join(ws, 'disk-0.qcow2')])
      ).stdout.toString(),
    ) as { 'backing-filename': string; format: string };
    assert.equal(info.format, 'qcow2');
    assert.equal(info['backing-filename'], first.path);

    // Other build options are another baseline.
    const setuid = await ensureImageBaseline(paths, { ...input, allowGuestSetuid: true });
    assert.equal(setuid.built, true);
    assert.notEqual(setuid.key, first.key);
    assert.equal((await ext4Stat(setuid.path, '/bin/su'))!.mode, 0o4755);
    assert.equal((await ext4Stat(first.path, '/bin/su'))!.mode, 0o755);

    const listed = await listBaselines(paths);
    assert.deepEqual(listed.map((b) => b.key).sort(), [first.key, setuid.key].sort());
    assert.ok(listed.every((b) => b.allocatedBytes > 0 && b.allocatedBytes < b.record.sizeBytes));
    await removeBaseline(paths, setuid.key);
    assert.deepEqual(
      (await listBaselines(paths)).map((b) => b.key),
      [first.key],
    );
    await assert.rejects(
      removeBaseline(paths, setuid.key),
      (e) => isMicroagentError(e) && e.code === 'BASELINE_NOT_FOUND',
    );
  });

  test('concurrent callers for one key: one builds, the others wait and reuse', async () => {
    const key: BaselineKeyInput = {
      manifestDigest: 'sha256:' + sha256('concurrent'),
      initSha256: sha256('init'),
      options: { allowGuestSetuid: false, sizeBytes: null },
    };
    let builds = 0;
    const build = async (
      out: string,
    ): Promise<{ sizeBytes: number; contentBytes: number; inodes: number }> => {
      builds++;
      await sleep(300);
      await writeFile(out, Buffer.alloc(4096));
      return { sizeBytes: 4096, contentBytes: 0, inodes: 1 };
    };
    const results = await Promise.all([1, 2, 3].map(() => ensureBaseline(paths, key, build)));
    assert.equal(builds, 1);
    assert.deepEqual(results.map((r) => r.built).sort(), [false, false, true]);
    assert.equal(new Set(results.map((r) => r.path)).size, 1);
    assert.equal(results[0]!.key, baselineKey(key));
  });

  test('a failed build leaves no entry and no build directory', async () => {
    const key: BaselineKeyInput = {
      manifestDigest: 'sha256:' + sha256('fails'),
      initSha256: sha256('init'),
      options: { allowGuestSetuid: false, sizeBytes: null },
    };
    await assert.rejects(
      ensureBaseline(paths, key, async (out) => {
        await writeFile(out, 'partial');
        throw new Error('boom');
      }),
      /boom/,
    );
    const names = await readdir(paths.baselines);
    assert.ok(!names.includes(baselineKey(key)));
    assert.deepEqual(
      names.filter((n) => n.startsWith('.')),
      [],
    );
    // A crashed build's directory (no lock held) is reaped.
    await mkdir(join(paths.baselines, `.building-${baselineKey(key)}-XXXXXX`));
    assert.equal((await reapBaselineLeftovers(paths)).length, 1);
  });

  describe(
    'on a full disk (20 MiB tmpfs as the state directory)',
    {
      skip: process.getuid?.() === 0 ? false : 'mounting a tmpfs needs root',
    },
    () => {
      let mnt: string;
      let small: StatePaths;
      before(async () => {
        mnt = join(root, 'tmpfs');
        await mkdir(mnt);
        await run(['mount', '-t', 'tmpfs', '-o', 'size=20m,mode=0700', 'tmpfs', mnt]);
        small = new StatePaths(join(mnt, 'state'));
        // Stage on the small disk too (not /dev/shm), as on a host without tmpfs.
        process.env.MICROAGENT_STAGING_DIR = small.tmp;
      });
      after(async () => {
        delete process.env.MICROAGENT_STAGING_DIR;
        await run(['umount', mnt], { allowFailure: true });
      });

      const cases: Array<[string, number]> = [
        ['staging runs out of space', 30],
        ['the image does not fit next to the staged tree', 9],
      ];
      for (const [what, mib] of cases) {
        test(`${what}: DISK_FULL, nothing partial left`, async () => {
          const blob = join(root, `rand-${mib}`);
          // Random bytes: incompressible, so the staged file really is that big.
          await writeFile(
            blob,
            tar([{ path: 'data/blob', content: randomBytes(mib * 1024 * 1024) }]),
          );
          await assert.rejects(
            ensureImageBaseline(small, {
              manifestDigest: 'sha256:' + sha256(`full-${mib}`),
              layers: [
                {
                  path: blob,
                  mediaType: 'application/vnd.oci.image.layer.v1.tar',
                  digest: 'sha256:r',
                },
              ],
              guestInit: init,
            }),
            (e) => isMicroagentError(e) && e.code === 'DISK_FULL',
          );
          assert.deepEqual(await readdir(small.tmp), []);
          assert.deepEqual(await readdir(small.baselines).catch(() => []), []);
          assert.deepEqual((await listBaselines(small)).length, 0);
        });
      }

      test('the cache still works once space is free', async () => {
        const r = await ensureImageBaseline(small, {
          manifestDigest: digest,
          layers: [{ path: layer, mediaType: GZ, digest: 'sha256:l' }],
          guestInit: init,
          sizeBytes: 64 * 1024 * 1024,
        });
        assert.equal(r.built, true);
        await e2fsckClean(r.path);
      });
    },
  );
});
