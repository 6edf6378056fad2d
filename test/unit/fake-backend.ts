/**
 * A VmBackend in memory, for the workspace layer's unit tests: VMs are
 * entries in a map whose status the test drives (it can make a VM crash,
 * hang on stop, or power off). Nothing is spawned; the "monitor" is this
 * process, named by its real pid and start time so liveness checks pass.
 */
import type { StartedVm, VmBackend, VmTarget } from '../../src/vmkit/backend.js';
import type { StartConfigInput, VmStatus } from '../../src/vmkit/schema.js';
import { currentProcess } from '../../src/proc/spawn.js';

export interface FakeVm {
  config: StartConfigInput;
  status: VmStatus;
  /** stop() leaves the VM running (a guest that ignores power-off). */
  ignoresStop?: boolean;
}

export class FakeBackend implements VmBackend {
  readonly name = 'qemu' as const;
  readonly hostsInProcess = false;
  readonly vms = new Map<string, FakeVm>();
  readonly calls: string[] = [];

  private vm(target: VmTarget): FakeVm {
    const vm = this.vms.get(target.runtimeDir);
    if (!vm) throw new Error(`fake: no VM at ${target.runtimeDir}`);
    return vm;
  }

  /** Ends a VM as QEMU would report it. */
  exit(runtimeDir: string, reason: NonNullable<VmStatus['exit']>['reason'], detail?: string): void {
    const vm = this.vms.get(runtimeDir);
    if (!vm) return;
    vm.status = {
      ...vm.status,
      state: 'exited',
      exit: { code: null, signal: null, reason, ...(detail ? { detail } : {}), at: Date.now() },
    };
  }

  async start(target: VmTarget, config: StartConfigInput): Promise<StartedVm> {
    this.calls.push(`start ${target.identity.runtimeId}`);
    const me = currentProcess();
    this.vms.set(target.runtimeDir, {
      config,
      status: {
        v: 1,
        runtimeId: target.identity.runtimeId,
        monitorPid: me.pid,
        monitorStartTime: me.startTime,
        qemuPid: me.pid,
        state: 'ready',
        accel: 'tcg',
        accelReason: 'fake',
        startedAt: Date.now(),
        readyAt: Date.now(),
      },
    });
    return { accel: 'tcg', accelReason: 'fake', monitorPid: me.pid, qemuPid: me.pid };
  }

  async stop(target: VmTarget): Promise<{ timedOut: boolean }> {
    this.calls.push(`stop ${target.identity.runtimeId}`);
    const vm = this.vm(target);
    if (vm.ignoresStop) return { timedOut: true };
    this.exit(target.runtimeDir, 'poweroff');
    return { timedOut: false };
  }

  async kill(target: VmTarget): Promise<void> {
    this.calls.push(`kill ${target.identity.runtimeId}`);
    if (this.vms.has(target.runtimeDir)) this.exit(target.runtimeDir, 'killed');
  }

  async pause(target: VmTarget): Promise<void> {
    this.calls.push(`pause ${target.identity.runtimeId}`);
    this.vm(target).status.state = 'paused';
  }

  async resume(target: VmTarget): Promise<void> {
    this.calls.push(`resume ${target.identity.runtimeId}`);
    this.vm(target).status.state = 'ready';
  }

  async status(target: VmTarget): Promise<VmStatus | null> {
    return this.vms.get(target.runtimeDir)?.status ?? null;
  }

  async wait(target: VmTarget): Promise<{ timedOut: boolean; status: VmStatus | null }> {
    return { timedOut: false, status: await this.status(target) };
  }

  async lastStatus(runtimeDir: string): Promise<VmStatus | undefined> {
    const s = this.vms.get(runtimeDir)?.status;
    return s ? structuredClone(s) : undefined;
  }

  agentSocket(runtimeDir: string): string {
    return `${runtimeDir}/agent.sock`;
  }

  consoleLog(runtimeDir: string): string {
    return `${runtimeDir}/serial.log`;
  }
}
