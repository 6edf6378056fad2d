/**
 * The QEMU supervisor + monitor against real QEMU (TCG here) and the Debian
 * kernel, booted with no root file system: the kernel panics (no init) and
 * QEMU exits, or — with panic=0 on the command line — hangs forever after
 * the panic, which gives a long-lived VM without a guest init.
 *
 * The kernel is the Debian cloud kernel's bzImage (test/support/kernel-deb.ts,
 * from apt's cache or the archive), or MICROAGENT_TEST_KERNEL.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MicroagentError } from '../../src/errors.js';
import { connectAgent } from '../../src/guest/agent-client.js';
import { BUILD } from '../../src/paths.js';
import { isAlive, procStat, signalProcess, sleep, spawnDetached } from '../../src/proc/spawn.js';
import { callSupervisor } from '../../src/vmkit/client.js';
import type { StartConfigInput } from '../../src/vmkit/schema.js';
import { killProcessesMentioning, waitNoProcesses } from '../helpers.js';
import { HAVE_APT, kernelDeb } from '../support/kernel-deb.js';

let KERNEL = process.env.MICROAGENT_TEST_KERNEL ?? '';
const missing = [BUILD.vmmExec, '/usr/bin/qemu-system-x86_64'].filter((p) => !existsSync(p));
const skip = !HAVE_APT
  ? 'host capability: Debian apt (for the kernel package)'
  : missing.length > 0
    ? `needs ${missing.join(', ')}`
    : false;

const root = mkdtempSync(join(tmpdir(), 'ma-qemu-'));
const extraPids: number[] = [];
let n = 0;

after(async () => {
  for (const pid of extraPids) signalProcess(pid, 'SIGKILL');
  killProcessesMentioning(root);
  await waitNoProcesses(root, 5000);
  rmSync(root, { recursive: true, force: true });
});

const identity = (): { requestId: string; runtimeId: string; role: string; backend: 'qemu' } => ({
  requestId: `req-${n}`,
  runtimeId: `rt-${n}`,
  role: 'test',
  backend: 'qemu',
});

function config(extra: Partial<StartConfigInput> = {}): StartConfigInput {
  const ws = join(root, `w${n++}`);
  return {
    runtimeDir: join(ws, 'run'),
    workspaceDir: ws,
    kernel: { path: KERNEL },
    disks: [],
    cpus: 1,
    memoryMiB: 256,
    bootTimeoutMs: 60_000,
    ...extra,
  };
}

function status(runtimeDir: string) {
  return callSupervisor(BUILD.qemuSupervisor, {
    v: 1,
    command: 'status',
    identity: identity(),
    runtimeDir,
  });
}

describe('qemu supervisor + monitor with a real kernel', { skip }, () => {
  before(async () => {
    if (KERNEL === '') KERNEL = (await kernelDeb()).bzImage;
  });

  it('reports a kernel panic as BOOT_FAILED with the console tail, and leaves no process', async () => {
    const c = config();
    const t0 = Date.now();
    const started = await callSupervisor(BUILD.qemuSupervisor, {
      v: 1,
      command: 'start',
      identity: identity(),
      config: c,
    });
    const startMs = Date.now() - t0;
    assert.equal(started.accel, 'tcg');
    assert.ok(started.qemuPid > 0);
    assert.equal(started.status.state, 'booting');
    process.stderr.write(`# supervisor start → QEMU up: ${startMs} ms\n`);

    await assert.rejects(
      connectAgent(join(c.runtimeDir, 'agent.sock'), 1, { timeoutMs: 60_000 }),
      (e: MicroagentError) => {
        assert.equal(e.code, 'BOOT_FAILED');
        assert.match(e.message, /guest_panic_or_reset/);
        assert.match(e.message, /Kernel panic/);
        assert.match(String(e.data.consoleTail), /Unable to mount root fs/);
        return true;
      },
    );
    const st = await status(c.runtimeDir);
    assert.equal(st.status?.state, 'exited');
    assert.equal(st.status?.exit?.reason, 'guest_panic_or_reset');
    assert.deepEqual(await waitNoProcesses(c.runtimeDir, 5000), []);
  });

  it('kills QEMU when the guest is not ready within bootTimeoutMs', async () => {
    const c = config({ bootTimeoutMs: 400 });
    await callSupervisor(BUILD.qemuSupervisor, {
      v: 1,
      command: 'start',
      identity: identity(),
      config: c,
    });
    await assert.rejects(
      connectAgent(join(c.runtimeDir, 'agent.sock'), 1),
      (e: MicroagentError) => e.code === 'BOOT_TIMEOUT' && e.retryable,
    );
    const w = await callSupervisor(BUILD.qemuSupervisor, {
      v: 1,
      command: 'wait',
      identity: identity(),
      runtimeDir: c.runtimeDir,
      timeoutMs: 10_000,
    });
    assert.equal(w.status?.exit?.reason, 'boot_timeout');
    assert.deepEqual(await waitNoProcesses(c.runtimeDir, 5000), []);
  });

  it('pauses, resumes, stops without escalating, then kills (panic=0 keeps the VM up)', async () => {
    const c = config({ kernel: { path: KERNEL, cmdline: ['panic=0'] } });
    const s = await callSupervisor(BUILD.qemuSupervisor, {
      v: 1,
      command: 'start',
      identity: identity(),
      config: c,
    });
    const base = { v: 1 as const, identity: identity(), runtimeDir: c.runtimeDir };
    const p = await callSupervisor(BUILD.qemuSupervisor, { ...base, command: 'pause' });
    assert.equal(p.status?.state, 'paused');
    const r = await callSupervisor(BUILD.qemuSupervisor, { ...base, command: 'resume' });
    assert.equal(r.status?.state, 'booting');
    const stop = await callSupervisor(BUILD.qemuSupervisor, {
      ...base,
      command: 'stop',
      graceMs: 300,
    });
    assert.equal(stop.timedOut, true);
    assert.ok(isAlive(s.qemuPid), 'stop does not escalate');
    const k = await callSupervisor(BUILD.qemuSupervisor, { ...base, command: 'kill' });
    assert.equal(k.status?.exit?.reason, 'killed');
    assert.deepEqual(await waitNoProcesses(c.runtimeDir, 5000), []);
  });

  it('takes QEMU down when the monitor is SIGKILLed; status then says monitor_lost', async () => {
    const c = config({ kernel: { path: KERNEL, cmdline: ['panic=0'] } });
    const s = await callSupervisor(BUILD.qemuSupervisor, {
      v: 1,
      command: 'start',
      identity: identity(),
      config: c,
    });
    signalProcess(s.monitorPid, 'SIGKILL');
    for (let i = 0; i < 250 && isAlive(s.qemuPid); i++) await sleep(20);
    assert.ok(!isAlive(s.qemuPid), 'QEMU died with its monitor (PR_SET_PDEATHSIG)');
    const st = await status(c.runtimeDir);
    assert.equal(st.reconciled, true);
    assert.equal(st.status?.state, 'exited');
    assert.equal(st.status?.exit?.reason, 'monitor_lost');
    assert.deepEqual(await waitNoProcesses(c.runtimeDir, 5000), []);
  });

  it('kills QEMU and deletes the workspace when the owner process dies', async () => {
    const owner = spawnDetached([process.execPath, '-e', 'setTimeout(() => {}, 120000)'], {
      stdio: 'ignore',
    });
    extraPids.push(owner.pid!);
    await sleep(50);
    const c = config({
      kernel: { path: KERNEL, cmdline: ['panic=0'] },
      owner: { pid: owner.pid!, startTime: procStat(owner.pid!)!.startTime },
      removeOnOwnerExit: true,
    });
    const s = await callSupervisor(BUILD.qemuSupervisor, {
      v: 1,
      command: 'start',
      identity: identity(),
      config: c,
    });
    owner.kill('SIGKILL');
    for (let i = 0; i < 250 && (isAlive(s.qemuPid) || existsSync(c.workspaceDir)); i++)
      await sleep(20);
    assert.ok(!isAlive(s.qemuPid), 'QEMU killed');
    assert.ok(!existsSync(c.workspaceDir), 'workspace removed');
    assert.deepEqual(await waitNoProcesses(c.runtimeDir, 5000), []);
  });

  it('refuses a second start while the VM runs, and reports a bad QEMU option as VMM_START_FAILED', async () => {
    const c = config({ kernel: { path: KERNEL, cmdline: ['panic=0'] } });
    await callSupervisor(BUILD.qemuSupervisor, {
      v: 1,
      command: 'start',
      identity: identity(),
      config: c,
    });
    await assert.rejects(
      callSupervisor(BUILD.qemuSupervisor, {
        v: 1,
        command: 'start',
        identity: identity(),
        config: c,
      }),
      (e: MicroagentError) => e.code === 'VM_RUNNING',
    );
    await callSupervisor(BUILD.qemuSupervisor, {
      v: 1,
      command: 'kill',
      identity: identity(),
      runtimeDir: c.runtimeDir,
    });

    const bad = config({ memoryMiB: 1024 * 1024 }); // 1 TiB: QEMU refuses to allocate it
    await assert.rejects(
      callSupervisor(BUILD.qemuSupervisor, {
        v: 1,
        command: 'start',
        identity: identity(),
        config: bad,
      }),
      (e: MicroagentError) => {
        assert.equal(e.code, 'VMM_START_FAILED');
        return true;
      },
    );
    assert.deepEqual(await waitNoProcesses(root + '/w', 5000), []);
  });
});
