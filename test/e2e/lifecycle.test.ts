/**
 * Persistent workspaces end to end, with real VMs: the lifecycle, crash
 * reconciliation, races, concurrency, events and readiness.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cli, E2E_STATE_DIR, killProcessesMentioning, waitNoProcesses } from '../helpers.js';

const created: string[] = [];
function wsName(prefix: string): string {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  created.push(name);
  return name;
}

async function ok(args: string[]): Promise<string> {
  const r = await cli(args);
  assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

/** The AX result of a command, or the failure envelope. */
async function jsonOf(args: string[]): Promise<Record<string, unknown>> {
  const r = await cli(['--json', ...args]);
  const doc = JSON.parse(r.stdout.toString()) as { ok: boolean; result?: Record<string, unknown> };
  return doc.ok ? (doc.result as Record<string, unknown>) : (doc as Record<string, unknown>);
}

async function errorCode(args: string[]): Promise<string> {
  const doc = (await jsonOf(args)) as { ok?: boolean; error?: { code: string } };
  assert.equal(doc.ok, false, `${args.join(' ')} should fail`);
  return doc.error?.code ?? '';
}

describe('persistent workspaces', { timeout: 900_000 }, () => {
  after(async () => {
    for (const name of created) {
      await cli(['kill', name]);
      await cli(['delete', name]);
    }
    for (const name of created)
      killProcessesMentioning(join(E2E_STATE_DIR, 'workspaces', name) + '/');
  });

  it('create → start → exec → halt → start keeps the disk → pause refuses exec → resume → delete', async () => {
    const name = wsName('life');
    assert.match(await ok(['create', name, '--label', 'team=qa']), /created/);
    assert.equal((await jsonOf(['status', name])).state, 'prepared');
    await ok(['start', name]);
    await ok(['exec', name, '--', 'sh', '-c', 'echo persisted > /root/keep; sync']);
    await ok(['halt', name]);
    assert.equal((await jsonOf(['status', name])).state, 'halted');
    await ok(['start', name]);
    assert.equal(await ok(['exec', name, '--', 'cat', '/root/keep']), 'persisted\n');
    await ok(['pause', name]);
    assert.equal(await errorCode(['exec', name, '--', 'true']), 'WORKSPACE_PAUSED');
    assert.equal(await errorCode(['start', name]), 'WORKSPACE_PAUSED');
    await ok(['resume', name]);
    assert.equal(await ok(['exec', name, '--', 'echo', 'back']), 'back\n');
    assert.equal(await errorCode(['delete', name]), 'WORKSPACE_RUNNING');
    await ok(['halt', name]);

    const events = (await jsonOf(['events', name])) as {
      events: { state: string; identity: { labels: Record<string, string>; runtimeId: string } }[];
    };
    const states = events.events.map((e) => e.state);
    assert.deepEqual(states, [
      'prepared',
      'starting',
      'running',
      'stopping',
      'halted',
      'starting',
      'running',
      'paused',
      'running',
      'stopping',
      'halted',
    ]);
    for (const e of events.events) {
      assert.equal(e.identity.runtimeId, name);
      assert.deepEqual(e.identity.labels, { team: 'qa' });
    }
    await ok(['delete', name]);
    assert.equal(await errorCode(['status', name]), 'WORKSPACE_NOT_FOUND');
  });

  it('reports readiness and verification in status', async () => {
    const name = wsName('ready');
    await ok(['create', name]);
    let status = (await jsonOf(['status', name])) as any;
    assert.equal(status.readiness.guestReady.ready, false);
    assert.equal(status.verification.ok, true);
    await ok(['start', name]);
    status = await jsonOf(['status', name]);
    assert.equal(status.readiness.guestReady.ready, true);
    assert.equal(status.readiness.execReady.ready, true);
    assert.equal(status.readiness.shellReady.ready, true);
    assert.equal(status.readiness.resultReady.ready, false);
    assert.match(status.verification.kernel.sha256, /^[0-9a-f]{64}$/);
    assert.equal(status.verification.kernel.sha256, status.verification.kernel.recordedSha256);
    await ok(['kill', name]);
  });

  it('shows a VMM killed behind its back as failed, and starts again', async () => {
    const name = wsName('crash');
    await ok(['create', name]);
    await ok(['start', name]);
    const status = (await jsonOf(['status', name])) as any;
    process.kill(status.vm.qemuPid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 500));
    const after = (await jsonOf(['status', name])) as any;
    assert.equal(after.state, 'failed');
    assert.match(after.stateDetail, /not running/);
    const list = (await jsonOf(['list'])) as { workspaces: { name: string; state: string }[] };
    assert.equal(list.workspaces.find((w) => w.name === name)?.state, 'failed');
    await ok(['start', name]);
    assert.equal(await ok(['exec', name, '--', 'echo', 'again']), 'again\n');
    await ok(['kill', name]);
  });

  it('lets exactly one of two concurrent starts boot', async () => {
    const name = wsName('race');
    await ok(['create', name]);
    const [a, b] = await Promise.all([
      cli(['--json', 'start', name]),
      cli(['--json', 'start', name]),
    ]);
    const codes = [a.code, b.code].sort();
    assert.deepEqual(codes, [0, 1], `${a.stdout} ${b.stdout}`);
    const loser = JSON.parse((a.code === 0 ? b : a).stdout.toString());
    assert.equal(loser.ok, false);
    assert.ok(['WORKSPACE_BUSY', 'WORKSPACE_RUNNING'].includes(loser.error.code), loser.error.code);
    await ok(['kill', name]);
  });

  it('runs 8 concurrent execs from separate processes, and 3 workspaces at once', async () => {
    const names = [wsName('multi'), wsName('multi'), wsName('multi')];
    for (const n of names) await ok(['create', n, '--profile', 'tiny']);
    await Promise.all(names.map((n) => ok(['start', n])));
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        cli(['exec', names[0] as string, '--', 'sh', '-c', `echo $((${i} * 2))`]),
      ),
    );
    results.forEach((r, i) => {
      assert.equal(r.code, 0);
      assert.equal(r.stdout.toString(), `${i * 2}\n`);
    });
    const hosts = await Promise.all(names.map((n) => ok(['exec', n, '--', 'hostname'])));
    assert.deepEqual(
      hosts,
      names.map((n) => `${n}\n`),
    );
    const ps = (await jsonOf(['ps'])) as { workspaces: { name: string }[] };
    for (const n of names) assert.ok(ps.workspaces.some((w) => w.name === n));
    await Promise.all(names.map((n) => ok(['halt', n])));
  });

  it('copies a 50 MiB binary file both ways, running (agent) and halted (disk image), byte-exact', async () => {
    const name = wsName('cp');
    const dir = await mkdtemp(join(tmpdir(), 'ma-cp-'));
    try {
      const data = randomBytes(50 * 1024 * 1024);
      const src = join(dir, 'src.bin');
      await writeFile(src, data);
      await ok(['create', name]);
      // Stopped: through the disk image.
      const inOffline = (await jsonOf(['cp', src, `${name}:/root/offline.bin`])) as {
        via: string;
        bytes: number;
      };
      assert.equal(inOffline.via, 'disk');
      assert.equal(inOffline.bytes, data.length);
      await ok(['start', name]);
      assert.equal(
        (await ok(['exec', name, '--', 'sha256sum', '/root/offline.bin'])).split(' ')[0],
        createHash('sha256').update(data).digest('hex'),
      );
      // Running: through the guest agent.
      const inLive = (await jsonOf(['cp', src, `${name}:/root/live.bin`])) as { via: string };
      assert.equal(inLive.via, 'agent');
      const outLive = (await jsonOf(['cp', `${name}:/root/live.bin`, join(dir, 'live.out')])) as {
        via: string;
      };
      assert.equal(outLive.via, 'agent');
      assert.ok((await readFile(join(dir, 'live.out'))).equals(data));
      await ok(['halt', name]);
      const outOffline = (await jsonOf([
        'cp',
        `${name}:/root/live.bin`,
        join(dir, 'offline.out'),
      ])) as { via: string };
      assert.equal(outOffline.via, 'disk');
      assert.ok((await readFile(join(dir, 'offline.out'))).equals(data));
      assert.equal(
        await errorCode(['cp', `${name}:/no/such/file`, join(dir, 'x')]),
        'GUEST_FILE_NOT_FOUND',
      );
      await ok(['start', name]);
      assert.equal(await ok(['exec', name, '--', 'ls', '/root']), 'live.bin\noffline.bin\n');
      await ok(['kill', name]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('gives distinct errors for bad names, unknown workspaces, wrong states and corrupt state', async () => {
    assert.equal(await errorCode(['create', '-bad']), 'USAGE'); // a flag, not a name
    assert.equal(await errorCode(['create', 'bad/name']), 'INVALID_NAME');
    assert.equal(await errorCode(['start', 'no-such-workspace']), 'WORKSPACE_NOT_FOUND');
    const name = wsName('states');
    await ok(['create', name]);
    assert.equal(await errorCode(['exec', name, '--', 'true']), 'WORKSPACE_NOT_RUNNING');
    assert.equal(await errorCode(['resume', name]), 'WORKSPACE_NOT_PAUSED');
    assert.equal(await errorCode(['create', name]), 'WORKSPACE_EXISTS');
    const record = join(E2E_STATE_DIR, 'workspaces', name, 'workspace.json');
    const original = await readFile(record, 'utf8');
    await writeFile(record, original.replace('"v": 1', '"v": 99'));
    assert.equal(await errorCode(['start', name]), 'STATE_CORRUPT');
    assert.equal(
      await readFile(record, 'utf8'),
      original.replace('"v": 1', '"v": 99'),
      'a newer record is not rewritten',
    );
    await writeFile(record, original);
    await ok(['delete', name]);
  });

  it('lists a corrupt record as corrupt, with its error code, next to the others', async () => {
    const good = wsName('listed');
    const bad = wsName('corrupt');
    await ok(['create', good]);
    await ok(['create', bad]);
    const record = join(E2E_STATE_DIR, 'workspaces', bad, 'workspace.json');
    const original = await readFile(record, 'utf8');
    try {
      await writeFile(record, '{"v": 1, "name": ');
      const doc = (await jsonOf(['list'])) as {
        workspaces: { name: string; state: string; error?: { code: string; message: string } }[];
      };
      const row = doc.workspaces.find((w) => w.name === bad);
      assert.equal(row?.state, 'corrupt');
      assert.equal(row?.error?.code, 'STATE_CORRUPT');
      assert.equal(doc.workspaces.find((w) => w.name === good)?.state, 'prepared');
      const text = await ok(['list']);
      assert.match(text, new RegExp(`^${bad}\\s+corrupt\\s+.*STATE_CORRUPT`, 'm'));
      assert.match(text, new RegExp(`^${good}\\s+prepared`, 'm'));
      // Every other command still refuses it.
      assert.equal(await errorCode(['status', bad]), 'STATE_CORRUPT');
      assert.equal(await errorCode(['start', bad]), 'STATE_CORRUPT');
    } finally {
      await writeFile(record, original);
    }
    await ok(['delete', good]);
    await ok(['delete', bad]);
  });

  it('does not take a reused monitor pid (a live process of another start time) for a running VM', async () => {
    const name = wsName('pidreuse');
    await ok(['create', name]);
    const dir = join(E2E_STATE_DIR, 'workspaces', name);
    // A live process stands in for the pid a host reboot handed to someone else.
    const stranger = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      const pid = stranger.pid as number;
      const startTime = Number(
        (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ')[19],
      );
      const record = JSON.parse(await readFile(join(dir, 'workspace.json'), 'utf8')) as Record<
        string,
        unknown
      >;
      const writeState = async (monitorStartTime: number): Promise<void> => {
        await writeFile(
          join(dir, 'workspace.json'),
          JSON.stringify({ ...record, state: 'running' }, null, 2),
        );
        await mkdir(join(dir, 'run'), { recursive: true });
        await writeFile(
          join(dir, 'run', 'monitor.json'),
          JSON.stringify({
            v: 1,
            runtimeId: 'rt-test',
            monitorPid: pid,
            monitorStartTime,
            state: 'ready',
            accel: 'tcg',
            accelReason: 'test',
            startedAt: Date.now(),
          }),
        );
      };
      // The same pid and start time: that process is the monitor.
      await writeState(startTime);
      let doc = (await jsonOf(['list'])) as { workspaces: { name: string; state: string }[] };
      assert.equal(doc.workspaces.find((w) => w.name === name)?.state, 'running');
      // Another start time: a stranger holds the pid; the VM is gone.
      await writeState(startTime + 1);
      doc = (await jsonOf(['list'])) as { workspaces: { name: string; state: string }[] };
      assert.equal(doc.workspaces.find((w) => w.name === name)?.state, 'failed');
      const status = (await jsonOf(['status', name])) as { state: string; stateDetail: string };
      assert.equal(status.state, 'failed');
      assert.match(status.stateDetail, /monitor is gone/);
      assert.equal(stranger.exitCode, null, 'the stranger was left alone');
    } finally {
      stranger.kill('SIGKILL');
    }
    await ok(['delete', name]);
  });

  it('sizes the root disk by profile (a floor) or --disk-size (pinned), and grows the guest file system to fill it', async () => {
    const dfKiB = async (name: string): Promise<number> => {
      const out = await ok(['exec', name, '--', 'df', '-P', '-k', '/']);
      return Number(out.trim().split('\n')[1]?.trim().split(/\s+/)[1]);
    };
    const small = wsName('disk-small');
    const pinned = wsName('disk-pinned');
    await ok(['create', small]);
    await ok(['create', pinned, '--profile', 'tiny', '--disk-size', '2G']);
    let doc = (await jsonOf(['status', small])) as {
      resources: { diskMiB: number };
      disk: { sizeBytes: number };
    };
    assert.equal(doc.resources.diskMiB, 1024, "the small profile's disk");
    assert.equal(doc.disk.sizeBytes, 1024 * 1024 * 1024);
    doc = (await jsonOf(['status', pinned])) as typeof doc;
    assert.equal(doc.resources.diskMiB, 2048, '--disk-size wins over the profile');
    await ok(['start', small]);
    await ok(['start', pinned]);
    // ext4 takes its own share; the rest of the disk is the guest's.
    const kSmall = await dfKiB(small);
    const kPinned = await dfKiB(pinned);
    assert.ok(kSmall > 900 * 1024 && kSmall <= 1024 * 1024, `small: ${kSmall} KiB`);
    assert.ok(kPinned > 1900 * 1024 && kPinned <= 2048 * 1024, `pinned: ${kPinned} KiB`);
    const status = (await jsonOf(['status', small])) as {
      disk: { guest?: { usedBytes: number; availableBytes: number } };
    };
    assert.ok((status.disk.guest?.availableBytes ?? 0) > 800 * 1024 * 1024, 'status shows the use');
    // Grown once: a second boot finds it full size already.
    await ok(['halt', small]);
    await ok(['start', small]);
    assert.equal(await dfKiB(small), kSmall);
    // A pinned size the image does not fit in is refused, and nothing is left.
    const tooSmall = wsName('disk-too-small');
    const r = (await jsonOf(['create', tooSmall, '--disk-size', '64M'])) as {
      ok: boolean;
      error: { code: string; message: string };
    };
    assert.equal(r.error.code, 'INVALID_ARGUMENT');
    assert.match(r.error.message, /smaller than the image/);
    assert.equal(await errorCode(['status', tooSmall]), 'WORKSPACE_NOT_FOUND');
    await ok(['kill', small]);
    await ok(['kill', pinned]);
  });

  it('gives a guest that fills its disk ENOSPC, and exec, cp, halt and start still work', async () => {
    const name = wsName('full');
    await ok(['create', name, '--disk-size', '320M']);
    await ok(['start', name]);
    const r = await cli([
      'exec',
      name,
      '--',
      'sh',
      '-c',
      'dd if=/dev/zero of=/root/fill bs=1M 2>&1; echo rc=$?; df -P -k / | tail -1',
    ]);
    assert.equal(r.code, 0, r.stderr.toString());
    const out = r.stdout.toString();
    assert.match(out, /No space left on device/);
    assert.match(out, /rc=1/);
    assert.match(out, /\s0\s+100%\s+\/$/m, `the disk is full: ${out}`);
    // Everything else goes on.
    assert.equal(await ok(['exec', name, '--', 'echo', 'alive']), 'alive\n');
    const dir = await mkdtemp(join(tmpdir(), 'ma-full-'));
    try {
      await ok(['cp', `${name}:/etc/hostname`, join(dir, 'hostname')]);
      assert.equal(await readFile(join(dir, 'hostname'), 'utf8'), `${name}\n`);
      await writeFile(join(dir, 'more'), randomBytes(1024 * 1024));
      const into = await cli(['--json', 'cp', join(dir, 'more'), `${name}:/root/more`]);
      assert.notEqual(into.code, 0, 'a copy into a full disk fails');
      assert.match(into.stdout.toString(), /space|ENOSPC/i);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    await ok(['halt', name]);
    await ok(['start', name]);
    await ok(['exec', name, '--', 'rm', '/root/fill']);
    assert.equal(
      await ok(['exec', name, '--', 'sh', '-c', 'echo ok > /root/after; cat /root/after']),
      'ok\n',
    );
    await ok(['kill', name]);
  });

  it('leaves no process behind', async () => {
    for (const name of created) await cli(['kill', name]);
    for (const name of created) {
      const left = await waitNoProcesses(join(E2E_STATE_DIR, 'workspaces', name) + '/', 10_000);
      assert.deepEqual(left, [], `processes of ${name}`);
    }
  });
});
