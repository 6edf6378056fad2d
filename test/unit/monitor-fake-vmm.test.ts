/**
 * The monitor with a fake VMM (a node process playing QEMU + guest over
 * mux.sock): agent.sock, exec-client, ctl.sock, timeouts, owner lease,
 * and that no process is left behind. The real-QEMU paths are in
 * test/integration/qemu-monitor.test.ts.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { MicroagentError } from '../../src/errors.js';
import { connectAgent } from '../../src/guest/agent-client.js';
import { execInGuest } from '../../src/guest/exec-client.js';
import { BUILD, PACKAGE_ROOT } from '../../src/paths.js';
import { isAlive, procStat, signalProcess, sleep, spawnDetached } from '../../src/proc/spawn.js';
import { ctlRequest } from '../../src/supervisors/qemu/ctl-client.js';
import {
  runtimeFiles,
  type MonitorConfig,
  type MonitorState,
} from '../../src/supervisors/qemu/state.js';
import { writeJsonAtomic } from '../../src/util/fs.js';

const FAKE_VMM = join(PACKAGE_ROOT, 'dist', 'test', 'unit', 'fake-vmm.js');
const root = mkdtempSync(join(tmpdir(), 'ma-mon-'));
const started: number[] = [];
let n = 0;

after(async () => {
  for (const pid of started) signalProcess(pid, 'SIGKILL');
  await sleep(100);
  rmSync(root, { recursive: true, force: true });
});

interface Vm {
  ws: string;
  files: ReturnType<typeof runtimeFiles>;
  monitorPid: number;
}

async function startMonitor(mode: string, extra: Partial<MonitorConfig> = {}): Promise<Vm> {
  const ws = join(root, `ws${n++}`);
  const run = join(ws, 'run');
  mkdirSync(run, { recursive: true });
  const files = runtimeFiles(run);
  const config: MonitorConfig = {
    v: 1,
    identity: { requestId: 'r', runtimeId: `fake-${n}`, role: 'test', backend: 'qemu' },
    runtimeDir: run,
    workspaceDir: ws,
    vmmExec: BUILD.vmmExec,
    qemuArgv: [process.execPath, FAKE_VMM, files.muxSocket, mode],
    qmp: false,
    accel: 'tcg',
    accelReason: 'test',
    bootTimeoutMs: 20_000,
    removeOnOwnerExit: false,
    ...extra,
  };
  await writeJsonAtomic(files.monitorConfig, config);
  const child = spawnDetached([process.execPath, BUILD.qemuMonitor, run], { stdio: 'ignore' });
  child.unref();
  started.push(child.pid!);
  return { ws, files, monitorPid: child.pid! };
}

function readState(vm: Vm): MonitorState | undefined {
  try {
    return JSON.parse(readFileSync(vm.files.monitorState, 'utf8')) as MonitorState;
  } catch {
    return undefined;
  }
}

async function waitState(vm: Vm, states: string[], timeoutMs = 10_000): Promise<MonitorState> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = readState(vm);
    if (st && states.includes(st.state)) return st;
    if (Date.now() > deadline) throw new Error(`state ${st?.state} not in ${states.join(',')}`);
    await sleep(10);
  }
}

async function waitGone(pid: number, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

describe('monitor with a fake VMM', () => {
  it('serves exec over agent.sock, ping and stop, then leaves nothing behind', async () => {
    const vm = await startMonitor('normal');
    const ready = await waitState(vm, ['ready']);
    assert.deepEqual(ready.guest, { init: 'fake-0', bootMs: 42 });
    const qemuPid = ready.qemuPid!;
    const agent = vm.files.agentSocket;

    // stdout as it comes
    let out = '';
    const exit = await execInGuest(
      agent,
      { argv: ['echo', 'hello', 'world'] },
      { onStdout: (b) => void (out += b) },
    );
    assert.equal(out, 'hello world\n');
    assert.equal(exit.status, 'exited');
    assert.equal(exit.exitCode, 0);

    // stdin streamed in, stderr, failed_to_start
    let catOut = '';
    const input = Readable.from([
      Buffer.from('abc'),
      Buffer.alloc(3 * 1024 * 1024, 'z'),
      Buffer.from('end'),
    ]);
    const catExit = await execInGuest(
      agent,
      { argv: ['cat'] },
      { stdin: input, onStdout: (b) => void (catOut += b.toString('latin1')) },
    );
    assert.equal(catExit.exitCode, 0);
    assert.equal(catOut.length, 3 + 3 * 1024 * 1024 + 3);
    assert.ok(catOut.startsWith('abc') && catOut.endsWith('zend'));
    let err = '';
    const e2 = await execInGuest(
      agent,
      { argv: ['stderr', 'oops'] },
      { onStderr: (b) => void (err += b) },
    );
    assert.deepEqual([err, e2.exitCode], ['oops', 3]);
    const e3 = await execInGuest(agent, { argv: ['missing'] });
    assert.equal(e3.status, 'failed_to_start');
    assert.equal(e3.error?.code, 'not_found');

    // a slow consumer: the guest is throttled, nothing is lost
    let got = 0;
    const slow = await execInGuest(
      agent,
      { argv: ['yes', String(2 * 1024 * 1024)] },
      {
        onStdout: async (b) => {
          got += b.length;
          if (got % (256 * 1024) < b.length) await sleep(20);
        },
      },
    );
    assert.equal(slow.exitCode, 0);
    assert.equal(got, 2 * 1024 * 1024);

    // many at once
    const outs = await Promise.all(
      Array.from({ length: 30 }, async (_, i) => {
        let o = '';
        await execInGuest(agent, { argv: ['echo', `n${i}`] }, { onStdout: (b) => void (o += b) });
        return o;
      }),
    );
    assert.deepEqual(
      outs,
      Array.from({ length: 30 }, (_, i) => `n${i}\n`),
    );

    // abort → signal 15 → signaled
    const ac = new AbortController();
    let pid = 0;
    const sleeping = execInGuest(
      agent,
      { argv: ['sleep'] },
      { signal: ac.signal, onStarted: (p) => (pid = p) },
    );
    await sleep(100);
    ac.abort();
    const sig = await sleeping;
    assert.equal(pid, 4242);
    assert.deepEqual([sig.status, sig.exitCode, sig.signal], ['signaled', 143, 15]);

    // a port without a service
    await assert.rejects(connectAgent(agent, 99, { timeoutMs: 5000 }), (e: MicroagentError) => {
      assert.equal(e.code, 'GUEST_CHANNEL_UNAVAILABLE');
      assert.match(e.message, /no service on port 99/);
      return true;
    });

    const ping = await ctlRequest(vm.files.controlSocket, { cmd: 'ping' }, 5000);
    assert.ok(ping.rttUs !== undefined && ping.rttUs >= 0);

    const stopped = await ctlRequest(
      vm.files.controlSocket,
      { cmd: 'stop', graceMs: 5000 },
      10_000,
    );
    assert.equal(stopped.timedOut, undefined);
    assert.equal(stopped.state.state, 'exited');
    assert.equal(stopped.state.exit?.reason, 'poweroff');
    assert.ok(await waitGone(vm.monitorPid), 'monitor exits');
    assert.ok(!isAlive(qemuPid), 'VMM gone');
    for (const s of [vm.files.agentSocket, vm.files.controlSocket, vm.files.muxSocket])
      assert.ok(!existsSync(s), `${s} removed`);
    await assert.rejects(
      execInGuest(agent, { argv: ['echo'] }),
      (e: MicroagentError) => e.code === 'VM_EXITED',
    );
  });

  it('never re-creates its log once it is gone, so stop then rm -r of the folder cannot race it', async () => {
    const vm = await startMonitor('normal');
    await waitState(vm, ['ready']);
    assert.ok(existsSync(vm.files.monitorLog));
    rmSync(vm.files.monitorLog); // as a caller's rm -r would, mid-way
    const stopped = await ctlRequest(
      vm.files.controlSocket,
      { cmd: 'stop', graceMs: 5000 },
      10_000,
    );
    assert.equal(stopped.state.state, 'exited');
    assert.ok(await waitGone(vm.monitorPid), 'monitor exits');
    assert.ok(!existsSync(vm.files.monitorLog), 'monitor.log not re-created after the stop');
    rmSync(vm.ws, { recursive: true }); // no ENOTEMPTY, nothing left in run/
  });

  it('kills a guest that never says HELLO (boot_timeout) and fails waiting clients with BOOT_TIMEOUT', async () => {
    const vm = await startMonitor('nohello', { bootTimeoutMs: 600 });
    await waitState(vm, ['booting']);
    const pending = connectAgent(vm.files.agentSocket, 1, { timeoutMs: 10_000 });
    await assert.rejects(pending, (e: MicroagentError) => {
      assert.equal(e.code, 'BOOT_TIMEOUT');
      assert.match(e.message, /boot_timeout/);
      return true;
    });
    const st = await waitState(vm, ['exited']);
    assert.equal(st.exit?.reason, 'boot_timeout');
    assert.ok(await waitGone(vm.monitorPid));
  });

  it('answers stop with timedOut when the guest ignores POWEROFF, and does not escalate', async () => {
    const vm = await startMonitor('deaf');
    const st = await waitState(vm, ['ready']);
    const r = await ctlRequest(vm.files.controlSocket, { cmd: 'stop', graceMs: 300 }, 5000);
    assert.equal(r.timedOut, true);
    assert.equal(r.state.state, 'stopping');
    assert.ok(isAlive(st.qemuPid!), 'still running');
    const k = await ctlRequest(vm.files.controlSocket, { cmd: 'kill' }, 5000);
    assert.equal(k.state.exit?.reason, 'killed');
    assert.equal(k.state.exit?.signal, 'SIGKILL');
    assert.ok(await waitGone(vm.monitorPid));
  });

  it('writes the guest RESULT to result.json', async () => {
    const vm = await startMonitor('result');
    const st = await waitState(vm, ['exited']);
    assert.equal(st.exit?.reason, 'poweroff');
    const result = JSON.parse(readFileSync(join(vm.ws, 'result.json'), 'utf8')) as {
      exitCode: number;
    };
    assert.equal(result.exitCode, 7);
  });

  it('reports a VMM that fails on its own as vmm_error with its stderr', async () => {
    const vm = await startMonitor('crash');
    const st = await waitState(vm, ['exited']);
    assert.equal(st.exit?.reason, 'vmm_error');
    assert.equal(st.exit?.code, 3);
    assert.match(st.exit?.detail ?? '', /crashing as asked/);
  });

  it('kills the VM and removes the workspace when the owner dies', async () => {
    const owner = spawnDetached([process.execPath, '-e', 'setTimeout(() => {}, 60000)'], {
      stdio: 'ignore',
    });
    started.push(owner.pid!);
    await sleep(50);
    const startTime = procStat(owner.pid!)!.startTime;
    const vm = await startMonitor('normal', {
      owner: { pid: owner.pid!, startTime },
      removeOnOwnerExit: true,
    });
    const st = await waitState(vm, ['ready']);
    owner.kill('SIGKILL');
    assert.ok(await waitGone(vm.monitorPid, 5000), 'monitor exits');
    assert.ok(!isAlive(st.qemuPid!), 'VMM killed');
    assert.ok(!existsSync(vm.ws), 'workspace removed');
  });

  it('treats an owner whose pid was reused (other start time) as gone', async () => {
    const vm = await startMonitor('normal', { owner: { pid: process.pid, startTime: 1 } });
    const st = await waitState(vm, ['exited']);
    assert.equal(st.exit?.reason, 'owner_exit');
    assert.ok(existsSync(vm.ws), 'workspace kept without removeOnOwnerExit');
  });

  it('takes the VMM down with it when the monitor is SIGKILLed (vmm-exec)', async () => {
    const vm = await startMonitor('normal');
    const st = await waitState(vm, ['ready']);
    signalProcess(vm.monitorPid, 'SIGKILL');
    assert.ok(await waitGone(st.qemuPid!, 5000), 'VMM died with its monitor');
  });
});

describe('boot stall window', () => {
  it('defaults to 15 s, can be tuned or turned off, and is off when the boot timeout is too short for a second boot', async () => {
    const { bootStallMs } = await import('../../src/supervisors/qemu/monitor.js');
    assert.equal(bootStallMs(60_000, {}), 15_000);
    assert.equal(bootStallMs(60_000, { MICROAGENT_BOOT_STALL_MS: '3000' }), 3000);
    assert.equal(bootStallMs(60_000, { MICROAGENT_BOOT_STALL_MS: '0' }), undefined);
    assert.equal(bootStallMs(20_000, {}), undefined);
    // garbage falls back to the default rather than disabling the guard
    assert.equal(bootStallMs(60_000, { MICROAGENT_BOOT_STALL_MS: '-5' }), 15_000);
  });
});
