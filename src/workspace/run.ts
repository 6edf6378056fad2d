/**
 * `run`: boot a workspace on an image, run one command in it, stream its
 * output, and tear everything down (or keep the workspace halted with
 * `keep`). Nothing is left behind on failure. The VM's monitor runs in
 * this process: the VM dies with it (PDEATHSIG), and a janitor deletes a
 * throwaway workspace's folder if this process dies first.
 */
import { rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { MicroagentError, toMicroagentError } from '../errors.js';
import { execInGuest } from '../guest/exec-client.js';
import { PrefetchEntrySchema, type ExecExit } from '../guest/protocol.js';
import { StatePaths } from '../paths.js';
import { writeJsonAtomic } from '../util/fs.js';
import { generateRunName, validateWorkspaceName } from './names.js';
import { resolveResources, type Resources } from './profiles.js';
import { appendEvent, newIdentity, writeRecord, type WorkspaceRecord } from './record.js';
import { claimWorkspaceDir } from './store.js';
import { startJanitor, type Janitor } from './janitor.js';
import {
  prepareBoot,
  resolveImageAndKernel,
  startVm,
  stopVm,
  killVm,
  type BootPlan,
} from './vm.js';
import { checkPublishedPorts, resolveNetwork, type NetworkOptions } from './network.js';
import { commandFor, DEFAULT_IMAGE, execUserFor, type ResolveImageOptions } from './image.js';

export interface RunOptions {
  stateDir?: string;
  /** Image reference (default: the embedded default image). */
  image?: string;
  /** Platform, insecure registries, setuid policy, rootfs size, pull progress. */
  imageOptions?: ResolveImageOptions;
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  /**
   * Run the command as this user (an OCI `User`: name, uid, name:group,
   * uid:gid, …); default: the image's `User`, else root.
   */
  user?: string;
  /** Kill the guest command's process group after this long; status timed_out. */
  timeoutMs?: number;
  /** Keep the workspace (halted) after the command instead of deleting it. */
  keep?: boolean;
  name?: string;
  profile?: string;
  cpus?: number;
  memoryMiB?: number;
  /** Pins the root disk's size (default: the profile's, as a floor). */
  diskMiB?: number;
  labels?: Record<string, string>;
  accel?: 'auto' | 'kvm' | 'tcg';
  bootTimeoutMs?: number;
  /** Network mode, published ports, host loopback access (default: user, none, no). */
  network?: NetworkOptions;
  stdoutLimit?: number;
  stderrLimit?: number;
  /** Fed to the guest command's stdin when given. */
  stdin?: Readable;
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  onProgress?: (event: RunProgress) => void;
  /** Aborting forwards SIGTERM (then SIGKILL) to the guest command. */
  signal?: AbortSignal;
}

export type RunProgress =
  | { phase: 'prepare'; detail: string }
  | { phase: 'boot'; workspace: string; accel: string; accelReason: string }
  | { phase: 'ready'; workspace: string; bootMs: number }
  | { phase: 'teardown'; workspace: string };

export interface RunResult {
  workspace: string;
  status: ExecExit['status'];
  exitCode: number;
  signal?: number;
  stdoutBytes: number;
  stderrBytes: number;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  error?: { code: string; message: string };
  kept: boolean;
  image: { ref: string; key: string; digest?: string };
  kernel: { id: string; version: string };
  accel: { name: string; reason: string };
  resources: Resources;
  timings: {
    prepareMs: number;
    bootMs: number;
    execMs: number;
    teardownMs: number;
    totalMs: number;
  };
}

export const DEFAULT_BOOT_TIMEOUT_MS = 60_000;

/** Boots a workspace, runs argv in it, tears it down. See RunOptions. */
export async function runCommand(options: RunOptions): Promise<RunResult> {
  const t0 = performance.now();
  const imageRef = options.image ?? DEFAULT_IMAGE;
  if (imageRef === DEFAULT_IMAGE && (options.argv.length === 0 || options.argv[0] === '')) {
    throw new MicroagentError('USAGE', 'run needs a command to execute', {
      remediation: 'Usage: microagent run [--image REF] [--] CMD [ARGS...]',
    });
  }
  const resources = resolveResources(options);
  const network = resolveNetwork(options.network);
  await checkPublishedPorts(network); // PORT_IN_USE before anything is prepared or booted
  const paths = new StatePaths(options.stateDir);
  const name = options.name === undefined ? generateRunName() : validateWorkspaceName(options.name);
  // Before the claim: from there on a throwing callback must not leave the
  // folder behind.
  options.onProgress?.({ phase: 'prepare', detail: 'kernel and image' });
  const ws = await claimWorkspaceDir(paths, name);
  const identity = newIdentity(name, options.labels);
  const keep = options.keep === true;
  // Reading and hashing the image and the kernel goes on in the thread
  // pool while the janitor is spawned (a synchronous few ms).
  const resolving = resolveImageAndKernel(paths, imageRef, options.imageOptions ?? {});
  resolving.catch(() => {}); // awaited below, or before the folder goes
  // The VM's monitor lives in this process (one Node start-up less before
  // QEMU) and dies with it, taking the VM along; if that happens before
  // the throwaway folder is deleted, the janitor deletes it.
  let janitor: Janitor | undefined;
  if (!keep) {
    try {
      janitor = await startJanitor(ws.dir);
    } catch (err) {
      await resolving.catch(() => undefined);
      await rm(ws.dir, { recursive: true, force: true });
      throw err;
    }
  }
  let started = false;
  let monitorDone: Promise<unknown> | undefined;
  // The monitor is in this process: kill it directly, not through ctl.sock.
  let killInProcess: (() => Promise<void>) | undefined;
  const kill = (): Promise<void> => (killInProcess ? killInProcess() : killVm(ws, identity));
  let argv: string[] = options.argv;
  let cwd: string | undefined;
  let plan: BootPlan | undefined;
  let record: WorkspaceRecord | undefined;
  // The record's writes, in order (starting, running).
  let recorded: Promise<void> = Promise.resolve();
  try {
    const { image, kernel } = await resolving;
    argv = commandFor(image.defaults, options.argv);
    if (argv.length === 0) {
      throw new MicroagentError('USAGE', `image ${imageRef} has no Entrypoint or Cmd`, {
        remediation: 'Give the command to run: microagent run IMAGE -- CMD [ARGS...]',
      });
    }
    cwd = options.cwd ?? image.defaults.workingDir;
    const user = execUserFor(image.defaults, options.user);
    plan = await prepareBoot(ws, {
      name,
      image,
      env: options.env ?? {},
      resources,
      network,
      // The guest reads the program in while the handshake goes on: a cold
      // first exec otherwise waits ~20-40 ms for the disk under TCG.
      prefetch: prefetchFor(argv[0] as string),
      kernel,
    });
    const now = new Date().toISOString();
    record = {
      v: 1,
      name,
      createdAt: now,
      updatedAt: now,
      state: 'starting',
      ephemeral: !keep,
      identity,
      image: plan.imageRecord,
      kernel: plan.kernelRecord,
      resources: plan.resources,
      env: options.env ?? {},
      network,
    };
    const created = record;
    // Written while the VM starts (nothing on that path reads it).
    recorded = writeRecord(ws, created).then(() =>
      appendEvent(ws, { at: now, state: 'starting', identity }),
    );
    recorded.catch(() => {}); // awaited once the VM has started, or on failure
    const tPrepared = performance.now();

    const vm = await startVm(paths, ws, plan, {
      identity,
      accel: options.accel ?? 'auto',
      bootTimeoutMs: options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS,
      inProcess: true,
      // With a detached monitor (a supervisor executable was asked for),
      // the monitor kills the VM and deletes a throwaway workspace when
      // this process dies, so even SIGKILL of the CLI leaves nothing behind.
      ownerLease: true,
      removeOnOwnerExit: !keep,
    });
    started = true;
    monitorDone = vm.monitorDone;
    killInProcess = vm.kill;
    options.onProgress?.({
      phase: 'boot',
      workspace: name,
      accel: vm.accel,
      accelReason: vm.accelReason,
    });

    await recorded;
    let tReady = 0;
    const exit = await execInGuest(
      ws.agentSocket,
      {
        argv,
        ...(cwd ? { cwd } : {}),
        ...(user ? { user } : {}),
        stdin: options.stdin !== undefined,
        ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
        ...(options.stdoutLimit !== undefined ? { stdoutLimit: options.stdoutLimit } : {}),
        ...(options.stderrLimit !== undefined ? { stderrLimit: options.stderrLimit } : {}),
      },
      {
        onStdout: options.onStdout ?? (() => {}),
        onStderr: options.onStderr ?? (() => {}),
        ...(options.stdin ? { stdin: options.stdin } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        timeoutMs: (options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS) + 5_000,
        onStarted: () => {
          tReady = performance.now();
          const at = new Date().toISOString();
          recorded = recorded.then(() =>
            writeRecord(ws, { ...created, state: 'running', updatedAt: at }).then(() =>
              appendEvent(ws, { at, state: 'running', identity }),
            ),
          );
          recorded.catch(() => {}); // awaited after the command
          options.onProgress?.({
            phase: 'ready',
            workspace: name,
            bootMs: Math.round(tReady - tPrepared),
          });
        },
      },
    );
    const tExec = performance.now();

    options.onProgress?.({ phase: 'teardown', workspace: name });
    // A kept workspace gets a clean power-off so its disk stays consistent
    // (a guest that does not stop in time is killed). A throwaway one is
    // discarded with its disk, so a hard stop is safe and saves the guest's
    // shutdown.
    if (!keep || (await stopVm(ws, identity, 5000)).timedOut) await kill();
    started = false;
    await settled(monitorDone);
    await recorded;
    if (keep) {
      const at = new Date().toISOString();
      await writeJsonAtomic(ws.result, {
        ...exit,
        argv,
        completedAt: at,
      });
      await writeRecord(ws, { ...created, state: 'halted', updatedAt: at });
      await appendEvent(ws, { at, state: 'halted', detail: 'run finished', identity });
    } else {
      await rm(ws.dir, { recursive: true, force: true });
    }
    const tEnd = performance.now();
    return {
      workspace: name,
      status: exit.status,
      exitCode: exit.exitCode,
      ...(exit.signal !== undefined ? { signal: exit.signal } : {}),
      stdoutBytes: exit.stdoutBytes,
      stderrBytes: exit.stderrBytes,
      stdoutTruncated: exit.stdoutTruncated,
      stderrTruncated: exit.stderrTruncated,
      ...(exit.error ? { error: exit.error } : {}),
      kept: keep,
      image: {
        ref: imageRef,
        key: plan.imageRecord.key,
        ...(plan.imageRecord.digest ? { digest: plan.imageRecord.digest } : {}),
      },
      kernel: { id: plan.kernelRecord.id, version: plan.kernelRecord.version },
      accel: { name: vm.accel, reason: vm.accelReason },
      resources: plan.resources,
      timings: {
        prepareMs: Math.round(tPrepared - t0),
        bootMs: Math.round((tReady || tExec) - tPrepared),
        execMs: Math.round(tExec - (tReady || tExec)),
        teardownMs: Math.round(tEnd - tExec),
        totalMs: Math.round(tEnd - t0),
      },
    };
  } catch (err) {
    const error = toMicroagentError(err);
    if (started) await kill().catch(() => undefined);
    await settled(monitorDone);
    await recorded.catch(() => undefined);
    if (keep && record) {
      const at = new Date().toISOString();
      const detail = error.message.split('\n')[0] ?? error.message;
      await writeRecord(ws, { ...record, state: 'failed', stateDetail: detail, updatedAt: at })
        .then(() => appendEvent(ws, { at, state: 'failed', detail, identity }))
        .catch(() => undefined);
    } else {
      await rm(ws.dir, { recursive: true, force: true }).catch(() => undefined);
    }
    throw error;
  } finally {
    janitor?.release();
  }
}

/** How long a run waits for its in-process monitor to finish after the kill. */
const MONITOR_SETTLE_MS = 20_000;

/**
 * Waits for the in-process monitor to close its sockets after the VM is
 * gone, but never forever: a monitor bug must not hang the run (the VM
 * still dies with this process).
 */
async function settled(done: Promise<unknown> | undefined): Promise<void> {
  if (done === undefined) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    done.catch(() => undefined),
    new Promise((resolve) => {
      timer = setTimeout(resolve, MONITOR_SETTLE_MS);
    }),
  ]);
  clearTimeout(timer);
}

/** What the guest may read ahead for argv0 (a hint: a name the config cannot carry is left out). */
function prefetchFor(argv0: string): string[] {
  return PrefetchEntrySchema.safeParse(argv0).success ? [argv0] : [];
}
