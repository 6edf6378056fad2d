/**
 * Supervisor request validation (src/vmkit/schema.ts) and the executable's
 * answers to bad requests.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BUILD } from '../../src/paths.js';
import { callSupervisor } from '../../src/vmkit/client.js';
import { SupervisorRequestSchema } from '../../src/vmkit/schema.js';
import { handleRequest } from '../../src/supervisors/qemu/supervisor.js';
import { MicroagentError } from '../../src/errors.js';

const identity = { requestId: 'r1', runtimeId: 'rt1', role: 'test', backend: 'qemu' as const };
const config = {
  runtimeDir: '/tmp/x/run',
  workspaceDir: '/tmp/x',
  kernel: { path: '/k/vmlinux' },
  disks: [{ path: '/tmp/x/root.qcow2', format: 'qcow2', readOnly: false, serial: 'ma-root' }],
  cpus: 1,
  memoryMiB: 256,
  bootTimeoutMs: 30000,
};

describe('supervisor request schema', () => {
  it('accepts a start request and fills defaults', () => {
    const r = SupervisorRequestSchema.parse({ v: 1, command: 'start', identity, config });
    assert.equal(r.command, 'start');
    if (r.command === 'start') {
      assert.equal(r.config.accel, 'auto');
      assert.equal(r.config.removeOnOwnerExit, false);
    }
  });

  it('rejects unknown fields at every level', () => {
    assert.throws(() =>
      SupervisorRequestSchema.parse({ v: 1, command: 'start', identity, config, extra: 1 }),
    );
    assert.throws(() =>
      SupervisorRequestSchema.parse({
        v: 1,
        command: 'start',
        identity,
        config: { ...config, x: 1 },
      }),
    );
    assert.throws(() =>
      SupervisorRequestSchema.parse({
        v: 1,
        command: 'start',
        identity: { ...identity, x: 1 },
        config,
      }),
    );
    assert.throws(() =>
      SupervisorRequestSchema.parse({
        v: 1,
        command: 'start',
        identity,
        config: { ...config, kernel: { path: '/k', x: 1 } },
      }),
    );
  });

  it('rejects relative paths, bad serials, wrong versions and unknown commands', () => {
    assert.throws(() =>
      SupervisorRequestSchema.parse({
        v: 1,
        command: 'start',
        identity,
        config: { ...config, runtimeDir: 'run' },
      }),
    );
    assert.throws(() =>
      SupervisorRequestSchema.parse({
        v: 1,
        command: 'start',
        identity,
        config: { ...config, disks: [{ ...config.disks[0], serial: 'has space' }] },
      }),
    );
    assert.throws(() =>
      SupervisorRequestSchema.parse({ v: 2, command: 'status', identity, runtimeDir: '/r' }),
    );
    assert.throws(() =>
      SupervisorRequestSchema.parse({ v: 1, command: 'reboot', identity, runtimeDir: '/r' }),
    );
  });

  it('gives stop a default grace period', () => {
    const r = SupervisorRequestSchema.parse({ v: 1, command: 'stop', identity, runtimeDir: '/r' });
    assert.equal(r.command === 'stop' && r.graceMs, 10000);
  });
});

describe('supervisor executable', () => {
  it('answers an invalid request with ok:false, INVALID_ARGUMENT and exit code 2', async () => {
    const out = await handleRequest({
      v: 1,
      command: 'start',
      identity,
      config: { ...config, cpus: 0 },
    });
    assert.equal(out.exitCode, 2);
    assert.equal(out.response.ok, false);
    if (!out.response.ok) {
      assert.equal(out.response.error.code, 'INVALID_ARGUMENT');
      assert.match(out.response.error.message, /config\.cpus/);
    }
  });

  it('fails start with exit code 1 when the kernel does not exist', async () => {
    const out = await handleRequest({ v: 1, command: 'start', identity, config });
    assert.equal(out.exitCode, 1);
    assert.ok(!out.response.ok && /kernel \/k\/vmlinux/.test(out.response.error.message));
  });

  it('reports a never-started runtime dir as status null through the real executable', async () => {
    const r = await callSupervisor(BUILD.qemuSupervisor, {
      v: 1,
      command: 'status',
      identity,
      runtimeDir: '/nonexistent/run',
    });
    assert.equal(r.ok, true);
    assert.equal(r.status, null);
  });

  it('turns an ok:false answer into a typed RemoteError from the supervisor', async () => {
    await assert.rejects(
      callSupervisor(BUILD.qemuSupervisor, {
        v: 1,
        command: 'pause',
        identity,
        runtimeDir: '/nonexistent/run',
      }),
      (e: MicroagentError & { origin?: string }) => {
        assert.equal(e.code, 'VM_NOT_RUNNING');
        assert.equal(e.origin, 'supervisor');
        return true;
      },
    );
  });
});
