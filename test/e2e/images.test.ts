/**
 * OCI images end to end: a real local registry, images built with umoci and
 * pushed with skopeo, booted with `run` and `create`. Includes a real
 * distribution tree (debootstrap minbase of Debian 12).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { cli, E2E_STATE_DIR, waitNoProcesses } from '../helpers.js';
import {
  buildImage,
  pushImage,
  registryToolsMissing,
  startRegistry,
  type TestRegistry,
} from '../support/registry.js';

const exec = promisify(execFile);
const skip = registryToolsMissing();

describe('OCI images end to end', { skip, timeout: 900_000 }, () => {
  let reg: TestRegistry;
  let dir: string;
  let app: string;

  before(async () => {
    dir = join(tmpdir(), `ma-images-${process.pid}`);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    reg = await startRegistry(join(dir, 'registry'));
    const busybox = await readFile('/bin/busybox');
    await buildImage(join(dir, 'layout'), 'app', {
      files: { 'bin/busybox': busybox, 'srv/.keep': '' },
      modes: { 'bin/busybox': 0o755 },
      entrypoint: ['/bin/busybox'],
      cmd: ['sh', '-c', 'echo "$GREETING from $(pwd)"'],
      env: ['GREETING=hello', 'PATH=/bin'],
      workdir: '/srv',
    });
    app = `${reg.host}/e2e/app:v1`;
    await pushImage(join(dir, 'layout'), 'app', app);
  });

  after(async () => {
    await reg?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs the image Entrypoint + Cmd with its Env and WorkingDir when no command is given', async () => {
    const r = await cli(['run', app]);
    assert.equal(r.code, 0, r.stderr.toString());
    assert.equal(r.stdout.toString(), 'hello from /srv\n');
  });

  it('replaces Cmd (keeping Entrypoint) with the given command, and -e overrides image Env', async () => {
    const r = await cli([
      'run',
      '-e',
      'GREETING=override',
      app,
      'sh',
      '-c',
      'echo $GREETING; echo $PATH',
    ]);
    assert.equal(r.code, 0, r.stderr.toString());
    assert.equal(r.stdout.toString(), 'override\n/bin\n');
  });

  it('records the resolved digest; a second workspace reuses the baseline', async () => {
    const name = `img-${process.pid}`;
    try {
      const r = await cli(['--json', 'create', name, '--image', app]);
      assert.equal(r.code, 0, r.stdout.toString());
      const status = JSON.parse((await cli(['--json', 'status', name])).stdout.toString()).result;
      assert.match(status.image.digest, /^sha256:[0-9a-f]{64}$/);
      assert.equal(status.image.reference, app);
      assert.equal(status.verification.ok, true);
      assert.equal((await cli(['start', name])).code, 0);
      const e = await cli(['exec', name, '--', '/bin/busybox', 'sh', '-c', 'echo $GREETING; pwd']);
      assert.equal(e.stdout.toString(), 'hello\n/srv\n');
      const run = JSON.parse((await cli(['run', '--json', app, 'true'])).stdout.toString()).result;
      assert.equal(run.image.key, status.image.key, 'same baseline');
      assert.ok(run.timings.prepareMs < 5_000);
    } finally {
      await cli(['kill', name]);
      await cli(['delete', name]);
    }
  });

  it('fails cleanly for an unknown image', async () => {
    const r = await cli(['run', '--json', `${reg.host}/e2e/nope:v1`, 'true']);
    assert.equal(r.code, 1);
    assert.equal(JSON.parse(r.stdout.toString()).error.code, 'IMAGE_NOT_FOUND');
  });

  it(
    'boots a debootstrap minbase of Debian 12 from the registry and runs its bash and apt',
    {
      skip:
        process.getuid?.() !== 0 || !existsSync('/usr/sbin/debootstrap')
          ? 'needs root and debootstrap'
          : false,
    },
    async () => {
      // The tree is kept between runs (it takes ~30 s to make).
      const tree = join(PACKAGE_ROOT, '.local', 'debian-minbase');
      if (!existsSync(join(tree, 'etc', 'debian_version'))) {
        await rm(tree, { recursive: true, force: true });
        await exec('debootstrap', ['--variant=minbase', 'bookworm', tree], { maxBuffer: 64 << 20 });
      }
      const layout = join(dir, 'debian');
      await exec('umoci', ['init', '--layout', layout]);
      await exec('umoci', ['new', '--image', `${layout}:v1`]);
      await exec('umoci', ['insert', '--image', `${layout}:v1`, tree, '/'], {
        maxBuffer: 64 << 20,
      });
      await exec('umoci', ['config', '--image', `${layout}:v1`, '--config.cmd=/bin/bash']);
      const ref = `${reg.host}/e2e/debian:12`;
      await pushImage(layout, 'v1', ref);
      const r = await cli([
        'run',
        ref,
        'bash',
        '-c',
        'cat /etc/debian_version; apt-get --version | head -1; id -u',
      ]);
      assert.equal(r.code, 0, r.stderr.toString());
      const lines = r.stdout.toString().trim().split('\n');
      assert.match(lines[0] ?? '', /^12\./);
      assert.match(lines[1] ?? '', /^apt /);
      assert.equal(lines[2], '0');
    },
  );

  it('prunes baselines no workspace uses; the image still runs afterwards', async () => {
    const before = JSON.parse((await cli(['run', '--json', app, 'true'])).stdout.toString()).result;
    const pruned = JSON.parse((await cli(['--json', 'image', 'prune'])).stdout.toString()).result;
    assert.ok(pruned.removedBaselines.includes(before.image.key), JSON.stringify(pruned));
    const again = await cli(['run', app]);
    assert.equal(again.code, 0, again.stderr.toString());
    assert.equal(again.stdout.toString(), 'hello from /srv\n');
  });

  it('leaves no process behind', async () => {
    assert.deepEqual(await waitNoProcesses(join(E2E_STATE_DIR, 'workspaces'), 10_000), []);
  });
});
