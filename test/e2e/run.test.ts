/**
 * `microagent run` end to end: real CLI, real QEMU, real kernel, real guest
 * init. Every test checks that no process is left behind.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { cp, readdir, rm, writeFile, readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  cli,
  collect,
  E2E_STATE_DIR,
  killProcessesMentioning,
  processesMentioning,
  startCli,
  tempDir,
  waitNoProcesses,
} from '../helpers.js';

async function noLeftovers(stateDir = E2E_STATE_DIR): Promise<void> {
  const left = await waitNoProcesses(stateDir, 10_000);
  assert.deepEqual(left, [], 'no process may be left behind');
}

/** Waits (up to 30 s) until a QEMU of the E2E state dir runs; whether one does. */
async function waitForQemu(): Promise<boolean> {
  const running = (): boolean =>
    processesMentioning(E2E_STATE_DIR).some((p) => p.cmdline.includes('qemu-system'));
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && !running()) await new Promise((r) => setTimeout(r, 50));
  return running();
}

async function workspaceNames(stateDir = E2E_STATE_DIR): Promise<string[]> {
  try {
    return await readdir(join(stateDir, 'workspaces'));
  } catch {
    return [];
  }
}

describe('microagent run', { timeout: 600_000 }, () => {
  before(async () => {
    // First use installs the kernel and builds the default image; do it once
    // here so that each test measures only its own boot.
    const r = await cli(['run', '--', 'true'], { timeoutMs: 300_000 });
    assert.equal(r.code, 0, r.stderr.toString());
  });

  after(() => killProcessesMentioning(E2E_STATE_DIR));

  it('passes the guest exit codes 0, 1 and 42 through', async () => {
    assert.equal((await cli(['run', '--', 'uname', '-a'])).code, 0);
    assert.equal((await cli(['run', '--', 'false'])).code, 1);
    assert.equal((await cli(['run', '--', 'sh', '-c', 'exit 42'])).code, 42);
    await noLeftovers();
  });

  it('works through the supervisor executable (JSON in, JSON out) as well as in-process', async () => {
    const r = await cli(['run', '--', 'echo', 'via-exec'], {
      env: { MICROAGENT_SUPERVISOR_EXEC: '1' },
    });
    assert.equal(r.code, 0, r.stderr.toString());
    assert.equal(r.stdout.toString(), 'via-exec\n');
    await noLeftovers();
  });

  it('restarts a boot whose console stalls before the guest is ready, once, and still runs the command', async () => {
    const name = `stall-${randomBytes(3).toString('hex')}`;
    // The test freezes the first boot itself: once QEMU is up (QMP
    // connected, state booting) it stops QEMU with SIGSTOP. From outside
    // that is exactly the rare TCG kernel stall: a console that stops.
    const runDir = join(E2E_STATE_DIR, 'workspaces', name, 'run');
    const running = collect(
      startCli(['run', '--keep', '--name', name, '--', 'echo', 'after-stall'], {
        env: { MICROAGENT_BOOT_STALL_MS: '3000' },
      }),
    );
    let frozen: number | undefined;
    for (let i = 0; i < 1500 && frozen === undefined; i++) {
      try {
        const st = JSON.parse(await readFile(join(runDir, 'monitor.json'), 'utf8')) as {
          state: string;
          qemuPid?: number;
        };
        if (st.state === 'booting' && st.qemuPid !== undefined) {
          process.kill(st.qemuPid, 'SIGSTOP');
          frozen = st.qemuPid;
        }
      } catch {
        // not written yet
      }
      if (frozen === undefined) await new Promise((res) => setTimeout(res, 10));
    }
    assert.ok(frozen, 'the first boot was frozen');
    const r = await running;
    assert.equal(r.code, 0, r.stderr.toString());
    assert.equal(r.stdout.toString(), 'after-stall\n');
    const monitor = JSON.parse(await readFile(join(runDir, 'monitor.json'), 'utf8'));
    assert.equal(monitor.bootRestarts, 1);
    const logs = await cli(['logs', name]);
    assert.match(logs.stdout.toString(), /restarting the VM \(boot attempt 2\)/);
    assert.match(await readFile(join(runDir, 'monitor.log'), 'utf8'), /boot stall/);
    assert.equal((await cli(['delete', name])).code, 0);
    await noLeftovers();
  });

  it('runs a microagent.yaml, with command-line flags overriding it; an invalid one names the line', async () => {
    const dir = await tempDir('spec');
    try {
      const spec = join(dir, 'microagent.yaml');
      await writeFile(
        spec,
        [
          'profile: tiny',
          'env:',
          '  A: from-file',
          '  B: kept',
          'command: ["sh", "-c", "echo $A $B"]',
          '',
        ].join('\n'),
      );
      const r = await cli(['run', '--file', spec, '-e', 'A=from-flag']);
      assert.equal(r.code, 0, r.stderr.toString());
      assert.equal(r.stdout.toString(), 'from-flag kept\n');
      const doc = JSON.parse(
        (await cli(['run', '--json', '--file', spec, '--', 'true'])).stdout.toString(),
      );
      assert.equal(doc.result.resources.profile, 'tiny');
      // An image from the command line is the image, not the command; the
      // command after -- is the command.
      for (const args of [
        ['--image', 'default', '--'],
        ['default', '--'],
      ]) {
        const im = await cli(['run', '--json', '--file', spec, ...args, 'echo', 'cmd']);
        assert.equal(im.code, 0, im.stdout.toString() + im.stderr.toString());
        const imDoc = JSON.parse(im.stdout.toString());
        assert.equal(imDoc.result.stdout, 'cmd\n', args.join(' '));
        assert.equal(imDoc.result.image.ref, 'default');
      }
      // --allow-host-loopback is not lost with --file.
      const lo = createServer((_req, res) => res.end('loopback-ok\n'));
      await new Promise<void>((r) => lo.listen(0, '127.0.0.1', r));
      try {
        const port = (lo.address() as AddressInfo).port;
        const reach = await cli([
          'run',
          '--file',
          spec,
          '--allow-host-loopback',
          '--',
          'sh',
          '-c',
          `timeout 10 wget -q -O - http://10.0.2.2:${port}/`,
        ]);
        assert.equal(reach.code, 0, reach.stderr.toString());
        assert.equal(reach.stdout.toString(), 'loopback-ok\n');
      } finally {
        lo.closeAllConnections();
        await new Promise((r) => lo.close(r));
      }
      await writeFile(spec, 'profile: tiny\nbogus: 1\n');
      const bad = await cli(['run', '--file', spec]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr.toString(), /microagent\.yaml:2:1: bogus: unknown field/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('prints the guest kernel name on stdout', async () => {
    const r = await cli(['run', '--', 'uname', '-s']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.toString(), 'Linux\n');
  });

  it('keeps stdout and stderr apart', async () => {
    const r = await cli(['run', '--', 'sh', '-c', 'echo out; echo err >&2; echo out2']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.toString(), 'out\nout2\n');
    assert.equal(r.stderr.toString(), 'err\n');
    await noLeftovers();
  });

  it('round-trips binary stdin to stdout byte for byte', async () => {
    const data = randomBytes(1024 * 1024 + 13);
    const r = await cli(['run', '--stdin', '--', 'cat'], { input: data });
    assert.equal(r.code, 0, r.stderr.toString());
    assert.equal(r.stdout.length, data.length);
    assert.ok(r.stdout.equals(data), 'stdout must equal stdin exactly');
  });

  it('streams 10 MiB of output intact', async () => {
    const r = await cli([
      'run',
      '--',
      'sh',
      '-c',
      'head -c 10485760 /dev/urandom > /tmp/f && sha256sum /tmp/f >&2 && cat /tmp/f',
    ]);
    assert.equal(r.code, 0, r.stderr.toString());
    assert.equal(r.stdout.length, 10 * 1024 * 1024);
    const guestHash = r.stderr.toString().split(/\s+/)[0];
    assert.equal(createHash('sha256').update(r.stdout).digest('hex'), guestHash);
  });

  it('passes environment and working directory', async () => {
    const r = await cli([
      'run',
      '-e',
      'GREETING=hello world',
      '--cwd',
      '/etc',
      '--',
      'sh',
      '-c',
      'echo "$GREETING"; pwd',
    ]);
    assert.equal(r.code, 0, r.stderr.toString());
    assert.equal(r.stdout.toString(), 'hello world\n/etc\n');
  });

  it('kills the command at --timeout and exits 124', async () => {
    const r = await cli(['run', '--timeout', '2s', '--', 'sleep', '60']);
    assert.equal(r.code, 124, r.stderr.toString());
    await noLeftovers();
  });

  it('exits 127 for a command that does not exist, 126 for one that is not executable', async () => {
    const r = await cli(['run', '--', 'no-such-command']);
    assert.equal(r.code, 127, r.stderr.toString());
    const r2 = await cli(['run', '--', '/etc/passwd']);
    assert.equal(r2.code, 126, r2.stderr.toString());
    // The guest reads the program ahead at boot (config.prefetch): a device
    // or a directory is skipped there, and exec decides as always.
    const r3 = await cli(['run', '--', '/dev/zero']);
    assert.equal(r3.code, 126, r3.stderr.toString());
    const r4 = await cli(['run', '--', '/etc']);
    assert.equal(r4.code, 126, r4.stderr.toString());
  });

  it('reports 128+n for a command killed by a signal', async () => {
    const r = await cli(['run', '--', 'sh', '-c', 'kill -9 $$']);
    assert.equal(r.code, 137);
  });

  it('prints one JSON document with --json', async () => {
    const r = await cli(['run', '--json', '--', 'sh', '-c', 'echo hi; echo oops >&2; exit 3']);
    assert.equal(r.code, 3);
    const envelope = JSON.parse(r.stdout.toString());
    assert.equal(envelope.ok, true);
    const doc = envelope.result;
    assert.equal(doc.status, 'exited');
    assert.equal(doc.exitCode, 3);
    assert.equal(doc.stdout, 'hi\n');
    assert.equal(doc.stderr, 'oops\n');
    assert.match(doc.workspace, /^run-[a-z]+-[a-z]+-[0-9a-f]{4}$/);
    for (const k of ['bootMs', 'execMs', 'totalMs']) assert.equal(typeof doc.timings[k], 'number');
    assert.ok(!(await workspaceNames()).includes(doc.workspace), 'throwaway workspace is deleted');
  });

  it('keeps a halted workspace with --keep and --name', async () => {
    const name = `kept-${randomBytes(3).toString('hex')}`;
    const r = await cli([
      'run',
      '--keep',
      '--name',
      name,
      '--',
      'sh',
      '-c',
      'echo kept > /root/file',
    ]);
    assert.equal(r.code, 0, r.stderr.toString());
    const record = JSON.parse(
      await readFile(join(E2E_STATE_DIR, 'workspaces', name, 'workspace.json'), 'utf8'),
    );
    assert.equal(record.state, 'halted');
    assert.equal(record.name, name);
    const again = await cli(['run', '--name', name, '--', 'true']);
    assert.equal(again.code, 1);
    assert.match(again.stderr.toString(), /already exists/);
    await rm(join(E2E_STATE_DIR, 'workspaces', name), { recursive: true, force: true });
    await noLeftovers();
  });

  it('leaves no QEMU behind when the CLI is SIGKILLed mid-boot', async () => {
    const child = startCli(['run', '--', 'sleep', '30']);
    const done = collect(child);
    assert.ok(await waitForQemu(), 'QEMU started');
    child.kill('SIGKILL');
    await done;
    await noLeftovers();
    // The throwaway workspace is removed by its janitor.
    const deadline2 = Date.now() + 5_000;
    while (Date.now() < deadline2 && (await workspaceNames()).some((n) => n.startsWith('run-'))) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(
      (await workspaceNames()).filter((n) => n.startsWith('run-')),
      [],
    );
  });

  it('tears down cleanly when interrupted (SIGINT) while the guest boots', async () => {
    const child = startCli(['run', '--json', '--', 'sleep', '30']);
    const done = collect(child);
    await waitForQemu();
    child.kill('SIGINT');
    const r = await done;
    assert.equal(r.code, 1, r.stderr.toString());
    const doc = JSON.parse(r.stdout.toString());
    assert.equal(doc.ok, false);
    assert.equal(doc.error.code, 'INTERRUPTED');
    await noLeftovers();
    assert.deepEqual(
      (await workspaceNames()).filter((n) => n.startsWith('run-')),
      [],
    );
  });

  it('refuses to boot a tampered kernel or initramfs', async () => {
    const stateDir = await tempDir('tamper');
    try {
      await cp(join(E2E_STATE_DIR, 'kernels'), join(stateDir, 'kernels'), { recursive: true });
      await cp(join(E2E_STATE_DIR, 'images'), join(stateDir, 'images'), { recursive: true });
      const id = (await readFile(join(stateDir, 'kernels', 'default'), 'utf8')).trim();
      for (const file of await kernelFiles(join(stateDir, 'kernels', id))) {
        const path = join(stateDir, 'kernels', id, file);
        const original = await readFile(path);
        const tampered = Buffer.from(original);
        const at = Math.floor(tampered.length / 2);
        tampered[at] = (tampered[at] as number) ^ 0xff;
        await writeFile(path, tampered);
        const r = await cli(['run', '--json', '--', 'true'], { stateDir });
        assert.equal(r.code, 1, `${file}: ${r.stdout.toString()}`);
        const doc = JSON.parse(r.stdout.toString());
        assert.equal(doc.ok, false);
        assert.equal(doc.error.code, 'KERNEL_VERIFY_FAILED');
        await writeFile(path, original);
      }
      assert.deepEqual(processesMentioning(stateDir), []);
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('reports a boot timeout with the serial console tail', async () => {
    const r = await cli(['run', '--json', '--boot-timeout', '300ms', '--', 'true']);
    assert.equal(r.code, 75, r.stdout.toString());
    const doc = JSON.parse(r.stdout.toString());
    assert.equal(doc.error.code, 'BOOT_TIMEOUT');
    await noLeftovers();
  });
});

async function kernelFiles(dir: string): Promise<string[]> {
  const names = await readdir(dir);
  const out: string[] = [];
  for (const n of names) {
    if (
      (n === 'vmlinux' || n === 'bzImage' || n === 'initramfs.cpio') &&
      (await stat(join(dir, n))).isFile()
    )
      out.push(n);
  }
  return out;
}
