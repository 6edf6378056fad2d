/**
 * An image made by the real umoci (two layers: the second deletes a file
 * and a directory, so umoci writes whiteouts) becomes an ext4 rootfs whose
 * every inode matches the tree umoci packed: type, mode, owner, mtime,
 * size, content, device numbers, hard links and security.capability.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmod,
  chown,
  copyFile,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildRootfs, type RootfsBuildResult } from '../../src/rootfs/build.js';
import { StatePaths } from '../../src/paths.js';
import { run } from '../../src/proc/spawn.js';
import { sha256 } from '../../src/util/fs.js';
import { e2fsckClean, ext4Read, ext4Stat, ext4Xattr } from '../support/ext4-inspect.js';
import { openLayer, readTar } from '../../src/rootfs/tar.js';
import { layoutImage, umoci, UMOCI } from '../support/umoci.js';

const isRoot = process.getuid?.() === 0;
const skip = !UMOCI
  ? 'needs umoci (apt-get install umoci)'
  : !isRoot
    ? 'umoci unpack/repack of devices, owners and capabilities needs root'
    : !existsSync('/usr/sbin/debugfs')
      ? 'needs e2fsprogs'
      : false;
const SETCAP = ['/usr/sbin/setcap', '/sbin/setcap'].find((p) => existsSync(p));

const TYPE: Record<number, string> = {
  0o100000: 'regular',
  0o040000: 'directory',
  0o120000: 'symlink',
  0o020000: 'character special',
  0o060000: 'block special',
  0o010000: 'FIFO',
};

describe('rootfs from an umoci-built image', { skip }, () => {
  let root: string;
  let rootfs: string;
  let exact: { img: string; result: RootfsBuildResult };
  let stripped: { img: string; result: RootfsBuildResult };
  let capExpected: Buffer | undefined;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ma-rootfs-umoci-'));
    const layout = join(root, 'oci');
    const bundle = join(root, 'bundle');
    await umoci(['init', '--layout', layout]);
    await umoci(['new', '--image', `${layout}:t`]);
    await umoci(['unpack', '--image', `${layout}:t`, bundle]);
    rootfs = join(bundle, 'rootfs');

    // Layer 1: a little of everything. Owner first, then mode: chown clears setuid.
    const dirs = ['etc', 'bin', 'usr/bin', 'var/cache/apt', 'dev', 'home/user', 'run'];
    for (const d of dirs) await mkdir(join(rootfs, d), { recursive: true });
    await writeFile(join(rootfs, 'etc/hostname'), 'umoci\n');
    await writeFile(join(rootfs, 'etc/old'), 'deleted in layer 2\n');
    await writeFile(join(rootfs, 'var/cache/apt/pkgcache.bin'), Buffer.alloc(70_000, 3));
    await copyFile('/bin/busybox', join(rootfs, 'bin/busybox'));
    await chmod(join(rootfs, 'bin/busybox'), 0o755);
    await symlink('busybox', join(rootfs, 'bin/sh'));
    await symlink('/' + 'x'.repeat(80) + '/long-target', join(rootfs, 'bin/slow-link'));
    await writeFile(join(rootfs, 'bin/su'), 'su');
    await chmod(join(rootfs, 'bin/su'), 0o4755);
    await writeFile(join(rootfs, 'usr/bin/ping'), 'ping');
    await chmod(join(rootfs, 'usr/bin/ping'), 0o755);
    if (SETCAP) {
      await run([SETCAP, 'cap_net_raw+ep', join(rootfs, 'usr/bin/ping')]);
    }
    await link(join(rootfs, 'bin/busybox'), join(rootfs, 'usr/bin/busybox-hardlink'));
    await run(['mknod', '-m', '666', join(rootfs, 'dev/null'), 'c', '1', '3']);
    await run(['mknod', '-m', '660', join(rootfs, 'dev/sda'), 'b', '8', '0']);
    await chown(join(rootfs, 'dev/sda'), 0, 6);
    await run(['mkfifo', '-m', '600', join(rootfs, 'run/initctl')]);
    await writeFile(join(rootfs, 'home/user/.profile'), 'export A=1\n');
    await chown(join(rootfs, 'home/user/.profile'), 1000, 1000);
    await chown(join(rootfs, 'home/user'), 1000, 1000);
    await chmod(join(rootfs, 'home/user'), 0o750);
    const longDir = join(rootfs, 'usr/share/' + 'l'.repeat(60) + '/' + 'm'.repeat(60));
    await mkdir(longDir, { recursive: true });
    await writeFile(join(longDir, 'long-file-name.txt'), 'long');
    await utimes(join(rootfs, 'etc/hostname'), 1_111_111_111, 1_111_111_111);
    // --refresh-bundle: the next repack diffs against this layer, not the empty base.
    await umoci(['repack', '--refresh-bundle', '--image', `${layout}:t`, bundle]);

    // Layer 2: deletions (whiteouts) and a new file.
    await rm(join(rootfs, 'etc/old'));
    await rm(join(rootfs, 'var/cache/apt'), { recursive: true });
    await writeFile(join(rootfs, 'etc/new'), 'added in layer 2\n');
    await umoci(['repack', '--image', `${layout}:t`, bundle]);

    const image = await layoutImage(layout, 't');
    assert.ok(image.layers.length >= 2, 'two layers at least');
    // What umoci put in the layer (a SCHILY.xattr PAX record) is the reference.
    for (const l of image.layers) {
      for await (const e of readTar(openLayer(l.path, l.mediaType))) {
        const v = e.xattrs.get('security.capability');
        if (v && e.path.replace(/^\.?\//, '') === 'usr/bin/ping') capExpected = v;
      }
    }
    const paths = new StatePaths(join(root, 'state'));
    const init = join(root, 'init');
    await copyFile('/bin/busybox', init);
    const base = { layers: image.layers, imageDigest: image.manifestDigest, guestInit: init };
    exact = {
      img: join(root, 'exact.ext4'),
      result: await buildRootfs(
        paths,
        { ...base, allowGuestSetuid: true },
        { outPath: join(root, 'exact.ext4') },
      ),
    };
    stripped = {
      img: join(root, 'stripped.ext4'),
      result: await buildRootfs(paths, base, { outPath: join(root, 'stripped.ext4') }),
    };
  });

  after(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  test('e2fsck -fn is clean and nothing was rejected', async (t) => {
    t.diagnostic(JSON.stringify(exact.result.timings));
    await e2fsckClean(exact.img);
    await e2fsckClean(stripped.img);
    assert.deepEqual(exact.result.rejected, []);
  });

  test('every inode of the packed tree is in the image, with its metadata and content', async () => {
    const inodeOf = new Map<bigint, number>(); // host inode -> image inode (hard links)
    const visit = async (dir: string, rel: string): Promise<number> => {
      let n = 0;
      for (const name of (await readdir(dir)).sort()) {
        const host = join(dir, name);
        const p = `${rel}/${name}`;
        const st = await lstat(host, { bigint: true });
        const img = await ext4Stat(exact.img, p);
        assert.ok(img, `${p} is in the image`);
        const mode = Number(st.mode);
        assert.equal(img.type, TYPE[mode & 0o170000], `${p} type`);
        if ((mode & 0o170000) !== 0o120000)
          assert.equal(img.mode.toString(8), (mode & 0o7777).toString(8), `${p} mode`);
        assert.deepEqual([img.uid, img.gid], [Number(st.uid), Number(st.gid)], `${p} owner`);
        // Go's archive/tar (umoci) rounds mtimes to the nearest second.
        const hostSec = Number(st.mtimeNs) / 1e9;
        assert.ok(Math.abs(img.mtime - hostSec) <= 1, `${p} mtime ${img.mtime} vs ${hostSec}`);
        if ((mode & 0o170000) === 0o100000) {
          assert.equal(img.size, Number(st.size), `${p} size`);
          assert.equal(
            sha256(await ext4Read(exact.img, p)),
            sha256(await readFile(host)),
            `${p} content`,
          );
          const seen = inodeOf.get(st.ino);
          if (seen !== undefined) assert.equal(img.inode, seen, `${p} is a hard link`);
          inodeOf.set(st.ino, img.inode);
        }
        if ((mode & 0o170000) === 0o120000 && img.symlinkTarget !== undefined) {
          assert.equal(img.symlinkTarget, await readlink(host), `${p} target`);
        }
        if ((mode & 0o170000) === 0o020000 || (mode & 0o170000) === 0o060000) {
          const rdev = Number(st.rdev);
          assert.deepEqual(
            img.device,
            [(rdev >> 8) & 0xfff, (rdev & 0xff) | ((rdev >> 12) & 0xfff00)],
            `${p} device`,
          );
        }
        n++;
        if ((mode & 0o170000) === 0o040000) n += await visit(host, p);
      }
      return n;
    };
    const checked = await visit(rootfs, '');
    assert.ok(checked > 20, `checked ${checked} paths`);
  });

  test('umoci whiteouts removed the deleted file and directory', async () => {
    assert.equal(await ext4Stat(exact.img, '/etc/old'), undefined);
    assert.equal(await ext4Stat(exact.img, '/var/cache/apt'), undefined);
    assert.ok(await ext4Stat(exact.img, '/var/cache'));
    assert.equal((await ext4Read(exact.img, '/etc/new')).toString(), 'added in layer 2\n');
  });

  test(
    'security.capability set by setcap survives byte for byte',
    { skip: SETCAP ? false : 'needs setcap (libcap2-bin)' },
    async () => {
      const cap = await ext4Xattr(exact.img, '/usr/bin/ping', 'security.capability');
      assert.ok(cap && cap.length >= 20, 'a VFS capability blob');
      assert.ok(capExpected, 'umoci wrote the capability into the layer');
      assert.deepEqual(cap, capExpected);
      assert.equal(cap.readUInt32LE(4) & (1 << 13), 1 << 13, 'CAP_NET_RAW is in the permitted set');
    },
  );

  test('by default setuid is stripped; the rest is the same', async () => {
    assert.equal((await ext4Stat(exact.img, '/bin/su'))!.mode, 0o4755);
    assert.equal((await ext4Stat(stripped.img, '/bin/su'))!.mode, 0o755);
    assert.equal(stripped.result.setuidStripped, 1);
  });
});
