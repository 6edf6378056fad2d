/**
 * Kernel install / verify / boot preparation against the real parts: the
 * system's apt (one ~26 MB .deb download unless apt's cache has it),
 * dpkg-deb, busybox cpio. One apt install is shared by the whole file.
 * The guest init stand-in is a copy of the static busybox (the real init
 * is built separately); any static binary will do for these checks.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, copyFile, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import {
  installKernel,
  listKernels,
  prepareBootKernel,
  verifyKernel,
  type InstallKernelResult,
} from '../../src/kernel/index.js';
import { isMicroagentError, type ErrorCode } from '../../src/errors.js';
import { StatePaths } from '../../src/paths.js';
import { run } from '../../src/proc/spawn.js';
import { sha256, sha256File } from '../../src/util/fs.js';
import { kernelDeb } from '../support/kernel-deb.js';

const haveApt = existsSync('/usr/bin/apt-cache') && existsSync('/usr/bin/dpkg-deb');
const skip = haveApt ? false : 'needs Debian apt and dpkg-deb';

function code(c: ErrorCode): (e: unknown) => boolean {
  return (e) => {
    assert.ok(isMicroagentError(e), `expected a MicroagentError, got ${String(e)}`);
    assert.equal(e.code, c, e.message);
    return true;
  };
}

/** Flips one byte of a file in place (the inode stays; ctime changes). */
async function flipByte(path: string, offset: number): Promise<void> {
  const h = await open(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, offset);
    b[0] = b[0]! ^ 0xff;
    await h.write(b, 0, 1, offset);
  } finally {
    await h.close();
  }
}

describe('kernel (real apt kernel)', { skip }, () => {
  let root: string;
  let paths: StatePaths;
  let init: string;
  let installed: InstallKernelResult;
  let installMs: number;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ma-kernel-it-'));
    paths = new StatePaths(join(root, 'state'));
    init = join(root, 'init');
    await copyFile('/bin/busybox', init);
    const t = performance.now();
    installed = await installKernel(paths, { kind: 'apt' }, { guestInit: init });
    installMs = performance.now() - t;
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('installs the Debian cloud kernel as a PVH vmlinux with a complete manifest', async (t) => {
    t.diagnostic(`install took ${installMs.toFixed(0)} ms`);
    const m = installed.manifest;
    assert.match(installed.id, /^debian-6\.[0-9]+\.[0-9]+-[0-9]+-cloud-amd64$/);
    assert.equal(m.bootFormat, 'elf-pvh');
    assert.equal(m.source.kind, 'apt');
    assert.match(m.source.package ?? '', /^linux-image-/);
    assert.equal(m.initSha256, await sha256File(init));
    assert.deepEqual(
      new Set(m.modules.map((x) => x.name)),
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
    const dir = paths.kernelDir(installed.id);
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.equal((await stat(join(dir, 'vmlinux'))).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, 'manifest.json'))).mode & 0o777, 0o600);
    assert.equal((await readFile(paths.defaultKernelPointer, 'utf8')).trim(), installed.id);
    const list = await listKernels(paths);
    assert.deepEqual(
      list.map((k) => [k.id, k.isDefault]),
      [[installed.id, true]],
    );
  });

  test('a second install is a no-op; verify re-hashes everything', async () => {
    const again = await installKernel(paths, { kind: 'apt' }, { guestInit: init });
    assert.equal(again.installed, false);
    const v = await verifyKernel(paths);
    assert.equal(v.ok, true);
    assert.equal(v.files.length, 2 + installed.manifest.modules.length);
    assert.ok(v.files.every((f) => f.ok && !f.cached));
  });

  test('the initramfs holds /init (the guest init), numbered modules and /dev/console', async () => {
    const cpio = join(paths.kernelDir(installed.id), 'initramfs.cpio');
    const listing = (await run(['busybox', 'cpio', '-tv', '-F', cpio])).stdout.toString();
    assert.match(listing, /^-rwxr-xr-x 0\/0 .* init$/m);
    assert.match(listing, /^crw------- 0\/0 .* dev\/console$/m);
    for (const d of ['proc', 'sys', 'newroot'])
      assert.match(listing, new RegExp(`^d.* ${d}$`, 'm'));
    const mods = listing
      .split('\n')
      .filter((l) => / modules\/.+\.ko$/.test(l))
      .map((l) => l.split(' ').at(-1));
    // LL-NN-<name>.ko: load wave, load order (docs/kernel.md).
    const waves: Record<string, string> = {
      virtio_ring: '00',
      failover: '00',
      virtio: '01',
      net_failover: '01',
      virtio_mmio: '02',
      virtio_blk: '03',
      virtio_console: '03',
      virtio_net: '03',
    };
    assert.deepEqual(
      mods,
      installed.manifest.modules.map(
        (x, i) => `modules/${waves[x.name]}-${String(i + 1).padStart(2, '0')}-${x.name}.ko`,
      ),
    );
    const out = await mkdtemp(join(root, 'x-'));
    await run(['busybox', 'cpio', '-i', '-d', '-F', cpio, 'init'], { cwd: out });
    assert.equal(await sha256File(join(out, 'init')), installed.manifest.initSha256);
  });

  test('prepareBootKernel returns verified paths; the second call uses the verification cache', async (t) => {
    const t0 = performance.now();
    const b = await prepareBootKernel(paths, { guestInit: init });
    const t1 = performance.now();
    await prepareBootKernel(paths, { guestInit: init });
    const t2 = performance.now();
    t.diagnostic(`prepareBootKernel ${(t1 - t0).toFixed(1)} ms, again ${(t2 - t1).toFixed(1)} ms`);
    assert.equal(b.id, installed.id);
    assert.equal(b.bootFormat, 'elf-pvh');
    assert.equal(b.sha256.kernel, await sha256File(b.kernelPath));
    assert.equal(b.sha256.initramfs, await sha256File(b.initramfsPath));
    assert.equal(b.initramfsRegenerated, false);
  });

  test('a rebuilt guest init regenerates the initramfs and the manifest', async () => {
    await appendFile(init, 'rebuilt');
    const b = await prepareBootKernel(paths, { guestInit: init });
    assert.equal(b.initramfsRegenerated, true);
    const v = await verifyKernel(paths);
    assert.equal(v.ok, true);
    const manifest = JSON.parse(
      await readFile(join(paths.kernelDir(b.id), 'manifest.json'), 'utf8'),
    );
    assert.equal(manifest.initSha256, await sha256File(init));
    assert.equal(manifest.files.initramfs.sha256, b.sha256.initramfs);
    assert.equal((await prepareBootKernel(paths, { guestInit: init })).initramfsRegenerated, false);
  });

  test('a changed byte in vmlinux or the initramfs is refused, naming the file', async () => {
    const dir = paths.kernelDir(installed.id);
    for (const file of ['vmlinux', 'initramfs.cpio']) {
      await prepareBootKernel(paths, { guestInit: init }); // warm the cache first
      await flipByte(join(dir, file), 4096);
      await assert.rejects(prepareBootKernel(paths, { guestInit: init }), (e) => {
        code('KERNEL_VERIFY_FAILED')(e);
        assert.match((e as Error).message, new RegExp(file.replace('.', '\\.')));
        return true;
      });
      const v = await verifyKernel(paths);
      assert.equal(v.ok, false);
      assert.deepEqual(
        v.files.filter((f) => !f.ok).map((f) => f.name),
        [file],
      );
      assert.equal(v.divergence.length, 1);
      await flipByte(join(dir, file), 4096); // put it back
      await prepareBootKernel(paths, { guestInit: init });
    }
  });

  test('a tampered module is refused when the initramfs is regenerated', async () => {
    const dir = paths.kernelDir(installed.id);
    const mod = join(dir, 'modules', `03-${installed.manifest.modules[2]!.name}.ko`);
    await flipByte(mod, 100);
    await appendFile(init, 'again');
    await assert.rejects(
      prepareBootKernel(paths, { guestInit: init }),
      code('KERNEL_VERIFY_FAILED'),
    );
    await flipByte(mod, 100);
    assert.equal((await prepareBootKernel(paths, { guestInit: init })).initramfsRegenerated, true);
  });

  test('a missing guest init is GUEST_INIT_MISSING', async () => {
    await assert.rejects(
      prepareBootKernel(paths, { guestInit: join(root, 'nope') }),
      code('GUEST_INIT_MISSING'),
    );
  });

  describe('custom kernels', () => {
    let vmlinux: string;
    let bzImage: string | undefined;

    before(async () => {
      vmlinux = join(paths.kernelDir(installed.id), 'vmlinux');
      // The bzImage of the same package, unpacked once for the suite
      // (test/support/kernel-deb.ts: apt's cache or a download, checked).
      const deb = await kernelDeb();
      assert.equal(deb.release, installed.manifest.version);
      bzImage = deb.bzImage;
    });

    test('file: an ELF vmlinux with the right SHA-256 installs as custom-<sha12>, no modules', async () => {
      const sha = await sha256File(vmlinux);
      const r = await installKernel(
        paths,
        { kind: 'file', path: vmlinux, sha256: sha },
        { guestInit: init },
      );
      assert.equal(r.id, `custom-${sha.slice(0, 12)}`);
      assert.equal(r.manifest.bootFormat, 'elf-pvh');
      assert.equal(r.manifest.version, installed.manifest.version);
      assert.deepEqual(r.manifest.modules, []);
      assert.equal(r.isDefault, false, 'a custom kernel does not take over the default');
      const b = await prepareBootKernel(paths, { id: r.id, guestInit: init });
      assert.equal(b.sha256.kernel, sha);
    });

    test('file: a wrong SHA-256 is refused and nothing is installed', async () => {
      const before = (await listKernels(paths)).length;
      await assert.rejects(
        installKernel(
          paths,
          { kind: 'file', path: vmlinux, sha256: 'f'.repeat(64) },
          { guestInit: init, id: 'wrong-sha' },
        ),
        code('KERNEL_CHECKSUM_MISMATCH'),
      );
      assert.equal((await listKernels(paths)).length, before);
      assert.equal(existsSync(paths.kernelDir('wrong-sha')), false);
    });

    test('file: a bzImage is unpacked to its PVH vmlinux', async () => {
      const sha = await sha256File(bzImage!);
      const r = await installKernel(
        paths,
        { kind: 'file', path: bzImage!, sha256: sha },
        { guestInit: init, id: 'from-bzimage' },
      );
      assert.equal(r.manifest.bootFormat, 'elf-pvh');
      assert.equal(r.manifest.files.kernel.sha256, installed.manifest.files.kernel.sha256);
    });

    test('url: downloads over loopback http, checks the digest; plain http elsewhere is refused', async () => {
      const body = await readFile(vmlinux);
      const server: Server = createServer((_req, res) => res.end(body));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      try {
        const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/vmlinux`;
        const r = await installKernel(
          paths,
          { kind: 'url', url, sha256: sha256(body) },
          { guestInit: init, id: 'from-url' },
        );
        assert.equal(r.manifest.source.url, url);
        await assert.rejects(
          installKernel(
            paths,
            { kind: 'url', url, sha256: 'a'.repeat(64) },
            { guestInit: init, id: 'url-wrong' },
          ),
          code('KERNEL_CHECKSUM_MISMATCH'),
        );
      } finally {
        server.close();
      }
      await assert.rejects(
        installKernel(
          paths,
          { kind: 'url', url: 'http://example.com/vmlinux', sha256: 'a'.repeat(64) },
          { guestInit: init },
        ),
        code('INVALID_ARGUMENT'),
      );
    });

    test('concurrent --force reinstalls of one id leave one valid kernel', async () => {
      const sha = await sha256File(vmlinux);
      const src = { kind: 'file' as const, path: vmlinux, sha256: sha };
      const results = await Promise.all(
        [1, 2, 3].map(() =>
          installKernel(paths, src, { guestInit: init, id: 'raced', force: true }),
        ),
      );
      assert.ok(results.every((r) => r.installed));
      assert.equal((await verifyKernel(paths, 'raced')).ok, true);
    });
  });
});
