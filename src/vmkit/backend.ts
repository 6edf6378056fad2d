/**
 * The seam between workspaces and a VMM (ARCHITECTURE D3): what the
 * workspace layer may ask of a backend, and nothing it needs to know about
 * how. A backend starts a VM from a neutral StartConfig, stops, kills,
 * pauses and resumes it, reports and waits for its status, and names the
 * two files of its runtime folder a caller reads: the guest channel
 * (`agent.sock`, hybrid-vsock semantics for every backend) and the
 * console log. Snapshot and restore join here next.
 *
 * `SupervisorBackend` implements it over the supervisor protocol
 * (docs/supervisor-protocol.md) with a pluggable transport: the supervisor
 * executable (one JSON request in, one out, any language), or a
 * supervisor's request handler called in this process.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  StartResultSchema,
  StatusResultSchema,
  VmStatusSchema,
  type Identity,
  type StartConfigInput,
  type StartResult,
  type StatusResult,
  type SupervisorRequestInput,
  type VmStatus,
} from './schema.js';

/** One VM, named by its runtime folder, and who asks. */
export interface VmTarget {
  runtimeDir: string;
  identity: Omit<Identity, 'backend'>;
}

export interface StartedVm {
  accel: string;
  accelReason: string;
  monitorPid: number;
  qemuPid: number;
  /** With a VM hosted in this process: settles when its monitor has finished. */
  monitorDone?: Promise<number>;
  /** With a VM hosted in this process: kills it without a control round trip. */
  kill?: () => Promise<void>;
}

export interface VmBackend {
  /** The backend's name in identities and records (`qemu`). */
  readonly name: 'qemu';
  /** Whether start({ inProcess: true }) hosts the VM's monitor in this process. */
  readonly hostsInProcess: boolean;
  /**
   * Starts a VM; resolves when its VMM is up (not when the guest is ready:
   * the guest channel answers then). `inProcess` hosts the VM's monitor in
   * this process where the backend can (the VM then dies with it).
   */
  start(
    target: VmTarget,
    config: StartConfigInput,
    options?: { inProcess?: boolean },
  ): Promise<StartedVm>;
  /** Asks the guest to power off, waiting up to graceMs; never escalates. */
  stop(target: VmTarget, graceMs: number): Promise<{ timedOut: boolean }>;
  /** Hard stop; resolves when the VMM is gone. */
  kill(target: VmTarget): Promise<void>;
  pause(target: VmTarget): Promise<void>;
  resume(target: VmTarget): Promise<void>;
  /** The VM's status as its supervisor sees it (reconciled: a dead monitor is `exited`). */
  status(target: VmTarget): Promise<VmStatus | null>;
  /** Waits until the VM has exited, or timeoutMs passed. */
  wait(
    target: VmTarget,
    timeoutMs?: number,
  ): Promise<{ timedOut: boolean; status: VmStatus | null }>;
  /**
   * The status the VM's monitor last recorded, read without asking anyone
   * (cheap enough for every listing); undefined when there is none.
   */
  lastStatus(runtimeDir: string): Promise<VmStatus | undefined>;
  /** The hybrid-vsock endpoint of the guest channel. */
  agentSocket(runtimeDir: string): string;
  /** The guest console's log (the current or last boot). */
  consoleLog(runtimeDir: string): string;
}

/** Sends one supervisor request and returns its (validated) result. */
export type SupervisorTransport = (
  request: SupervisorRequestInput,
  timeoutMs: number,
) => Promise<StartResult | StatusResult>;

/** A host that can run a VM's monitor in this process (the QEMU supervisor can). */
export type InProcessStarter = (
  request: SupervisorRequestInput & { command: 'start' },
) => Promise<StartedVm>;

/** A VmBackend that speaks the supervisor protocol over a transport. */
export class SupervisorBackend implements VmBackend {
  readonly name = 'qemu' as const;
  readonly hostsInProcess: boolean;

  constructor(
    private readonly transport: SupervisorTransport,
    private readonly inProcess?: InProcessStarter,
  ) {
    this.hostsInProcess = inProcess !== undefined;
  }

  private id(target: VmTarget): SupervisorRequestInput['identity'] {
    return { ...target.identity, backend: this.name };
  }

  private async statusRequest(
    request: SupervisorRequestInput,
    timeoutMs: number,
  ): Promise<StatusResult> {
    return StatusResultSchema.parse(await this.transport(request, timeoutMs));
  }

  async start(
    target: VmTarget,
    config: StartConfigInput,
    options: { inProcess?: boolean } = {},
  ): Promise<StartedVm> {
    const request = {
      v: 1,
      command: 'start',
      identity: this.id(target),
      config: { ...config, runtimeDir: target.runtimeDir },
    } satisfies SupervisorRequestInput;
    if (options.inProcess === true && this.inProcess) return this.inProcess(request);
    const r = StartResultSchema.parse(await this.transport(request, 30_000));
    return {
      accel: r.accel,
      accelReason: r.accelReason,
      monitorPid: r.monitorPid,
      qemuPid: r.qemuPid,
    };
  }

  async stop(target: VmTarget, graceMs: number): Promise<{ timedOut: boolean }> {
    const r = await this.statusRequest(
      { v: 1, command: 'stop', identity: this.id(target), runtimeDir: target.runtimeDir, graceMs },
      graceMs + 15_000,
    );
    return { timedOut: r.timedOut === true };
  }

  async kill(target: VmTarget): Promise<void> {
    await this.statusRequest(
      { v: 1, command: 'kill', identity: this.id(target), runtimeDir: target.runtimeDir },
      20_000,
    );
  }

  async pause(target: VmTarget): Promise<void> {
    await this.statusRequest(
      { v: 1, command: 'pause', identity: this.id(target), runtimeDir: target.runtimeDir },
      20_000,
    );
  }

  async resume(target: VmTarget): Promise<void> {
    await this.statusRequest(
      { v: 1, command: 'resume', identity: this.id(target), runtimeDir: target.runtimeDir },
      20_000,
    );
  }

  async status(target: VmTarget): Promise<VmStatus | null> {
    const r = await this.statusRequest(
      { v: 1, command: 'status', identity: this.id(target), runtimeDir: target.runtimeDir },
      20_000,
    );
    return r.status;
  }

  async wait(
    target: VmTarget,
    timeoutMs?: number,
  ): Promise<{ timedOut: boolean; status: VmStatus | null }> {
    const r = await this.statusRequest(
      {
        v: 1,
        command: 'wait',
        identity: this.id(target),
        runtimeDir: target.runtimeDir,
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      },
      (timeoutMs ?? 86_400_000) + 15_000,
    );
    return { timedOut: r.timedOut === true, status: r.status };
  }

  /** Every supervisor keeps `monitor.json` in the runtime folder (supervisor-protocol.md). */
  async lastStatus(runtimeDir: string): Promise<VmStatus | undefined> {
    try {
      return VmStatusSchema.parse(
        JSON.parse(await readFile(join(runtimeDir, 'monitor.json'), 'utf8')),
      );
    } catch {
      return undefined;
    }
  }

  agentSocket(runtimeDir: string): string {
    return join(runtimeDir, 'agent.sock');
  }

  consoleLog(runtimeDir: string): string {
    return join(runtimeDir, 'serial.log');
  }
}
