/**
 * Files in and out of a stopped workspace disk (a qcow2 overlay on a raw
 * ext4 baseline) with the real qemu-img and e2fsprogs, no VM: byte-exact
 * 50 MiB both ways, metadata, symlinks (followed inside the image on read,
 * replaced on write), errors, the baseline and (on read) the overlay left
 * untouched, a journal that needs replaying, and a disk held by another
 * process.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmod,
  chown,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createOverlay } from '../../src/rootfs/disks.js';
import { mkfsExt4 } from '../../src/image/e2fs.js';
import {
  readFileFromDisk,
  removeOfflineLeftovers,
  writeFileToDisk,
} from '../../src/rootfs/offline-files.js';
import { isAlive, run, signalProcess, sleep } from '../../src/proc/spawn.js';
import { sha256, sha256File } from '../../src/util/fs.js';
import { isMicroagentError, type ErrorCode } from '../../src/errors.js';
import { e2fsckClean, ext4Read, ext4Stat } from '../support/ext4-inspect.js';

const missing = [
  '/usr/sbin/mke2fs',
  '/usr/sbin/debugfs',
  '/usr/sbin/e2fsck',
  '/usr/bin/qemu-img',
].filter((p) => !existsSync(p));
const skip = missing.length ? `needs ${missing.join(', ')} (e2fsprogs, qemu-utils)` : false;
const isRoot = process.getuid?.() === 0;
const MiB = 1024 * 1024;

async function rejectsWith(
  p: Promise<unknown>,
  code: ErrorCode,
  data?: Record<string, unknown>,
): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isMicroagentError(err), String(err));
    assert.equal(err.code, code, err.message);
    for (const [k, v] of Object.entries(data ?? {})) assert.equal(err.data[k], v);
    return true;
  });
}

describe('offline files on a stopped workspace disk', { skip }, () => {
  let root: string;
  let baseline: string;
  let baselineSha: string;
  let ws: string;
  let disk: string;

  /** The disk as one raw image (for e2fsck and debugfs checks). */
  async function flatten(img = disk): Promise<string> {
    const out = join(root, `flat-${randomBytes(4).toString('hex')}.raw`);
    await run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', img, out]);
    return out;
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ma-offline-it-'));
    const tree = join(root, 'tree');
    await mkdir(join(tree, 'etc'), { recursive: true });
    await mkdir(join(tree, 'home/u'), { recursive: true });
    await mkdir(join(tree, 'usr/lib'), { recursive: true });
    await writeFile(join(tree, 'etc/hello'), 'hello from the baseline\n');
    await writeFile(join(tree, 'usr/lib/os-release'), 'ID=test\n');
    await symlink('../usr/lib/os-release', join(tree, 'etc/os-release')); // relative, like Debian's
    await symlink('/etc/hello', join(tree, 'link')); // absolute: the image's /etc/hello
    await symlink('home/u', join(tree, 'ulink')); // a symlinked directory
    await writeFile(join(tree, 'home/u/secret'), 'uid 1000 only\n');
    if (isRoot) await chown(join(tree, 'home/u/secret'), 1000, 1000); // chown before chmod
    await chmod(join(tree, 'home/u/secret'), 0o640);
    baseline = join(root, 'baseline.ext4');
    await mkfsExt4(tree, baseline, 1024 * MiB, 'test-root');
    await chmod(baseline, 0o444);
    baselineSha = await sha256File(baseline);
    ws = join(root, 'ws');
    await mkdir(ws, { mode: 0o700 });
    disk = join(ws, 'rootfs.qcow2');
    await createOverlay(baseline, disk);
  });

  after(async () => {
    if (baseline)
      assert.equal(await sha256File(baseline), baselineSha, 'the baseline was modified');
    await rm(root, { recursive: true, force: true });
  });

  test('reads a baseline file with its metadata and leaves the disk as it was', async () => {
    const before = await sha256File(disk);
    const out = join(root, 'secret.out');
    const st = await readFileFromDisk(disk, '/home/u/secret', out);
    assert.equal(await readFile(out, 'utf8'), 'uid 1000 only\n');
    assert.equal(st.size, 14);
    assert.equal(st.mode, 0o640);
    if (isRoot) assert.deepEqual([st.uid, st.gid], [1000, 1000]);
    assert.equal(
      (await stat(out)).mode & 0o777,
      0o644,
      'the host copy gets 0644, not the guest mode',
    );
    assert.equal(await sha256File(disk), before, 'a read changed the overlay');
    assert.deepEqual(await readdir(ws), ['rootfs.qcow2'], 'a read left files behind');
  });

  test('reads follow symlinks inside the image (absolute, relative, a symlinked parent)', async () => {
    const out = join(root, 'follow.out');
    await readFileFromDisk(disk, '/link', out);
    assert.equal(await readFile(out, 'utf8'), 'hello from the baseline\n');
    await readFileFromDisk(disk, '/etc/os-release', out);
    assert.equal(await readFile(out, 'utf8'), 'ID=test\n');
    await readFileFromDisk(disk, '/ulink/secret', out);
    assert.equal(await readFile(out, 'utf8'), 'uid 1000 only\n');
  });

  test('a 50 MiB random file goes in and comes out byte-exact, with mode and owner applied', async (t) => {
    const src = join(root, 'big.bin');
    const data = randomBytes(50 * MiB);
    await writeFile(src, data);
    const t0 = performance.now();
    const w = await writeFileToDisk(disk, '/home/u/big.bin', src, {
      mode: 0o4750,
      uid: 1234,
      gid: 100000,
    });
    const t1 = performance.now();
    assert.equal(w.bytes, 50 * MiB);
    const out = join(root, 'big.out');
    const st = await readFileFromDisk(disk, '/home/u/big.bin', out);
    const t2 = performance.now();
    t.diagnostic(`50 MiB in ${(t1 - t0).toFixed(0)} ms, out ${(t2 - t1).toFixed(0)} ms`);
    assert.equal(await sha256File(out), sha256(data));
    assert.deepEqual(st, { size: 50 * MiB, mode: 0o4750, uid: 1234, gid: 100000 });

    // The new overlay holds the new data, not a copy of the baseline.
    const info = JSON.parse(
      (await run(['qemu-img', 'info', '--output=json', disk])).stdout.toString(),
    ) as {
      'actual-size': number;
      'full-backing-filename': string;
    };
    assert.equal(info['full-backing-filename'], baseline);
    assert.ok(info['actual-size'] < 60 * MiB, `overlay is ${info['actual-size']} bytes`);
    assert.equal((await stat(disk)).mode & 0o777, 0o600);
    assert.deepEqual(await readdir(ws), ['rootfs.qcow2']);

    const flat = await flatten();
    await e2fsckClean(flat);
    const inImage = await ext4Stat(flat, '/home/u/big.bin');
    assert.equal(inImage?.type, 'regular');
    assert.equal(inImage?.mode, 0o4750);
    // Earlier content is still there.
    assert.equal((await ext4Read(flat, '/home/u/secret')).toString(), 'uid 1000 only\n');
    await rm(flat);
  });

  test('a write keeps the source mode by default, owner root, and replaces an existing file', async () => {
    const src = join(root, 'small.txt');
    await writeFile(src, 'first\n');
    await chmod(src, 0o755);
    await writeFileToDisk(disk, '/etc/hello2', src);
    await writeFile(src, 'second, longer\n');
    await writeFileToDisk(disk, '/etc/hello2', src);
    const out = join(root, 'small.out');
    const st = await readFileFromDisk(disk, '/etc/hello2', out);
    assert.equal(await readFile(out, 'utf8'), 'second, longer\n');
    assert.deepEqual(st, { size: 15, mode: 0o755, uid: 0, gid: 0 });
  });

  test('writing through a symlink replaces the symlink and leaves its target alone', async () => {
    const src = join(root, 'over.txt');
    await writeFile(src, 'replaced the link\n');
    await writeFileToDisk(disk, '/link', src, { mode: 0o600 });
    const out = join(root, 'link.out');
    assert.equal((await readFileFromDisk(disk, '/link', out)).mode, 0o600);
    assert.equal(await readFile(out, 'utf8'), 'replaced the link\n');
    await readFileFromDisk(disk, '/etc/hello', out);
    assert.equal(await readFile(out, 'utf8'), 'hello from the baseline\n');
    const flat = await flatten();
    assert.equal((await ext4Stat(flat, '/link'))?.type, 'regular');
    await e2fsckClean(flat);
    await rm(flat);
  });

  test('a symlinked parent is resolved inside the image', async () => {
    const src = join(root, 'viaparent.txt');
    await writeFile(src, 'via ulink\n');
    await writeFileToDisk(disk, '/ulink/via', src);
    const out = join(root, 'via.out');
    await readFileFromDisk(disk, '/home/u/via', out);
    assert.equal(await readFile(out, 'utf8'), 'via ulink\n');
  });

  test('names with spaces, quotes, backslashes and <n> round-trip', async () => {
    const src = join(root, 'odd.txt');
    await writeFile(src, 'odd\n');
    for (const name of ['/etc/we "ird" name', '/etc/<12>', '/etc/back\\slash', '/etc/ünï']) {
      await writeFileToDisk(disk, name, src, { mode: 0o644 });
      const out = join(root, 'odd.out');
      assert.equal((await readFileFromDisk(disk, name, out)).size, 4, name);
      assert.equal(await readFile(out, 'utf8'), 'odd\n');
    }
    const flat = await flatten();
    assert.equal((await ext4Stat(flat, '/etc/hello'))?.type, 'regular', 'inode 12 was not touched');
    await e2fsckClean(flat);
    await rm(flat);
  });

  test('errors: missing file, directory, missing parent, bad paths; the disk is unchanged', async () => {
    const before = await sha256File(disk);
    const out = join(root, 'err.out');
    const src = join(root, 'err.txt');
    await writeFile(src, 'x');
    await rejectsWith(readFileFromDisk(disk, '/nope', out), 'GUEST_FILE_NOT_FOUND');
    await rejectsWith(readFileFromDisk(disk, '/etc/hello/x', out), 'GUEST_FILE_NOT_FOUND');
    await rejectsWith(readFileFromDisk(disk, '/home', out), 'GUEST_FILE_ERROR', {
      guestCode: 'is_directory',
    });
    await rejectsWith(readFileFromDisk(disk, '/ulink', out), 'GUEST_FILE_ERROR', {
      guestCode: 'is_directory',
    });
    await rejectsWith(readFileFromDisk(disk, 'etc/hello', out), 'INVALID_ARGUMENT');
    await rejectsWith(readFileFromDisk(disk, '/etc/a\nb', out), 'INVALID_ARGUMENT');
    await rejectsWith(writeFileToDisk(disk, '/no/such/dir/f', src), 'GUEST_FILE_NOT_FOUND');
    await rejectsWith(writeFileToDisk(disk, '/etc/hello/f', src), 'GUEST_FILE_NOT_FOUND');
    await rejectsWith(writeFileToDisk(disk, '/home/u', src), 'GUEST_FILE_ERROR', {
      guestCode: 'is_directory',
    });
    await rejectsWith(writeFileToDisk(disk, '/etc/', src), 'INVALID_ARGUMENT');
    await rejectsWith(writeFileToDisk(disk, '/etc/x', root), 'INVALID_ARGUMENT');
    await rejectsWith(writeFileToDisk(disk, '/etc/x', src, { mode: 0o10000 }), 'INVALID_ARGUMENT');
    await rejectsWith(
      writeFileToDisk(disk, '/etc/x', src, { uid: 2 ** 32 - 1 }),
      'INVALID_ARGUMENT',
    );
    assert.equal(await sha256File(disk), before);
    assert.deepEqual(await readdir(ws), ['rootfs.qcow2']);
    assert.equal(existsSync(out), false);
  });

  test('a guest file system that is full fails the write and keeps the old disk', async () => {
    const small = join(root, 'small.ext4');
    const tree = join(root, 'small-tree');
    await mkdir(tree);
    await mkfsExt4(tree, small, 16 * MiB, 'small');
    const d = join(ws, 'small.qcow2');
    await createOverlay(small, d);
    const before = await sha256File(d);
    const src = join(root, 'too-big.bin');
    await writeFile(src, randomBytes(20 * MiB));
    await rejectsWith(writeFileToDisk(d, '/too-big', src), 'GUEST_FILE_ERROR', {
      guestCode: 'io_error',
    });
    assert.equal(await sha256File(d), before);
    assert.deepEqual((await readdir(ws)).sort(), ['rootfs.qcow2', 'small.qcow2']);
    await rm(d);
  });

  test('a journal left needing recovery is replayed in the copy before debugfs runs', async () => {
    const dirty = join(root, 'dirty.ext4');
    const tree = join(root, 'dirty-tree');
    await mkdir(tree);
    await writeFile(join(tree, 'f'), 'dirty\n');
    await mkfsExt4(tree, dirty, 64 * MiB, 'dirty');
    await run(['debugfs', '-w', '-R', 'feature needs_recovery', dirty]); // as after a guest crash
    const d = join(ws, 'dirty.qcow2');
    await createOverlay(dirty, d);
    const out = join(root, 'dirty.out');
    await readFileFromDisk(d, '/f', out);
    assert.equal(await readFile(out, 'utf8'), 'dirty\n');
    const src = join(root, 'g.txt');
    await writeFile(src, 'g\n');
    await writeFileToDisk(d, '/g', src);
    const flat = await flatten(d);
    const features = (await run(['dumpe2fs', '-h', flat])).stdout.toString();
    assert.doesNotMatch(features, /needs_recovery/);
    await e2fsckClean(flat);
    await rm(flat);
    await rm(d);
  });

  const noQsd =
    !existsSync('/usr/bin/qemu-storage-daemon') &&
    'needs qemu-storage-daemon (qemu-system-common) to hold the disk open';
  test('a disk another process holds open (a running VM) is refused', { skip: noQsd }, async () => {
    // --daemonize: the parent exits once the daemon holds the image's
    // locks. (Polling `qemu-img info` while it starts races it: a read-only
    // open blocks writers for a moment, and the daemon then fails to lock.)
    const pidFile = join(root, 'qsd.pid');
    await run([
      'qemu-storage-daemon',
      '--daemonize',
      '--pidfile',
      pidFile,
      '--blockdev',
      `driver=file,node-name=f,filename=${disk}`,
      '--blockdev',
      'driver=qcow2,node-name=q,file=f',
    ]);
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    try {
      const src = join(root, 'locked.txt');
      await writeFile(src, 'x');
      await rejectsWith(
        readFileFromDisk(disk, '/etc/hello', join(root, 'locked.out')),
        'WORKSPACE_RUNNING',
      );
      await rejectsWith(writeFileToDisk(disk, '/etc/locked', src), 'WORKSPACE_RUNNING');
    } finally {
      signalProcess(pid, 'SIGTERM');
      for (let i = 0; i < 250 && isAlive(pid); i++) await sleep(20);
    }
    assert.deepEqual(await removeOfflineLeftovers(disk), []);
  });
});
