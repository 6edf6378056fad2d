/**
 * The workspace lifecycle over a fake VmBackend: the transitions, the
 * reconciliation of a record with its VM, and which backend calls each
 * operation makes. (Booting real VMs is the e2e suites' job.)
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { MicroagentError } from '../../src/errors.js';
import { StatePaths } from '../../src/paths.js';
import { setVmBackend } from '../../src/workspace/backend.js';
import {
  deleteWorkspace,
  haltWorkspace,
  killWorkspace,
  pauseWorkspace,
  resumeWorkspace,
  stopWorkspace,
} from '../../src/workspace/lifecycle.js';
import { newIdentity, writeRecord, type WorkspaceRecord } from '../../src/workspace/record.js';
import { loadWorkspace } from '../../src/workspace/store.js';
import { listWorkspaceSummaries } from '../../src/workspace/views.js';
import { FakeBackend } from './fake-backend.js';

describe('lifecycle over a fake backend', () => {
  let stateDir: string;
  let paths: StatePaths;
  let fake: FakeBackend;
  let n = 0;

  before(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'ma-lifecycle-'));
    paths = new StatePaths(stateDir);
  });
  after(async () => {
    setVmBackend(undefined);
    await rm(stateDir, { recursive: true, force: true });
  });
  beforeEach(() => {
    fake = new FakeBackend();
    setVmBackend(fake);
  });

  /** A workspace whose record says `running`, with a VM in the fake. */
  async function running(): Promise<string> {
    const name = `w${n++}`;
    const ws = paths.workspace(name);
    const now = new Date().toISOString();
    const record: WorkspaceRecord = {
      v: 1,
      name,
      createdAt: now,
      updatedAt: now,
      state: 'running',
      ephemeral: false,
      identity: newIdentity(name),
      image: { ref: 'default', key: 'k', baseline: '/nonexistent', initSha256: 'x' },
      kernel: {
        id: 'fake',
        version: '0',
        kernelPath: '/k',
        initramfsPath: '/i',
        kernelSha256: 'x',
        initramfsSha256: 'x',
      },
      resources: { profile: 'small', cpus: 2, memoryMiB: 512, diskMiB: 1024 },
      env: {},
    };
    await mkdir(ws.dir, { recursive: true, mode: 0o700 });
    await writeRecord(ws, record);
    await fake.start(
      { runtimeDir: ws.runtime, identity: record.identity },
      {
        runtimeDir: ws.runtime,
        workspaceDir: ws.dir,
        kernel: { path: '/k' },
        disks: [],
        cpus: 2,
        memoryMiB: 512,
        bootTimeoutMs: 1000,
      },
    );
    return name;
  }

  const stateOf = async (name: string): Promise<string> =>
    (await loadWorkspace(paths, name)).record.state;

  it('halt powers the guest off and records halted', async () => {
    const name = await running();
    assert.equal((await haltWorkspace({ stateDir, name })).state, 'halted');
    assert.deepEqual(fake.calls.slice(-1), [`stop ${name}`]);
    assert.equal(await stateOf(name), 'halted');
  });

  it('halt kills a guest that does not power off, and records failed', async () => {
    const name = await running();
    const vm = fake.vms.get(paths.workspace(name).runtime);
    assert.ok(vm);
    vm.ignoresStop = true;
    const r = await haltWorkspace({ stateDir, name });
    assert.equal(r.state, 'failed');
    assert.deepEqual(fake.calls.slice(-2), [`stop ${name}`, `kill ${name}`]);
  });

  it('stop that times out leaves the VM running and reports STOP_TIMEOUT', async () => {
    const name = await running();
    const vm = fake.vms.get(paths.workspace(name).runtime);
    assert.ok(vm);
    vm.ignoresStop = true;
    await assert.rejects(
      stopWorkspace({ stateDir, name }),
      (e: MicroagentError) => e.code === 'STOP_TIMEOUT',
    );
    assert.ok(!fake.calls.includes(`kill ${name}`), 'stop never escalates');
  });

  it('pause and resume go to the backend and show in the reconciled state', async () => {
    const name = await running();
    assert.equal((await pauseWorkspace({ stateDir, name })).state, 'paused');
    assert.equal(await stateOf(name), 'paused');
    await assert.rejects(
      pauseWorkspace({ stateDir, name }),
      (e: MicroagentError) => e.code === 'WORKSPACE_PAUSED',
    );
    assert.equal((await resumeWorkspace({ stateDir, name })).state, 'running');
    assert.deepEqual(fake.calls.slice(-2), [`pause ${name}`, `resume ${name}`]);
  });

  it('a VM that dies behind the record shows as failed with the reason; one that powers off as halted', async () => {
    const crashed = await running();
    fake.exit(paths.workspace(crashed).runtime, 'guest_panic_or_reset', 'kernel panic');
    const { record } = await loadWorkspace(paths, crashed);
    assert.equal(record.state, 'failed');
    assert.match(record.stateDetail ?? '', /guest_panic_or_reset: kernel panic/);
    const off = await running();
    fake.exit(paths.workspace(off).runtime, 'poweroff');
    assert.equal(await stateOf(off), 'halted');
    const rows = await listWorkspaceSummaries({ stateDir });
    assert.equal(rows.find((r) => r.name === crashed)?.state, 'failed');
  });

  it('kill ends the VM; delete refuses a running workspace and removes a stopped one', async () => {
    const name = await running();
    await assert.rejects(
      deleteWorkspace({ stateDir, name }),
      (e: MicroagentError) => e.code === 'WORKSPACE_RUNNING',
    );
    await killWorkspace({ stateDir, name });
    assert.deepEqual(fake.calls.slice(-1), [`kill ${name}`]);
    assert.notEqual(await stateOf(name), 'running');
    await deleteWorkspace({ stateDir, name });
    await assert.rejects(
      loadWorkspace(paths, name),
      (e: MicroagentError) => e.code === 'WORKSPACE_NOT_FOUND',
    );
  });
});
