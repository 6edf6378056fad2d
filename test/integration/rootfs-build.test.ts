/**
 * Layers → ext4 with the real e2fsprogs: whiteouts, opaque dirs, hard links
 * across layers, devices, FIFOs, xattrs, setuid policy, long names, a zstd
 * layer and a hostile layer; built as root and as an unprivileged user, and
 * checked inode by inode with debugfs and e2fsck.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmod,
  chown,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  writeFile,
} from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildRootfs, type LayerRef, type RootfsBuildResult } from '../../src/rootfs/build.js';
import { StatePaths, PACKAGE_ROOT } from '../../src/paths.js';
import { run } from '../../src/proc/spawn.js';
import { sha256, sha256File } from '../../src/util/fs.js';
import { isMicroagentError } from '../../src/errors.js';
import { gzipTar, tar, zstdTar, type TarSpec } from '../support/tar-writer.js';
import { e2fsckClean, ext4List, ext4Read, ext4Stat, ext4Xattr } from '../support/ext4-inspect.js';

const missing = [
  '/usr/sbin/mke2fs',
  '/usr/sbin/debugfs',
  '/usr/sbin/e2fsck',
  '/bin/busybox',
].filter((p) => !existsSync(p));
const skip = missing.length ? `needs ${missing.join(', ')} (e2fsprogs, busybox-static)` : false;
const isRoot = process.getuid?.() === 0;

const CAP = Buffer.from('01000002' + '00200000' + '00000000' + '00000000' + '00000000', 'hex');
const LONG = 'deep/' + 'd'.repeat(120) + '/' + 'e'.repeat(90) + '/file-with-a-long-name.txt';

function layers(hostSentinel: string): TarSpec[][] {
  const l0: TarSpec[] = [
    { path: './', type: 'dir', mode: 0o755, mtime: 1_600_000_000 },
    { path: 'etc/', type: 'dir' },
    { path: 'etc/passwd', content: 'root:x:0:0::/root:/bin/sh\n' },
    { path: 'etc/shadow', content: 'root:*:1::::::\n', mode: 0o640, gid: 42 },
    { path: 'bin/', type: 'dir' },
    { path: 'bin/su', content: 'su-binary', mode: 0o4755 },
    { path: 'bin/wall', content: 'wall-binary', mode: 0o2755, gid: 5 },
    { path: 'usr/bin/tool', content: 'tool v1' }, // no parent entries: implicit dirs
    { path: 'usr/bin/tool-link', type: 'hardlink', linkpath: 'usr/bin/tool' },
    {
      path: 'usr/bin/ping',
      content: 'ping',
      mode: 0o755,
      xattrs: { 'security.capability': CAP, 'user.origin': 'layer0' },
    },
    { path: 'usr/lib/', type: 'dir' },
    { path: 'lib', type: 'symlink', linkpath: 'usr/lib' },
    { path: 'opq/', type: 'dir' },
    { path: 'opq/lower', content: 'lower' },
    { path: 'opq/sub/deep', content: 'deep lower' },
    { path: 'wh/gone', content: 'gone' },
    { path: 'wh/dir/x', content: 'x' },
    { path: 'wh/stays', content: 'stays' },
    { path: 'home/u/', type: 'dir', mode: 0o700, uid: 1000, gid: 1000 },
    { path: 'home/u/notes', content: 'n', mode: 0o600, uid: 1000, gid: 1000 },
    { path: 'data/big-ids', content: 'b', uid: 100000, gid: 200000 },
    { path: 'data/old', content: 'o', mtime: 1_000_000_000 },
    { path: 'data/frac', content: 'f', mtime: 1_500_000_000.5 },
    { path: 'shared/', type: 'dir', mode: 0o1777 },
    { path: 'dev/', type: 'dir' },
    { path: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
    { path: 'dev/sda', type: 'block', devmajor: 8, devminor: 0, mode: 0o660, gid: 6 },
    { path: 'run/ctl', type: 'fifo', mode: 0o620, uid: 5 },
    { path: LONG, content: 'long' },
    { path: 'sl', type: 'symlink', linkpath: hostSentinel + '/through-symlink' },
    { path: 'sbin', type: 'symlink', linkpath: 'usr/sbin' }, // merged /usr: the init goes to usr/sbin
    { path: 'usr/sbin/', type: 'dir' },
  ];
  const l1: TarSpec[] = [
    { path: 'wh/.wh.gone', content: '' },
    { path: 'wh/.wh.dir', content: '' },
    { path: 'opq/.wh..wh..opq', content: '' },
    { path: 'opq/new', content: 'new' },
    { path: 'opq/sub/fresh', content: 'fresh' },
    { path: 'etc/passwd-link', type: 'hardlink', linkpath: 'etc/passwd' }, // to a lower layer's file
    { path: 'sl', content: 'replaced the symlink' }, // must not write through it
    { path: 'lib/libfoo.so', content: 'foo' }, // parent is a symlink: resolved inside the image
    { path: 'usr/bin/tool', content: 'tool v2' }, // replaced: tool-link keeps v1
  ];
  const l2: TarSpec[] = [
    { path: '../escape-1', content: 'x' },
    { path: '../../escape-2', content: 'x' },
    { path: '../../../escape-3', content: 'x' },
    { path: '../../../../escape-4', content: 'x' },
    { path: 'ok/../../escape-5', content: 'x' },
    { path: '/etc/passwd', content: 'inside:x:0:0\n' }, // absolute: the image's own /etc/passwd
    { path: 'evil', type: 'symlink', linkpath: hostSentinel },
    { path: 'evil/file', content: 'must land inside the image' },
    { path: 'up', type: 'symlink', linkpath: '../../../../../../..' },
    { path: 'up/etc/up-file', content: 'clamped at the root' },
    { path: 'stolen', type: 'hardlink', linkpath: '/etc/shadow' }, // the image's shadow: allowed
    { path: 'stolen-host', type: 'hardlink', linkpath: '../../../../etc/shadow' },
    { path: 'stolen-missing', type: 'hardlink', linkpath: 'no/such/file' },
    { path: 'stolen-via-evil', type: 'hardlink', linkpath: 'evil/nothing-here' },
    { path: 'hostname-link', type: 'symlink', linkpath: '/etc/hostname' },
    { path: 'hostname-link', content: 'replaced, not written through' },
  ];
  return [l0, l1, l2];
}

describe('rootfs build from layers', { skip }, () => {
  let root: string;
  let sentinel: string;
  let init: string;
  let layerRefs: LayerRef[];
  let hostPasswdBefore: string;
  const built: Record<string, { img: string; result: RootfsBuildResult }> = {};

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ma-rootfs-it-'));
    await chmod(root, 0o755); // the unprivileged build reads the blobs and the init
    sentinel = await mkdtemp(join(tmpdir(), 'ma-rootfs-host-sentinel-'));
    init = join(root, 'init');
    await copyFile('/bin/busybox', init);
    await chmod(init, 0o755);
    hostPasswdBefore = await sha256File('/etc/passwd');
    const [l0, l1, l2] = layers(sentinel);
    const blobs: Array<[Buffer, string]> = [
      [gzipTar(l0!), 'application/vnd.oci.image.layer.v1.tar+gzip'],
      [zstdTar(l1!), 'application/vnd.oci.image.layer.v1.tar+zstd'],
      [tar(l2!), 'application/vnd.oci.image.layer.v1.tar'],
    ];
    layerRefs = [];
    for (const [data, mediaType] of blobs) {
      const digest = sha256(data);
      const path = join(root, digest);
      await writeFile(path, data, { mode: 0o644 });
      layerRefs.push({ path, mediaType, digest: `sha256:${digest}` });
    }
    const input = { layers: layerRefs, imageDigest: 'sha256:' + '0'.repeat(64), guestInit: init };

    const paths = new StatePaths(join(root, 'state-root'));
    built.root = {
      img: join(root, 'root.ext4'),
      result: await buildRootfs(paths, input, { outPath: join(root, 'root.ext4') }),
    };
    built.setuid = {
      img: join(root, 'setuid.ext4'),
      result: await buildRootfs(
        paths,
        { ...input, allowGuestSetuid: true },
        { outPath: join(root, 'setuid.ext4') },
      ),
    };
    if (isRoot) {
      // The same build as nobody: no chown, no mknod, no security.* xattrs on the host.
      const state = join(root, 'state-nobody');
      const outDir = join(root, 'out-nobody');
      for (const d of [state, outDir]) {
        await mkdir(d, { mode: 0o700 });
        await chown(d, 65534, 65534);
      }
      const r = await run(
        [
          'setpriv',
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          process.execPath,
          join(PACKAGE_ROOT, 'dist/test/support/build-rootfs-main.js'),
          state,
          JSON.stringify(input),
          join(outDir, 'nobody.ext4'),
        ],
        { allowFailure: true, timeoutMs: 120_000 },
      );
      const out = JSON.parse(r.stdout.toString('utf8') || '{}') as {
        ok: boolean;
        uid: number;
        result: RootfsBuildResult;
        error?: unknown;
      };
      assert.equal(
        out.ok,
        true,
        `unprivileged build failed: ${JSON.stringify(out.error)} ${r.stderr.toString()}`,
      );
      assert.equal(out.uid, 65534);
      built.nobody = { img: join(outDir, 'nobody.ext4'), result: out.result };
    }
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
    await rm(sentinel, { recursive: true, force: true });
  });

  const variants = ['root', 'nobody'] as const;
  for (const v of variants) {
    describe(
      `built as ${v}`,
      { skip: v === 'nobody' && !isRoot ? 'needs root to switch to uid 65534' : false },
      () => {
        const img = (): string => built[v]!.img;

        test('e2fsck -fn is clean', async (t) => {
          const r = built[v]!.result;
          t.diagnostic(
            `stage ${r.timings.stageMs.toFixed(0)} ms, mke2fs ${r.timings.mkfsMs.toFixed(0)} ms, debugfs ${r.timings.debugfsMs.toFixed(0)} ms (${r.debugfsCommands} commands), ${r.sizeBytes >> 20} MiB`,
          );
          await e2fsckClean(img());
        });

        test('owners, modes and mtimes come from the layers, not from the builder', async () => {
          const expect: Array<[string, string, number, number, number]> = [
            ['/', 'directory', 0o755, 0, 0],
            ['/etc/shadow', 'regular', 0o640, 0, 42],
            ['/home/u', 'directory', 0o700, 1000, 1000],
            ['/home/u/notes', 'regular', 0o600, 1000, 1000],
            ['/data/big-ids', 'regular', 0o644, 100000, 200000],
            ['/shared', 'directory', 0o1777, 0, 0],
            ['/usr/bin', 'directory', 0o755, 0, 0], // implicit parent
            ['/lib', 'symlink', 0o777, 0, 0],
          ];
          for (const [p, type, mode, uid, gid] of expect) {
            const st = await ext4Stat(img(), p);
            assert.ok(st, `${p} exists`);
            assert.deepEqual(
              [st.type, st.mode.toString(8), st.uid, st.gid],
              [type, mode.toString(8), uid, gid],
              p,
            );
          }
          assert.equal((await ext4Stat(img(), '/data/old'))!.mtime, 1_000_000_000);
          const frac = (await ext4Stat(img(), '/data/frac'))!;
          assert.equal(frac.mtime, 1_500_000_000);
          assert.equal(frac.mtimeExtra >> 2, 500_000_000, 'sub-second mtime kept');
          assert.equal((await ext4Stat(img(), '/'))!.mtime, 1_600_000_000);
        });

        test('setuid/setgid are stripped from files by default', async () => {
          assert.equal((await ext4Stat(img(), '/bin/su'))!.mode, 0o755);
          const wall = (await ext4Stat(img(), '/bin/wall'))!;
          assert.deepEqual([wall.mode, wall.gid], [0o755, 5]);
        });

        test('device nodes and FIFOs are real, with their owners', async () => {
          const nul = (await ext4Stat(img(), '/dev/null'))!;
          assert.deepEqual([nul.type, nul.mode, nul.device], ['character special', 0o666, [1, 3]]);
          const sda = (await ext4Stat(img(), '/dev/sda'))!;
          assert.deepEqual(
            [sda.type, sda.mode, sda.gid, sda.device],
            ['block special', 0o660, 6, [8, 0]],
          );
          const fifo = (await ext4Stat(img(), '/run/ctl'))!;
          assert.deepEqual([fifo.type, fifo.mode, fifo.uid], ['FIFO', 0o620, 5]);
        });

        test('xattrs are byte-exact, incl. security.capability', async () => {
          assert.deepEqual(await ext4Xattr(img(), '/usr/bin/ping', 'security.capability'), CAP);
          assert.equal(
            (await ext4Xattr(img(), '/usr/bin/ping', 'user.origin'))?.toString(),
            'layer0',
          );
        });

        test('whiteouts remove lower entries; an opaque dir keeps only its own layer', async () => {
          assert.deepEqual((await ext4List(img(), '/wh')).sort(), ['stays']);
          assert.deepEqual((await ext4List(img(), '/opq')).sort(), ['new', 'sub']);
          assert.deepEqual(await ext4List(img(), '/opq/sub'), ['fresh']);
        });

        test('hard links: within a layer, across layers, and broken by replacement', async () => {
          const pw = (await ext4Stat(img(), '/etc/passwd'))!;
          const link = (await ext4Stat(img(), '/etc/passwd-link'))!;
          assert.notEqual(pw.inode, link.inode, 'replacing passwd in layer 2 unlinked it');
          assert.equal(
            (await ext4Read(img(), '/etc/passwd-link')).toString(),
            'root:x:0:0::/root:/bin/sh\n',
          );
          assert.equal((await ext4Read(img(), '/etc/passwd')).toString(), 'inside:x:0:0\n');
          const tool = (await ext4Stat(img(), '/usr/bin/tool'))!;
          const toolLink = (await ext4Stat(img(), '/usr/bin/tool-link'))!;
          assert.notEqual(tool.inode, toolLink.inode);
          assert.equal((await ext4Read(img(), '/usr/bin/tool-link')).toString(), 'tool v1');
          assert.equal((await ext4Read(img(), '/usr/bin/tool')).toString(), 'tool v2');
          const shadow = (await ext4Stat(img(), '/etc/shadow'))!;
          const stolen = (await ext4Stat(img(), '/stolen'))!;
          assert.equal(stolen.inode, shadow.inode, "/etc/shadow means the image's own");
          assert.equal(shadow.links, 2);
        });

        test('long names, symlinks stored as-is, parent symlinks resolved inside the image', async () => {
          assert.equal((await ext4Read(img(), '/' + LONG)).toString(), 'long');
          assert.equal((await ext4Stat(img(), '/evil'))!.symlinkTarget, sentinel);
          assert.equal((await ext4Read(img(), '/usr/lib/libfoo.so')).toString(), 'foo');
          assert.equal(
            (await ext4Read(img(), sentinel + '/file')).toString(),
            'must land inside the image',
          );
          assert.equal((await ext4Read(img(), '/etc/up-file')).toString(), 'clamped at the root');
          assert.equal((await ext4Stat(img(), '/sl'))!.type, 'regular');
          assert.equal((await ext4Stat(img(), '/hostname-link'))!.type, 'regular');
        });

        test('the hostile layer touched nothing outside the image', async () => {
          const r = built[v]!.result;
          const rejected = r.rejected.map((x) => x.path).sort();
          assert.deepEqual(rejected, [
            '../../../../escape-4',
            '../../../escape-3',
            '../../escape-2',
            '../escape-1',
            'ok/../../escape-5',
            'stolen-host',
            'stolen-missing',
            'stolen-via-evil',
          ]);
          assert.deepEqual(await readdir(sentinel), []);
          assert.equal(await sha256File('/etc/passwd'), hostPasswdBefore);
          for (const p of [
            root,
            join(root, 'state-root'),
            join(root, 'state-root', 'tmp'),
            tmpdir(),
          ]) {
            for (let i = 1; i <= 5; i++)
              assert.ok(!existsSync(join(p, `escape-${i}`)), `${p}/escape-${i}`);
          }
          assert.ok(
            !existsSync('/etc/hostname') ||
              (await readFile('/etc/hostname', 'utf8')) !== 'replaced, not written through',
          );
          for (const e of await ext4List(img(), '/')) assert.ok(!e.startsWith('escape'), e);
        });

        test('the guest init is at /sbin/microagent-init (through sbin -> usr/sbin), 0755 root', async () => {
          const st = (await ext4Stat(img(), '/usr/sbin/microagent-init'))!;
          assert.deepEqual([st.type, st.mode, st.uid, st.gid], ['regular', 0o755, 0, 0]);
          assert.equal(
            sha256(await ext4Read(img(), '/usr/sbin/microagent-init')),
            built[v]!.result.initSha256,
          );
          assert.equal(built[v]!.result.initSha256, await sha256File(init));
          // (/tmp exists already: the hostile layer's evil/file made it, 0755.)
          for (const [d, mode] of [
            ['/proc', 0o555],
            ['/sys', 0o555],
            ['/root', 0o700],
            ['/run', 0o755],
            ['/dev', 0o755],
          ] as const) {
            const s = (await ext4Stat(img(), d))!;
            assert.deepEqual([s.type, s.mode, s.uid], ['directory', mode, 0], d);
          }
        });
      },
    );
  }

  test('allowGuestSetuid keeps setuid and setgid', async () => {
    const img = built.setuid!.img;
    assert.equal((await ext4Stat(img, '/bin/su'))!.mode, 0o4755);
    assert.equal((await ext4Stat(img, '/bin/wall'))!.mode, 0o2755);
    assert.equal(built.setuid!.result.setuidStripped, 0);
    assert.equal(built.root!.result.setuidStripped, 2);
    await e2fsckClean(img);
  });

  test('the staging tree is gone after the builds', async () => {
    assert.deepEqual(await readdir(join(root, 'state-root', 'tmp')), []);
  });

  test('a pinned size that is too small is ROOTFS_TOO_SMALL, and nothing is left', async () => {
    const paths = new StatePaths(join(root, 'state-small'));
    const big = Buffer.alloc(8 * 1024 * 1024, 7);
    const blob = join(root, 'big-layer');
    await writeFile(blob, tar([{ path: 'big', content: big }]));
    const out = join(root, 'small.ext4');
    await assert.rejects(
      buildRootfs(
        paths,
        {
          layers: [
            { path: blob, mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: 'sha256:x' },
          ],
          imageDigest: 'sha256:' + '1'.repeat(64),
          guestInit: init,
          sizeBytes: 6 * 1024 * 1024,
        },
        { outPath: out },
      ),
      (e) => isMicroagentError(e) && e.code === 'ROOTFS_TOO_SMALL',
    );
    assert.ok(!existsSync(out));
    assert.deepEqual(await readdir(paths.tmp), []);
  });

  test('a corrupt layer is LAYER_INVALID', async () => {
    const paths = new StatePaths(join(root, 'state-bad'));
    const blob = join(root, 'bad-layer');
    const gz = gzipTar([{ path: 'a', content: randomBytes(100_000) }]);
    await writeFile(blob, gz.subarray(0, gz.length >> 1)); // cut in the middle of the body
    await assert.rejects(
      buildRootfs(paths, {
        layers: [
          {
            path: blob,
            mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
            digest: 'sha256:y',
          },
        ],
        imageDigest: 'sha256:' + '2'.repeat(64),
        guestInit: init,
      }),
      (e) => isMicroagentError(e) && e.code === 'LAYER_INVALID',
    );
    assert.deepEqual(await readdir(paths.tmp), []);
  });
});
