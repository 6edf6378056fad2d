/**
 * Persistent workspaces: create, start, exec, halt, stop, kill, pause,
 * resume, delete, wait. Every state change happens under the workspace lock,
 * is checked against the state table (states.ts), written atomically and
 * appended to the event log.
 */
import { MAX_WAIT_MS } from '../limits.js';
import { readFile, rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { MicroagentError, toMicroagentError } from '../errors.js';
import { execInGuest } from '../guest/exec-client.js';
import type { ExecExit } from '../guest/protocol.js';
import { prepareBootKernel, type BootKernel } from '../kernel/boot.js';
import { StatePaths, type WorkspacePaths } from '../paths.js';
import { acquireLock } from './lock.js';
import { validateWorkspaceName } from './names.js';
import { resolveResources } from './profiles.js';
import {
  appendEvent,
  newIdentity,
  writeRecord,
  type WorkspaceRecord,
  type WorkspaceState,
} from './record.js';
import { assertTransition, TERMINAL_STATES } from './states.js';
import {
  loadWorkspace,
  readVmStatus,
  claimWorkspaceDir,
  vmAlive,
  type LoadedWorkspace,
} from './store.js';
import { verifyWorkspace, type Verification } from './verify.js';
import {
  killVm,
  pauseVm,
  prepareBoot,
  resolveImageAndKernel,
  resumeVm,
  startVm,
  stopVm,
  waitVm,
  writeBootConfig,
} from './vm.js';
import { checkPublishedPorts, networkOf, resolveNetwork, type NetworkOptions } from './network.js';
import { execUserFor, type ResolveImageOptions } from './image.js';

export const DEFAULT_BOOT_TIMEOUT_MS = 60_000;
/** stop gives the guest this long, then reports failed (no escalation). */
export const STOP_GRACE_MS = 5_000;
/** halt gives the guest this long to power off before it is killed. */
export const HALT_GRACE_MS = 15_000;

export interface CreateOptions {
  stateDir?: string;
  name: string;
  image?: string;
  profile?: string;
  cpus?: number;
  memoryMiB?: number;
  /** Pins the root disk's size (default: the profile's, as a floor). */
  diskMiB?: number;
  env?: Record<string, string>;
  labels?: Record<string, string>;
  /** Shell commands run once at create, in a setup boot (`sh -c`). */
  setup?: string[];
  /** Declared output files: name → absolute guest path. */
  outputs?: Record<string, string>;
  accel?: 'auto' | 'kvm' | 'tcg';
  bootTimeoutMs?: number;
  /** Network mode, published ports, host loopback access (default: user, none, no). */
  network?: NetworkOptions;
  /** Platform, insecure registries, setuid policy, size, pull progress. */
  imageOptions?: ResolveImageOptions;
  onSetupOutput?: (stream: 'stdout' | 'stderr', chunk: Buffer) => void;
}

/** Records a state change: the record (atomically) and one event. */
async function transition(
  ws: WorkspacePaths,
  record: WorkspaceRecord,
  state: WorkspaceState,
  detail?: string,
): Promise<WorkspaceRecord> {
  const at = new Date().toISOString();
  const updated: WorkspaceRecord = { ...record, state, updatedAt: at };
  if (detail === undefined) delete updated.stateDetail;
  else updated.stateDetail = detail;
  await writeRecord(ws, updated);
  await appendEvent(ws, {
    at,
    state,
    ...(detail !== undefined ? { detail } : {}),
    identity: record.identity,
  });
  return updated;
}

/**
 * Creates a workspace in state `prepared`: its own disk (a copy-on-write
 * overlay on the image baseline) and record. With setup commands, boots it
 * once to run them and halts it; a failed setup removes the workspace.
 */
export async function createWorkspace(options: CreateOptions): Promise<WorkspaceRecord> {
  const name = validateWorkspaceName(options.name);
  const imageRef = options.image ?? 'default';
  for (const [key, path] of Object.entries(options.outputs ?? {})) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(key) || !path.startsWith('/')) {
      throw new MicroagentError('INVALID_ARGUMENT', `invalid --output ${key}=${path}`, {
        remediation: 'Use --output NAME=/absolute/guest/path.',
      });
    }
  }
  const resources = resolveResources(options);
  const network = resolveNetwork(options.network);
  // Only a setup boot publishes ports at create; `start` checks again.
  if (options.setup && options.setup.length > 0) await checkPublishedPorts(network);
  const paths = new StatePaths(options.stateDir);
  const ws = await claimWorkspaceDir(paths, name);
  // Nobody else may start or delete the workspace while it is being created.
  const lock = await acquireLock(ws.lock, name, 'create');
  try {
    const env = options.env ?? {};
    const { image, kernel } = await resolveImageAndKernel(
      paths,
      imageRef,
      options.imageOptions ?? {},
    );
    const plan = await prepareBoot(ws, { name, image, env, resources, network, kernel });
    const now = new Date().toISOString();
    let record: WorkspaceRecord = {
      v: 1,
      name,
      createdAt: now,
      updatedAt: now,
      state: 'prepared',
      ephemeral: false,
      identity: newIdentity(name, options.labels),
      image: plan.imageRecord,
      kernel: plan.kernelRecord,
      resources: plan.resources,
      env,
      ...(options.setup && options.setup.length > 0 ? { setup: options.setup } : {}),
      ...(options.outputs ? { outputs: options.outputs } : {}),
      network,
    };
    await writeRecord(ws, record);
    await appendEvent(ws, {
      at: now,
      state: 'prepared',
      detail: 'created',
      identity: record.identity,
    });
    if (record.setup) {
      record = await runSetup(paths, ws, record, options);
    }
    await lock.release();
    return record;
  } catch (err) {
    await killVm(ws, newIdentity(name)).catch(() => undefined);
    await rm(ws.dir, { recursive: true, force: true });
    throw err;
  }
}

async function runSetup(
  paths: StatePaths,
  ws: WorkspacePaths,
  record: WorkspaceRecord,
  options: CreateOptions,
): Promise<WorkspaceRecord> {
  let current = await bootWorkspace(paths, ws, record, options);
  for (const command of record.setup ?? []) {
    const out: Buffer[] = [];
    const exit = await execInGuest(
      ws.agentSocket,
      { argv: ['/bin/sh', '-c', command], stdoutLimit: 1 << 20, stderrLimit: 1 << 20 },
      {
        onStdout: (c) => {
          out.push(c);
          options.onSetupOutput?.('stdout', c);
        },
        onStderr: (c) => {
          out.push(c);
          options.onSetupOutput?.('stderr', c);
        },
      },
    );
    if (exit.status !== 'exited' || exit.exitCode !== 0) {
      const tail = Buffer.concat(out).toString('utf8').slice(-2000);
      throw new MicroagentError(
        'SETUP_FAILED',
        `setup command failed with exit ${exit.exitCode} (${exit.status}): ${command}${tail ? `\n${tail}` : ''}`,
        { data: { command, exitCode: exit.exitCode, status: exit.status } },
      );
    }
  }
  const stopped = await stopVm(ws, current.identity, HALT_GRACE_MS);
  if (stopped.timedOut) await killVm(ws, current.identity);
  current = await transition(ws, current, 'halted', 'setup complete');
  return current;
}

export interface StartOptions {
  stateDir?: string;
  name: string;
  accel?: 'auto' | 'kvm' | 'tcg';
  bootTimeoutMs?: number;
}

/**
 * Boots a workspace from its disk. Exactly one of two concurrent starts
 * boots; the other gets WORKSPACE_BUSY or WORKSPACE_RUNNING. Refuses to boot
 * when verification finds a divergence (VERIFICATION_FAILED).
 */
export async function startWorkspace(options: StartOptions): Promise<WorkspaceRecord> {
  const paths = new StatePaths(options.stateDir);
  validateWorkspaceName(options.name);
  const ws = paths.workspace(options.name);
  await loadWorkspace(paths, options.name); // WORKSPACE_NOT_FOUND before any lock error
  await using _lock = await acquireLock(ws.lock, options.name, 'start');
  const { record } = await loadWorkspace(paths, options.name, { holdsLock: true });
  assertTransition('start', record.state, record.name);
  // Verified against its manifest (cache-aware); its hashes then stand in
  // for re-hashing the same files when comparing with the record.
  const kernel = await prepareBootKernel(paths, { id: record.kernel.id });
  const verification = await verifyWorkspace(paths, record, kernel);
  if (!verification.ok) {
    throw new MicroagentError(
      'VERIFICATION_FAILED',
      `refusing to start ${record.name}: ${verification.divergence
        .map((d) => `${d.artifact} ${d.field} changed`)
        .join('; ')}`,
      { data: { verification } },
    );
  }
  return await bootWorkspace(paths, ws, record, options, kernel);
}

/** Boots (the caller holds the lock) and waits until exec works. */
async function bootWorkspace(
  paths: StatePaths,
  ws: WorkspacePaths,
  record: WorkspaceRecord,
  options: { accel?: 'auto' | 'kvm' | 'tcg'; bootTimeoutMs?: number },
  verifiedKernel?: BootKernel,
): Promise<WorkspaceRecord> {
  const network = networkOf(record);
  // A taken published port fails here, before the state changes or anything boots.
  await checkPublishedPorts(network);
  // The kernel is verified against its manifest right before boot.
  const kernel = verifiedKernel ?? (await prepareBootKernel(paths, { id: record.kernel.id }));
  await rm(ws.runtime, { recursive: true, force: true });
  await writeBootConfig(ws, record.name, { ...record.image.defaults?.env, ...record.env }, network);
  let current = await transition(ws, record, 'starting');
  const bootTimeoutMs = options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
  try {
    await startVm(
      paths,
      ws,
      {
        kernelPath: kernel.kernelPath,
        initramfsPath: kernel.initramfsPath,
        imageRecord: record.image,
        kernelRecord: record.kernel,
        resources: resolveResources({
          ...record.resources,
          diskPinned: record.resources.diskPinned === true,
        }),
        network,
      },
      {
        identity: record.identity,
        accel: options.accel ?? 'auto',
        bootTimeoutMs,
        ownerLease: false,
        removeOnOwnerExit: false,
      },
    );
    // Ready means a structured exec round trip works, not just a HELLO. Any
    // well-formed answer proves it: an image need not have a `true` binary.
    await execInGuest(ws.agentSocket, { argv: ['true'] }, { timeoutMs: bootTimeoutMs + 5_000 });
    current = await transition(ws, current, 'running');
    return current;
  } catch (err) {
    const error = toMicroagentError(err);
    await killVm(ws, record.identity).catch(() => undefined);
    await transition(ws, current, 'failed', error.message.split('\n')[0]);
    throw error;
  }
}

export interface ExecOptions {
  stateDir?: string;
  name: string;
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** The user to run as (an OCI `User`); default: the image's `User`, else root. */
  user?: string;
  timeoutMs?: number;
  stdin?: Readable;
  stdoutLimit?: number;
  stderrLimit?: number;
  onStdout?: (chunk: Buffer) => void | Promise<void>;
  onStderr?: (chunk: Buffer) => void | Promise<void>;
  signal?: AbortSignal;
}

/** Runs a command in a running workspace. Many execs may run at once. */
export async function execWorkspace(options: ExecOptions): Promise<ExecExit> {
  const paths = new StatePaths(options.stateDir);
  const { ws, record } = await loadWorkspace(paths, options.name);
  assertTransition('exec', record.state, record.name);
  const user = execUserFor(record.image.defaults, options.user);
  return execInGuest(
    ws.agentSocket,
    {
      argv: options.argv,
      ...(options.env && Object.keys(options.env).length > 0 ? { env: options.env } : {}),
      ...((options.cwd ?? record.image.defaults?.workingDir)
        ? { cwd: options.cwd ?? record.image.defaults?.workingDir }
        : {}),
      ...(user ? { user } : {}),
      ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
      ...(options.stdoutLimit !== undefined ? { stdoutLimit: options.stdoutLimit } : {}),
      ...(options.stderrLimit !== undefined ? { stderrLimit: options.stderrLimit } : {}),
    },
    {
      ...(options.onStdout ? { onStdout: options.onStdout } : {}),
      ...(options.onStderr ? { onStderr: options.onStderr } : {}),
      ...(options.stdin ? { stdin: options.stdin } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      timeoutMs: 10_000,
    },
  );
}

export interface NameOptions {
  stateDir?: string;
  name: string;
}

async function locked<T>(
  options: NameOptions,
  operation: string,
  body: (paths: StatePaths, loaded: LoadedWorkspace) => Promise<T>,
): Promise<T> {
  const paths = new StatePaths(options.stateDir);
  validateWorkspaceName(options.name);
  const ws = paths.workspace(options.name);
  // Load first so that an unknown name is WORKSPACE_NOT_FOUND, not a lock error.
  await loadWorkspace(paths, options.name);
  await using _lock = await acquireLock(ws.lock, options.name, operation);
  return await body(paths, await loadWorkspace(paths, options.name, { holdsLock: true }));
}

/** Clean power-off that keeps the disk; a guest that does not stop is killed (failed). */
export function haltWorkspace(options: NameOptions): Promise<WorkspaceRecord> {
  return locked(options, 'halt', async (_paths, { ws, record }) => {
    assertTransition('halt', record.state, record.name);
    const current = await transition(ws, record, 'stopping', 'halt');
    const { timedOut } = await stopVm(ws, record.identity, HALT_GRACE_MS);
    if (timedOut) {
      await killVm(ws, record.identity);
      return transition(
        ws,
        current,
        'failed',
        `did not power off within ${HALT_GRACE_MS / 1000} s; killed`,
      );
    }
    return transition(ws, current, 'halted');
  });
}

/**
 * Asks the guest to stop and gives it 5 s. If the VM is still there it is
 * marked failed and left alone: escalating is the caller's move (`kill`).
 */
export function stopWorkspace(options: NameOptions): Promise<WorkspaceRecord> {
  return locked(options, 'stop', async (_paths, { ws, record }) => {
    assertTransition('stop', record.state, record.name);
    const current = await transition(ws, record, 'stopping', 'stop');
    const { timedOut } = await stopVm(ws, record.identity, STOP_GRACE_MS);
    if (timedOut) {
      const failed = await transition(
        ws,
        current,
        'failed',
        `did not stop within ${STOP_GRACE_MS / 1000} s; the VM is still running (use microagent kill)`,
      );
      throw new MicroagentError(
        'STOP_TIMEOUT',
        `workspace ${record.name} did not stop within ${STOP_GRACE_MS / 1000} s; it is marked failed`,
        { data: { name: record.name, state: failed.state } },
      );
    }
    return transition(ws, current, 'stopped');
  });
}

/** Hard stop. */
export function killWorkspace(options: NameOptions): Promise<WorkspaceRecord> {
  return locked(options, 'kill', async (_paths, { ws, record }) => {
    assertTransition('kill', record.state, record.name);
    await killVm(ws, record.identity);
    return transition(ws, record, 'stopped', 'killed');
  });
}

export function pauseWorkspace(options: NameOptions): Promise<WorkspaceRecord> {
  return locked(options, 'pause', async (_paths, { ws, record }) => {
    assertTransition('pause', record.state, record.name);
    await pauseVm(ws, record.identity);
    return transition(ws, record, 'paused');
  });
}

export function resumeWorkspace(options: NameOptions): Promise<WorkspaceRecord> {
  return locked(options, 'resume', async (_paths, { ws, record }) => {
    assertTransition('resume', record.state, record.name);
    await resumeVm(ws, record.identity);
    return transition(ws, record, 'running');
  });
}

/** Removes a workspace that is not running: its disk, record and events. */
export function deleteWorkspace(options: NameOptions): Promise<{ name: string; deleted: true }> {
  return locked(options, 'delete', async (_paths, { ws, record }) => {
    assertTransition('delete', record.state, record.name);
    if (vmAlive(await readVmStatus(ws))) {
      throw new MicroagentError('WORKSPACE_RUNNING', `workspace ${record.name} still has a VM`, {
        remediation: `Kill it first: microagent kill ${record.name}`,
      });
    }
    await rm(ws.dir, { recursive: true, force: true });
    return { name: record.name, deleted: true as const };
  });
}

/** Waits until the workspace is in a terminal state and returns its record. */
export async function waitWorkspace(
  options: NameOptions & { timeoutMs?: number },
): Promise<WorkspaceRecord & { timedOut?: boolean }> {
  const paths = new StatePaths(options.stateDir);
  const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
  for (;;) {
    const { ws, record, vm } = await loadWorkspace(paths, options.name);
    if (TERMINAL_STATES.includes(record.state)) return record;
    const left = deadline - Date.now();
    if (left <= 0) return { ...record, timedOut: true };
    if (vm) {
      await waitVm(ws, record.identity, Math.min(left, MAX_WAIT_MS));
    } else {
      // A transition without a VM (e.g. starting before the monitor exists).
      await new Promise((r) => setTimeout(r, Math.min(left, 200)));
    }
  }
}

export async function readWorkspaceResult(options: NameOptions): Promise<unknown> {
  const paths = new StatePaths(options.stateDir);
  const { ws, record } = await loadWorkspace(paths, options.name);
  try {
    return JSON.parse(await readFile(ws.result, 'utf8'));
  } catch {
    throw new MicroagentError('RESULT_NOT_READY', `workspace ${record.name} has no result yet`, {
      data: { name: record.name },
    });
  }
}

export type { Verification };
