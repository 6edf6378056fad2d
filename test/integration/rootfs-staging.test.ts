/**
 * Staging trees left by a build that died are removed by the next build
 * (they may sit on tmpfs, holding RAM); a live build's tree is left alone.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BUILD, StatePaths } from '../../src/paths.js';
import { buildRootfs } from '../../src/rootfs/build.js';
import { procStat } from '../../src/proc/spawn.js';
import { tar } from '../support/tar-writer.js';

describe('rootfs staging', () => {
  let root: string;
  let staging: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ma-staging-'));
    staging = join(root, 'staging');
    await mkdir(staging);
    process.env.MICROAGENT_STAGING_DIR = staging;
  });
  after(async () => {
    delete process.env.MICROAGENT_STAGING_DIR;
    await rm(root, { recursive: true, force: true });
  });

  it('removes trees of dead builds and keeps those of live ones', async () => {
    const dead = join(staging, 'microagent-rootfs-dead01');
    const live = join(staging, 'microagent-rootfs-live01');
    await mkdir(join(dead, 'root', 'usr'), { recursive: true });
    await writeFile(join(dead, 'owner.json'), JSON.stringify({ pid: 999_999_999, startTime: 1 }));
    await mkdir(live);
    const me = procStat(process.pid);
    await writeFile(
      join(live, 'owner.json'),
      JSON.stringify({ pid: process.pid, startTime: me?.startTime }),
    );
    const layer = join(root, 'layer.tar');
    await writeFile(layer, tar([{ path: 'hello.txt', content: 'hi\n' }]));
    await buildRootfs(
      new StatePaths(join(root, 'state')),
      {
        layers: [
          { path: layer, mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: 'sha256:x' },
        ],
        imageDigest: 'sha256:' + '0'.repeat(64),
        guestInit: BUILD.guestInit,
      },
      { outPath: join(root, 'out.ext4') },
    );
    assert.deepEqual((await readdir(staging)).sort(), ['microagent-rootfs-live01']);
  });
});
