/**
 * The streaming tar reader against hand-made archives (ustar, GNU, PAX,
 * base-256) and against GNU tar's own output.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { layerCompression, readTar, type TarEntry } from '../../src/rootfs/tar.js';
import { isMicroagentError } from '../../src/errors.js';
import { tar } from '../support/tar-writer.js';

interface Read {
  entry: Omit<TarEntry, 'body'>;
  body: Buffer;
}

/** Feeds the archive in small odd-sized chunks to exercise the buffering. */
async function readAll(buf: Buffer, chunk = 77): Promise<Read[]> {
  const chunks: Buffer[] = [];
  for (let i = 0; i < buf.length; i += chunk) chunks.push(buf.subarray(i, i + chunk));
  const out: Read[] = [];
  for await (const e of readTar(Readable.from(chunks))) {
    const parts: Buffer[] = [];
    for await (const c of e.body()) parts.push(Buffer.from(c));
    const { body: _body, ...entry } = e;
    out.push({ entry, body: Buffer.concat(parts) });
  }
  return out;
}

test('reads ustar files, dirs, links, devices and fifos with their metadata', async () => {
  const r = await readAll(
    tar([
      { path: 'etc/', type: 'dir', mode: 0o755 },
      { path: 'etc/passwd', content: 'root:x:0:0\n', mode: 0o644, uid: 0, gid: 0, mtime: 1000 },
      { path: 'bin/su', content: 'x'.repeat(1500), mode: 0o4755 },
      { path: 'bin/link', type: 'hardlink', linkpath: 'bin/su' },
      { path: 'bin/sh', type: 'symlink', linkpath: '/bin/busybox' },
      { path: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
      { path: 'dev/sda', type: 'block', devmajor: 8, devminor: 0, mode: 0o660, gid: 6 },
      { path: 'run/fifo', type: 'fifo', mode: 0o600 },
    ]),
  );
  assert.deepEqual(
    r.map((x) => [x.entry.type, x.entry.path]),
    [
      ['dir', 'etc/'],
      ['file', 'etc/passwd'],
      ['file', 'bin/su'],
      ['hardlink', 'bin/link'],
      ['symlink', 'bin/sh'],
      ['char', 'dev/null'],
      ['block', 'dev/sda'],
      ['fifo', 'run/fifo'],
    ],
  );
  assert.equal(r[1]!.body.toString(), 'root:x:0:0\n');
  assert.equal(r[1]!.entry.mtime, 1000);
  assert.equal(r[2]!.body.length, 1500);
  assert.equal(r[2]!.entry.mode, 0o4755);
  assert.equal(r[3]!.entry.linkpath, 'bin/su');
  assert.equal(r[4]!.entry.linkpath, '/bin/busybox');
  assert.deepEqual([r[5]!.entry.devmajor, r[5]!.entry.devminor], [1, 3]);
  assert.deepEqual([r[6]!.entry.devmajor, r[6]!.entry.devminor, r[6]!.entry.gid], [8, 0, 6]);
});

test('long names through PAX and through GNU L/K entries', async () => {
  const long = 'a/' + 'b'.repeat(150) + '/c'.repeat(40);
  const target = 't/' + 'x'.repeat(180);
  const r = await readAll(
    tar([
      { path: long, content: 'pax' },
      { path: long + '.gnu', content: 'gnu', longNames: 'gnu' },
      { path: 'l1', type: 'symlink', linkpath: target },
      { path: 'l2', type: 'symlink', linkpath: target, longNames: 'gnu' },
    ]),
  );
  assert.equal(r[0]!.entry.path, long);
  assert.equal(r[0]!.body.toString(), 'pax');
  assert.equal(r[1]!.entry.path, long + '.gnu');
  assert.equal(r[2]!.entry.linkpath, target);
  assert.equal(r[3]!.entry.linkpath, target);
});

test('PAX xattrs are byte-exact, incl. binary security.capability and LIBARCHIVE', async () => {
  const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
  const r = await readAll(
    tar([
      {
        path: 'usr/bin/ping',
        content: 'ELF',
        xattrs: { 'security.capability': cap, 'user.note': 'a=b\nc' },
        libarchiveXattrs: { 'user.with space': Buffer.from([0, 1, 2, 255]) },
        mtime: 1_700_000_000.25,
      },
    ]),
  );
  const e = r[0]!.entry;
  assert.deepEqual(e.xattrs.get('security.capability'), cap);
  assert.equal(e.xattrs.get('user.note')?.toString(), 'a=b\nc');
  assert.deepEqual(e.xattrs.get('user.with space'), Buffer.from([0, 1, 2, 255]));
  assert.equal(e.mtime, 1_700_000_000.25);
});

test('base-256 uid/gid', async () => {
  const r = await readAll(tar([{ path: 'f', uid: 3_000_000_000, gid: 70_000, base256: true }]));
  assert.equal(r[0]!.entry.uid, 3_000_000_000);
  assert.equal(r[0]!.entry.gid, 70_000);
});

test('unknown entry types are skipped with a note, and the stream stays aligned', async () => {
  const notes: string[] = [];
  const buf = tar([
    { path: 'vol', type: 'other' },
    { path: 'after', content: 'ok' },
  ]);
  const names: string[] = [];
  for await (const e of readTar(Readable.from([buf]), { onNote: (n) => notes.push(n) })) {
    names.push(e.path); // body left unread on purpose: the reader skips it
  }
  assert.deepEqual(names, ['after']);
  assert.equal(notes.length, 1);
});

test('a bad checksum and a truncated body are LAYER_INVALID', async () => {
  const buf = tar([{ path: 'f', content: 'x'.repeat(2000) }]);
  const bad = Buffer.from(buf);
  bad[0] = 0x41;
  await assert.rejects(readAll(bad), (e) => isMicroagentError(e) && e.code === 'LAYER_INVALID');
  await assert.rejects(
    readAll(buf.subarray(0, 1024)),
    (e) => isMicroagentError(e) && e.code === 'LAYER_INVALID',
  );
});

test('media types map to a compression; others are LAYER_UNSUPPORTED', () => {
  assert.equal(layerCompression('application/vnd.oci.image.layer.v1.tar+gzip'), 'gzip');
  assert.equal(layerCompression('application/vnd.oci.image.layer.v1.tar+zstd'), 'zstd');
  assert.equal(layerCompression('application/vnd.docker.image.rootfs.diff.tar.gzip'), 'gzip');
  assert.equal(layerCompression('application/vnd.oci.image.layer.v1.tar'), 'none');
  assert.throws(
    () => layerCompression('application/vnd.oci.image.config.v1+json'),
    (e) => isMicroagentError(e) && e.code === 'LAYER_UNSUPPORTED',
  );
});

test('reads what GNU tar writes (gnu and pax formats, long names, big ids)', async (t) => {
  const { existsSync } = await import('node:fs');
  if (!existsSync('/usr/bin/tar') && !existsSync('/bin/tar')) return t.skip('needs GNU tar');
  const { mkdtemp, mkdir, writeFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { run } = await import('../../src/proc/spawn.js');
  const dir = await mkdtemp(join(tmpdir(), 'ma-gnutar-'));
  try {
    const long = 'p'.repeat(120) + '/' + 'q'.repeat(130);
    await mkdir(join(dir, 'tree', 'p'.repeat(120)), { recursive: true });
    await writeFile(join(dir, 'tree', long), 'long');
    for (const format of ['gnu', 'pax']) {
      const out = (
        await run([
          'tar',
          `--format=${format}`,
          '--numeric-owner',
          '--owner=:3000000',
          '--group=:70000',
          '-C',
          join(dir, 'tree'),
          '-cf',
          '-',
          '.',
        ])
      ).stdout;
      const r = await readAll(out, 4096);
      const f = r.find((x) => x.entry.path.endsWith('q'.repeat(130)));
      assert.ok(f, `${format}: the long name`);
      assert.equal(f.entry.path.replace(/^\.\//, ''), long);
      assert.equal(f.body.toString(), 'long');
      assert.deepEqual([f.entry.uid, f.entry.gid], [3000000, 70000], format);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
