/**
 * The default busybox rootfs and the per-workspace disks, with the real
 * e2fsprogs and qemu-img. The guest init stand-in is a copy of busybox.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, rm, stat, appendFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureDefaultImage, type DefaultImage } from '../../src/image/default-image.js';
import { debugfsRead } from '../../src/image/e2fs.js';
import { createOverlay, writeConfigDisk } from '../../src/rootfs/disks.js';
import { StatePaths } from '../../src/paths.js';
import { run } from '../../src/proc/spawn.js';
import { sha256File } from '../../src/util/fs.js';
import { CONFIG_MAGIC } from '../../src/guest/protocol.js';

const missing = [
  '/bin/busybox',
  '/usr/sbin/mke2fs',
  '/usr/sbin/debugfs',
  '/usr/bin/qemu-img',
].filter((p) => !existsSync(p));
const skip = missing.length
  ? `needs ${missing.join(', ')} (busybox-static, e2fsprogs, qemu-utils)`
  : false;

describe('default image', { skip }, () => {
  let root: string;
  let paths: StatePaths;
  let init: string;
  let image: DefaultImage;
  let buildMs: number;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ma-image-it-'));
    paths = new StatePaths(join(root, 'state'));
    init = join(root, 'init');
    await copyFile('/bin/busybox', init);
    const t = performance.now();
    // forceOwnershipFix: exercise the non-root debugfs pass even as root.
    image = await ensureDefaultImage(paths, { guestInit: init, forceOwnershipFix: true });
    buildMs = performance.now() - t;
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('builds an ext4 image with busybox, its applets and the guest init', async (t) => {
    t.diagnostic(`build took ${buildMs.toFixed(0)} ms; ${image.sizeBytes} bytes apparent`);
    assert.equal(image.built, true);
    assert.equal(image.initSha256, await sha256File(init));
    assert.equal(image.busyboxSha256, await sha256File('/bin/busybox'));
    const st = await debugfsRead(image.path, 'stat /sbin/microagent-init');
    assert.match(st, /Type: regular\s+Mode:\s+0755/);
    assert.match(st, /User:\s+0\s+Group:\s+0/);
    const dump = join(root, 'init.out');
    await run(['debugfs', '-R', `dump /sbin/microagent-init ${dump}`, image.path]);
    assert.equal(await sha256File(dump), image.initSha256);

    const ls = await debugfsRead(image.path, 'ls -l /');
    for (const [name, mode] of [
      ['root', '40700'],
      ['tmp', '41777'],
      ['proc', '40555'],
      ['bin', '40755'],
      ['etc', '40755'],
      ['run', '40755'],
    ] as const) {
      assert.match(
        ls,
        new RegExp(`\\s${mode} \\(2\\)\\s+0\\s+0\\s.*\\s${name}\\n`),
        `${name} ${mode} 0:0`,
      );
    }
    assert.match(
      await debugfsRead(image.path, 'stat /bin/sh'),
      /Type: symlink[\s\S]*User:\s+0\s+Group:\s+0[\s\S]*Fast link dest: "\/bin\/busybox"/,
    );
    assert.match(
      await debugfsRead(image.path, 'stat /sbin/ip'),
      /Fast link dest: "\/bin\/busybox"/,
    );
    assert.match(
      await debugfsRead(image.path, 'cat /etc/passwd'),
      /^root:x:0:0:root:\/root:\/bin\/sh$/m,
    );
    assert.match(await debugfsRead(image.path, 'cat /etc/os-release'), /NAME="microagent default"/);
    const fsck = await run(['e2fsck', '-fn', image.path], { allowFailure: true });
    assert.equal(fsck.exitCode, 0, fsck.stdout.toString() + fsck.stderr.toString());
    const label = (
      await run(['dumpe2fs', '-h', image.path], { allowFailure: true })
    ).stdout.toString();
    assert.match(label, /Filesystem volume name:\s+microagent-root/);
    assert.match(label, /Block size:\s+4096/);
  });

  test('the second call reuses the cached image; a new guest init gets a new one', async () => {
    const again = await ensureDefaultImage(paths, { guestInit: init });
    assert.equal(again.built, false);
    assert.equal(again.path, image.path);
    await appendFile(init, 'rebuilt');
    const fresh = await ensureDefaultImage(paths, { guestInit: init });
    assert.equal(fresh.built, true);
    assert.notEqual(fresh.key, image.key);
  });

  test('createOverlay makes a qcow2 over the raw baseline, 0600, baseline untouched', async () => {
    const ws = join(root, 'ws');
    await run(['mkdir', '-p', ws]);
    const overlay = join(ws, 'rootfs.qcow2');
    const before = (await stat(image.path)).mtimeMs;
    await createOverlay(image.path, overlay);
    const info = JSON.parse(
      (await run(['qemu-img', 'info', '--output=json', overlay])).stdout.toString(),
    );
    assert.equal(info.format, 'qcow2');
    assert.equal(info['backing-filename'], image.path);
    assert.equal(info['backing-filename-format'], 'raw');
    assert.equal(info['virtual-size'], image.sizeBytes);
    assert.equal((await stat(overlay)).mode & 0o777, 0o600);
    assert.equal((await stat(image.path)).mtimeMs, before);
  });

  test('the overlay is byte for byte what qemu-img writes, and qemu-img check passes', async () => {
    const dir = join(root, 'qcow2');
    await run(['mkdir', '-p', dir]);
    // Sizes around the L1 table's steps (one entry per 512 MiB), an odd
    // one (rounded to sectors) and the largest this layout covers (4 TiB).
    const sizes = [1000, 1 << 20, 512 * 2 ** 20, 512 * 2 ** 20 + 1, 10 * 2 ** 30, 4 * 2 ** 40];
    for (const size of sizes) {
      const backing = join(dir, `backing with spaces ${size}.raw`);
      await run(['truncate', '-s', String(size), backing]);
      const ours = join(dir, `ours-${size}.qcow2`);
      const theirs = join(dir, `theirs-${size}.qcow2`);
      await createOverlay(backing, ours);
      await run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', backing, theirs]);
      assert.ok((await readFile(ours)).equals(await readFile(theirs)), `size ${size}`);
      await run(['qemu-img', 'check', '-q', ours]);
      await rm(backing);
    }
  });

  test('writeConfigDisk writes the protocol image, 0600', async () => {
    const path = join(root, 'config.img');
    await writeConfigDisk(path, { v: 1, workspace: 'w1', hostname: 'w1' });
    const data = await readFile(path);
    assert.equal(data.subarray(0, 8).toString(), CONFIG_MAGIC);
    assert.equal(data.length % 4096, 0);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
  });
});
