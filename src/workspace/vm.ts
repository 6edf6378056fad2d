/**
 * The seam between workspaces and the backend: turns a workspace into a boot
 * plan (verified kernel, image baseline, private overlay, config disk) and
 * drives the supervisor executable to start, stop and kill its VM.
 */
import { stat } from 'node:fs/promises';
import { prepareBootKernel, type BootKernel } from '../kernel/boot.js';
import { BUILD, type StatePaths, type WorkspacePaths } from '../paths.js';
import { currentProcess } from '../proc/spawn.js';
import { createOverlay, writeConfigDisk } from '../rootfs/disks.js';
import { allSettledOrThrow } from '../util/promises.js';
import { callSupervisor } from '../vmkit/client.js';
import {
  StartResultSchema,
  StatusResultSchema,
  type StartResult,
  type StatusResult,
  type SupervisorRequestInput,
  type VmStatus,
} from '../vmkit/schema.js';
import { errorFromJSON, MicroagentError } from '../errors.js';
import { hostnameFor } from './names.js';
import { guestNetworkConfig, vmNetwork, type NetworkSettings } from './network.js';
import type { Resources } from './profiles.js';
import { resolveImage, type ResolvedImage, type ResolveImageOptions } from './image.js';
import type { Identity, WorkspaceRecord } from './record.js';

export interface BootPlan {
  kernelPath: string;
  initramfsPath: string;
  imageRecord: WorkspaceRecord['image'];
  kernelRecord: WorkspaceRecord['kernel'];
  resources: Resources;
  /** Absent: no NIC. */
  network?: NetworkSettings;
}

/**
 * The image's baseline and the kernel (checked against its manifest;
 * installed on first use) for a new workspace. The two are independent and
 * each reads and hashes files, so they go on side by side; a failure is
 * reported once both have settled, so nothing is left running.
 */
export async function resolveImageAndKernel(
  paths: StatePaths,
  ref: string,
  imageOptions: ResolveImageOptions,
): Promise<{ image: ResolvedImage; kernel: BootKernel }> {
  const [image, kernel] = await allSettledOrThrow([
    resolveImage(paths, ref, imageOptions),
    prepareBootKernel(paths, { autoInstall: true }),
  ]);
  return { image, kernel };
}

/**
 * Writes the workspace's disks (a private copy-on-write overlay on the image
 * baseline and the per-boot config disk) and the plan to boot them with the
 * kernel that resolveImageAndKernel checked.
 */
export async function prepareBoot(
  ws: WorkspacePaths,
  options: {
    name: string;
    image: ResolvedImage;
    env: Record<string, string>;
    resources: Resources;
    network?: NetworkSettings;
    /** The first command's program, read ahead in the guest (GuestConfig.prefetch). */
    prefetch?: string[];
    /** The checked kernel (resolveImageAndKernel). */
    kernel: BootKernel;
  },
): Promise<BootPlan> {
  const { image, kernel } = options;
  const resources = await diskFor(image, options.resources);
  await Promise.all([
    createOverlay(image.baseline, ws.disk, resources.diskMiB * MiB),
    writeBootConfig(
      ws,
      options.name,
      { ...image.defaults.env, ...options.env },
      options.network,
      options.prefetch,
    ),
  ]);
  return {
    kernelPath: kernel.kernelPath,
    initramfsPath: kernel.initramfsPath,
    imageRecord: {
      ref: image.ref,
      ...(image.reference ? { reference: image.reference } : {}),
      ...(image.digest ? { digest: image.digest } : {}),
      key: image.key,
      baseline: image.baseline,
      initSha256: image.initSha256,
      defaults: image.defaults,
    },
    kernelRecord: {
      id: kernel.id,
      version: kernel.version,
      kernelPath: kernel.kernelPath,
      initramfsPath: kernel.initramfsPath,
      kernelSha256: kernel.sha256.kernel,
      initramfsSha256: kernel.sha256.initramfs,
    },
    resources,
    ...(options.network ? { network: options.network } : {}),
  };
}

const MiB = 1024 * 1024;

/**
 * The root disk's size for these resources: the profile's size as a floor
 * (never smaller than the image), or a pinned --disk-size, which the image
 * must fit in.
 */
async function diskFor(image: ResolvedImage, resources: Resources): Promise<Resources> {
  const imageMiB = Math.ceil((await stat(image.baseline)).size / MiB);
  if (resources.diskPinned === true && resources.diskMiB < imageMiB) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `--disk-size ${resources.diskMiB} MiB is smaller than the image's file system (${imageMiB} MiB)`,
      { remediation: `Give --disk-size ${imageMiB}M or more, or leave it out.` },
    );
  }
  return { ...resources, diskMiB: Math.max(resources.diskMiB, imageMiB) };
}

/**
 * Writes the per-boot config disk (hostname, base environment, network,
 * and what to read ahead for the first command).
 */
export async function writeBootConfig(
  ws: WorkspacePaths,
  name: string,
  env: Record<string, string>,
  network?: NetworkSettings,
  prefetch?: string[],
): Promise<void> {
  await writeConfigDisk(ws.configDisk, {
    v: 1,
    workspace: name,
    hostname: hostnameFor(name),
    ...(Object.keys(env).length > 0 ? { env } : {}),
    ...(network ? { network: guestNetworkConfig(network) } : {}),
    ...(prefetch && prefetch.length > 0 ? { prefetch } : {}),
  });
}

export interface StartedVm {
  accel: string;
  accelReason: string;
  monitorPid: number;
  qemuPid: number;
  /**
   * With inProcess: settles when the monitor in this process has finished
   * (the VM is gone and its sockets are closed).
   */
  monitorDone?: Promise<number>;
  /**
   * With inProcess: killVm without the round trip through ctl.sock to a
   * monitor in the same process.
   */
  kill?: () => Promise<void>;
}

export interface StartOptions {
  identity: Identity;
  accel: 'auto' | 'kvm' | 'tcg';
  bootTimeoutMs: number;
  ownerLease: boolean;
  removeOnOwnerExit: boolean;
  /**
   * Host the monitor in this process instead of a detached one (for callers
   * that end the VM before they exit, like `run`): QEMU starts one Node
   * start-up sooner. The VM dies with this process. Ignored when a
   * supervisor executable is asked for (MICROAGENT_QEMU_SUPERVISOR,
   * MICROAGENT_SUPERVISOR_EXEC=1).
   */
  inProcess?: boolean;
}

function useSupervisorExecutable(): boolean {
  return (
    (process.env.MICROAGENT_QEMU_SUPERVISOR !== undefined &&
      process.env.MICROAGENT_QEMU_SUPERVISOR !== '') ||
    process.env.MICROAGENT_SUPERVISOR_EXEC === '1'
  );
}

/** The supervisor executable: pinned to this build, overridable for other backends. */
export function supervisorPath(): string {
  return process.env.MICROAGENT_QEMU_SUPERVISOR || BUILD.qemuSupervisor;
}

/**
 * Sends one request to the backend supervisor. The built-in QEMU supervisor
 * runs in this process (the same code its executable runs: one Node start-up
 * less per start/stop, ~60-100 ms each). A supervisor named by
 * MICROAGENT_QEMU_SUPERVISOR, or MICROAGENT_SUPERVISOR_EXEC=1, goes through
 * the executable and its JSON-in/JSON-out protocol.
 */
async function dispatch(
  request: SupervisorRequestInput & { command: 'start' },
  timeoutMs: number,
): Promise<StartResult>;
async function dispatch(request: SupervisorRequestInput, timeoutMs: number): Promise<StatusResult>;
async function dispatch(
  request: SupervisorRequestInput,
  timeoutMs: number,
): Promise<StartResult | StatusResult> {
  if (useSupervisorExecutable()) {
    return callSupervisor(supervisorPath(), request, { timeoutMs });
  }
  const { handleRequest } = await import('../supervisors/qemu/supervisor.js');
  const { response } = await handleRequest(request);
  if (!response.ok) throw errorFromJSON('supervisor', response.error);
  return request.command === 'start'
    ? StartResultSchema.parse(response)
    : StatusResultSchema.parse(response);
}

function supervisorIdentity(identity: Identity): SupervisorRequestInput['identity'] {
  return { ...identity, backend: 'qemu' };
}

export async function startVm(
  _paths: StatePaths,
  ws: WorkspacePaths,
  plan: BootPlan,
  options: StartOptions,
): Promise<StartedVm> {
  const inProcess = options.inProcess === true && !useSupervisorExecutable();
  const owner = options.ownerLease && !inProcess ? currentProcess() : undefined;
  const request = {
    v: 1,
    command: 'start',
    identity: supervisorIdentity(options.identity),
    config: {
      runtimeDir: ws.runtime,
      workspaceDir: ws.dir,
      kernel: { path: plan.kernelPath, initramfs: plan.initramfsPath },
      disks: [
        { path: ws.disk, format: 'qcow2', readOnly: false, serial: 'ma-root' },
        { path: ws.configDisk, format: 'raw', readOnly: true, serial: 'ma-config' },
      ],
      cpus: plan.resources.cpus,
      memoryMiB: plan.resources.memoryMiB,
      accel: options.accel,
      bootTimeoutMs: options.bootTimeoutMs,
      ...(owner ? { owner } : {}),
      removeOnOwnerExit: options.removeOnOwnerExit,
      ...(plan.network ? { network: vmNetwork(plan.network) } : {}),
    },
  } satisfies SupervisorRequestInput;
  if (inProcess) {
    const { startInProcess } = await import('../supervisors/qemu/supervisor.js');
    const { result, monitor } = await startInProcess(request);
    return {
      accel: result.accel,
      accelReason: result.accelReason,
      monitorPid: result.monitorPid,
      qemuPid: result.qemuPid,
      monitorDone: monitor.done,
      kill: () => monitor.killAndWait(),
    };
  }
  const response = await dispatch(request, 30_000);
  return {
    accel: response.accel,
    accelReason: response.accelReason,
    monitorPid: response.monitorPid,
    qemuPid: response.qemuPid,
  };
}

/**
 * Asks the guest to power off and waits up to graceMs. Never escalates:
 * `timedOut` says the VM was still running when the time ran out.
 */
export async function stopVm(
  ws: WorkspacePaths,
  identity: Identity,
  graceMs: number,
): Promise<{ timedOut: boolean }> {
  const response = await dispatch(
    {
      v: 1,
      command: 'stop',
      identity: supervisorIdentity(identity),
      runtimeDir: ws.runtime,
      graceMs,
    },
    graceMs + 15_000,
  );
  return { timedOut: response.timedOut === true };
}

/** Hard stop (SIGKILL of the VMM); returns when it is gone. */
export async function killVm(ws: WorkspacePaths, identity: Identity): Promise<void> {
  await dispatch(
    { v: 1, command: 'kill', identity: supervisorIdentity(identity), runtimeDir: ws.runtime },
    20_000,
  );
}

export async function pauseVm(ws: WorkspacePaths, identity: Identity): Promise<void> {
  await dispatch(
    { v: 1, command: 'pause', identity: supervisorIdentity(identity), runtimeDir: ws.runtime },
    20_000,
  );
}

export async function resumeVm(ws: WorkspacePaths, identity: Identity): Promise<void> {
  await dispatch(
    { v: 1, command: 'resume', identity: supervisorIdentity(identity), runtimeDir: ws.runtime },
    20_000,
  );
}

/** The VM's status as the supervisor sees it (it also reaps an orphaned VMM). */
export async function statusVm(ws: WorkspacePaths, identity: Identity): Promise<VmStatus | null> {
  const response = await dispatch(
    { v: 1, command: 'status', identity: supervisorIdentity(identity), runtimeDir: ws.runtime },
    20_000,
  );
  return response.status;
}

/** Waits until the VM has exited (or timeoutMs passed: timedOut). */
export async function waitVm(
  ws: WorkspacePaths,
  identity: Identity,
  timeoutMs?: number,
): Promise<{ timedOut: boolean; status: VmStatus | null }> {
  const response = await dispatch(
    {
      v: 1,
      command: 'wait',
      identity: supervisorIdentity(identity),
      runtimeDir: ws.runtime,
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    },
    (timeoutMs ?? 86_400_000) + 15_000,
  );
  return { timedOut: response.timedOut === true, status: response.status };
}
