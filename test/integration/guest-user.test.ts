/**
 * Exec requests with a `user` (an OCI `User`) against a real VM: each form
 * (name, uid:gid, a uid without a passwd entry, name:group), supplementary
 * groups from /etc/group, HOME/USER/LOGNAME, the request's HOME winning,
 * a pty owned by the user, a cwd entered as the user, and `bad_user` for
 * unknown names.
 *
 * Boots one workspace with the default image (whose /etc/passwd has only
 * root, so the test adds alice and staff as root first) in the shared test
 * state directory (MICROAGENT_TEST_STATE_DIR or .local/test-state).
 * MICROAGENT_TEST_ACCEL (auto | kvm | tcg, default auto) picks the
 * accelerator. Skips without QEMU or the built guest init.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { MicroagentError } from '../../src/errors.js';
import { execInGuest, type ExecInput } from '../../src/guest/exec-client.js';
import type { ExecExit } from '../../src/guest/protocol.js';
import { BUILD, StatePaths, type WorkspacePaths } from '../../src/paths.js';
import {
  killVm,
  prepareBoot,
  resolveImageAndKernel,
  startVm,
  stopVm,
} from '../../src/workspace/vm.js';
import { DEFAULT_IMAGE, execUserFor } from '../../src/workspace/image.js';
import { resolveResources } from '../../src/workspace/profiles.js';
import type { Identity } from '../../src/workspace/record.js';
import { E2E_STATE_DIR } from '../helpers.js';

const missing = ['/usr/bin/qemu-system-x86_64', BUILD.guestInit, BUILD.qemuSupervisor].filter(
  (p) => !existsSync(p),
);
const skip = missing.length > 0 ? `needs ${missing.join(', ')} (npm run build)` : false;
const accel = (process.env.MICROAGENT_TEST_ACCEL ?? 'auto') as 'auto' | 'kvm' | 'tcg';

/** Prints uid, gid, the sorted group list, HOME, USER, LOGNAME: one per line. */
const WHO =
  'id -u; id -g; id -G | tr " " "\\n" | sort -n | tr "\\n" " "; echo; echo "$HOME"; echo "${USER-unset}"; echo "${LOGNAME-unset}"';

describe('the image user: choosing it', () => {
  test('the caller wins over the image; an empty or absent one is root', () => {
    assert.equal(execUserFor({ user: 'node' }, '1000:1000'), '1000:1000');
    assert.equal(execUserFor({ user: 'node' }), 'node');
    assert.equal(execUserFor({ user: '' }), undefined);
    assert.equal(execUserFor(undefined), undefined);
  });

  test('a malformed one is INVALID_ARGUMENT', () => {
    for (const bad of ['a:b:c', ':g', 'u:', 'a\0b']) {
      assert.throws(
        () => execUserFor(undefined, bad),
        (e: unknown) => e instanceof MicroagentError && e.code === 'INVALID_ARGUMENT',
      );
    }
    assert.throws(
      () => execUserFor({ user: 'x::' }),
      (e: unknown) =>
        e instanceof MicroagentError && (e.data as { source: string }).source === 'image',
    );
  });
});

describe('exec as a user on a real VM', { skip, timeout: 600_000 }, () => {
  const paths = new StatePaths(E2E_STATE_DIR);
  const name = `gu-${randomBytes(4).toString('hex')}`;
  let ws: WorkspacePaths;
  let identity: Identity;
  let started = false;

  before(async () => {
    ws = paths.workspace(name);
    ws.checkSocketPaths();
    await mkdir(paths.workspaces, { recursive: true, mode: 0o700 });
    await mkdir(ws.dir, { mode: 0o700 });
    identity = {
      requestId: `req-${name}`,
      runtimeId: name,
      role: 'test',
      backend: 'qemu',
      labels: {},
    };
    const plan = await prepareBoot(ws, {
      name,
      ...(await resolveImageAndKernel(paths, DEFAULT_IMAGE, {})),
      env: {},
      resources: resolveResources({}),
    });
    await startVm(paths, ws, plan, {
      identity,
      accel,
      bootTimeoutMs: 120_000,
      ownerLease: true, // the monitor tears the VM down if this process dies
      removeOnOwnerExit: true,
    });
    started = true;
    const setup = await run({
      argv: [
        'sh',
        '-c',
        'echo "alice:x:1000:1000::/home/alice:/bin/sh" >> /etc/passwd; ' +
          'echo "alice:x:1000:" >> /etc/group; echo "staff:x:50:alice" >> /etc/group; ' +
          'mkdir -p /home/alice && mkdir -m 700 /private',
      ],
    });
    assert.equal(setup.exit.exitCode, 0, setup.err);
  });

  after(async () => {
    if (started) {
      const stopped = await stopVm(ws, identity, 5000).catch(() => ({ timedOut: true }));
      if (stopped.timedOut) await killVm(ws, identity).catch(() => undefined);
    }
    await rm(ws.dir, { recursive: true, force: true });
  });

  async function run(request: ExecInput): Promise<{ exit: ExecExit; out: string; err: string }> {
    let out = '';
    let err = '';
    const exit = await execInGuest(ws.agentSocket, request, {
      onStdout: (c) => void (out += c.toString()),
      onStderr: (c) => void (err += c.toString()),
      timeoutMs: 120_000,
    });
    return { exit, out, err };
  }

  async function who(user: string, env?: Record<string, string>): Promise<string[]> {
    const { exit, out, err } = await run({
      argv: ['sh', '-c', WHO],
      user,
      ...(env ? { env } : {}),
    });
    assert.deepEqual([exit.status, exit.exitCode], ['exited', 0], `${user}: ${err}`);
    return out.split('\n').map((l) => l.trim());
  }

  test('a name: its uid, gid and home from passwd, its groups from /etc/group', async () => {
    assert.deepEqual((await who('alice')).slice(0, 6), [
      '1000',
      '1000',
      '50 1000',
      '/home/alice',
      'alice',
      'alice',
    ]);
  });

  test('uid:gid: that gid only; the passwd entry still gives HOME and USER', async () => {
    assert.deepEqual((await who('1000:50')).slice(0, 5), [
      '1000',
      '50',
      '50',
      '/home/alice',
      'alice',
    ]);
  });

  test('name:group resolves the group name', async () => {
    assert.deepEqual((await who('alice:staff')).slice(0, 3), ['1000', '50', '50']);
  });

  test('a uid without a passwd entry: gid 0, HOME=/, no USER', async () => {
    assert.deepEqual((await who('65534')).slice(0, 6), ['65534', '0', '0', '/', 'unset', 'unset']);
  });

  test("the request's HOME wins over the passwd home", async () => {
    assert.equal((await who('alice', { HOME: '/tmp' }))[3], '/tmp');
  });

  test('an unknown user or group fails to start with bad_user (125)', async () => {
    for (const user of ['bob', 'alice:nogroup']) {
      const { exit } = await run({ argv: ['true'], user });
      assert.equal(exit.status, 'failed_to_start', user);
      assert.equal(exit.exitCode, 125);
      assert.equal(exit.error?.code, 'bad_user');
      assert.match(exit.error?.message ?? '', /no such (user|group)/);
    }
  });

  test('the cwd is entered as the user: a root-only directory is bad_cwd', async () => {
    const { exit } = await run({ argv: ['true'], user: 'alice', cwd: '/private' });
    assert.equal(exit.error?.code, 'bad_cwd');
    assert.equal((await run({ argv: ['true'], cwd: '/private' })).exit.exitCode, 0);
  });

  test('the program really lacks root: it cannot write /etc', async () => {
    const { exit, err } = await run({ argv: ['sh', '-c', 'echo x > /etc/x'], user: 'alice' });
    assert.notEqual(exit.exitCode, 0);
    assert.match(err, /denied/i);
  });

  test('on a tty the terminal belongs to the user', async () => {
    const { exit, out } = await run({
      argv: ['sh', '-c', 'stat -c %u "$(tty)"; id -u'],
      user: 'alice',
      tty: { rows: 24, cols: 80 },
    });
    assert.equal(exit.exitCode, 0, out);
    assert.deepEqual(out.trim().split(/\r?\n/), ['1000', '1000']);
  });
});
