/**
 * The seam between workspaces and the backend: turns a workspace into a boot
 * plan (verified kernel, image baseline, private overlay, config disk) and
 * drives the supervisor executable to start, stop and kill its VM.
 */
import { stat } from 'node:fs/promises';
import { prepareBootKernel, type BootKernel } from '../kernel/boot.js';
import type { StatePaths, WorkspacePaths } from '../paths.js';
import { currentProcess } from '../proc/spawn.js';
import { createOverlay, writeConfigDisk } from '../rootfs/disks.js';
import { allSettledOrThrow } from '../util/promises.js';
import type { StartedVm } from '../vmkit/backend.js';
import type { VmStatus } from '../vmkit/schema.js';
import { MicroagentError } from '../errors.js';
import { vmBackend } from './backend.js';
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

export type { StartedVm } from '../vmkit/backend.js';

export interface StartOptions {
  identity: Identity;
  accel: 'auto' | 'kvm' | 'tcg';
  bootTimeoutMs: number;
  ownerLease: boolean;
  removeOnOwnerExit: boolean;
  /**
   * Host the monitor in this process instead of a detached one (for callers
   * that end the VM before they exit, like `run`): QEMU starts one Node
   * start-up sooner. The VM dies with this process. Ignored by a backend
   * that cannot (a supervisor executable).
   */
  inProcess?: boolean;
}

export { supervisorPath } from './backend.js';

export async function startVm(
  _paths: StatePaths,
  ws: WorkspacePaths,
  plan: BootPlan,
  options: StartOptions,
): Promise<StartedVm> {
  const backend = vmBackend();
  const inProcess = options.inProcess === true && backend.hostsInProcess;
  const owner = options.ownerLease && !inProcess ? currentProcess() : undefined;
  return backend.start(
    { runtimeDir: ws.runtime, identity: options.identity },
    {
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
    { inProcess },
  );
}

const target = (ws: WorkspacePaths, identity: Identity) => ({ runtimeDir: ws.runtime, identity });

/**
 * Asks the guest to power off and waits up to graceMs. Never escalates:
 * `timedOut` says the VM was still running when the time ran out.
 */
export function stopVm(
  ws: WorkspacePaths,
  identity: Identity,
  graceMs: number,
): Promise<{ timedOut: boolean }> {
  return vmBackend().stop(target(ws, identity), graceMs);
}

/** Hard stop (SIGKILL of the VMM); returns when it is gone. */
export function killVm(ws: WorkspacePaths, identity: Identity): Promise<void> {
  return vmBackend().kill(target(ws, identity));
}

export function pauseVm(ws: WorkspacePaths, identity: Identity): Promise<void> {
  return vmBackend().pause(target(ws, identity));
}

export function resumeVm(ws: WorkspacePaths, identity: Identity): Promise<void> {
  return vmBackend().resume(target(ws, identity));
}

/** The VM's status as the supervisor sees it (it also reaps an orphaned VMM). */
export function statusVm(ws: WorkspacePaths, identity: Identity): Promise<VmStatus | null> {
  return vmBackend().status(target(ws, identity));
}

/** Waits until the VM has exited (or timeoutMs passed: timedOut). */
export function waitVm(
  ws: WorkspacePaths,
  identity: Identity,
  timeoutMs?: number,
): Promise<{ timedOut: boolean; status: VmStatus | null }> {
  return vmBackend().wait(target(ws, identity), timeoutMs);
}
