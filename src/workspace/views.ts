/**
 * Read-only views of workspaces: status (with readiness and verification),
 * listings, the serial console log and the event log.
 */
import { open, readFile, stat } from 'node:fs/promises';
import { MicroagentError } from '../errors.js';
import { execInGuest } from '../guest/exec-client.js';
import type { ExecExit } from '../guest/protocol.js';
import { StatePaths, type WorkspacePaths } from '../paths.js';
import type { VmStatus } from '../vmkit/schema.js';
import type { WorkspaceEvent, WorkspaceRecord } from './record.js';
import { isLive, TERMINAL_STATES } from './states.js';
import { listWorkspaceEntries, loadWorkspace } from './store.js';
import { vmBackend } from './backend.js';
import { verifyWorkspace, type Verification } from './verify.js';
import { qcow2VirtualSize } from '../rootfs/qcow2.js';
import { networkOf, type NetworkSettings } from './network.js';

export interface ReadinessSignal {
  ready: boolean;
  observedAt?: string;
  detail?: string;
  error?: string;
}

export interface Readiness {
  guestReady: ReadinessSignal;
  shellReady: ReadinessSignal;
  execReady: ReadinessSignal;
  resultReady: ReadinessSignal;
}

export interface WorkspaceStatus {
  name: string;
  state: WorkspaceRecord['state'];
  stateDetail?: string;
  createdAt: string;
  updatedAt: string;
  identity: WorkspaceRecord['identity'];
  image: WorkspaceRecord['image'];
  kernel: { id: string; version: string };
  resources: WorkspaceRecord['resources'];
  outputs?: Record<string, string>;
  /** Network mode and published ports (docs/networking.md). */
  network: NetworkSettings;
  /** The root disk: its size, what it takes on the host, and (running) the guest's use. */
  disk: DiskView;
  vm?: {
    monitorPid: number;
    qemuPid?: number;
    accel: string;
    accelReason: string;
    state: VmStatus['state'];
    startedAt: string;
    readyAt?: string;
    /** The network stack while the VM runs: its pid, restarts, and why it is down if it is. */
    network?: NonNullable<VmStatus['network']>;
  };
  readiness: Readiness;
  verification: Verification;
}

export interface DiskView {
  /** The disk's size as the guest sees it (the overlay's virtual size). */
  sizeBytes: number;
  /** Bytes the workspace's own overlay takes on the host (the image's baseline is shared). */
  hostBytes: number;
  /** While it runs: the root file system's use as the guest's `df` reports it. */
  guest?: { usedBytes: number; availableBytes: number };
}

const PROBE_TIMEOUT_MS = 2_000;

async function diskView(
  ws: WorkspacePaths,
  record: WorkspaceRecord,
  running: boolean,
): Promise<DiskView> {
  let sizeBytes = (record.resources.diskMiB ?? 0) * 1024 * 1024;
  let hostBytes = 0;
  try {
    const st = await stat(ws.disk);
    hostBytes = st.blocks * 512;
    sizeBytes = (await qcow2VirtualSize(ws.disk)) ?? sizeBytes;
  } catch {
    // no disk (yet): the record's size
  }
  const view: DiskView = { sizeBytes, hostBytes };
  if (running) {
    try {
      let out = '';
      const exit = await execInGuest(
        ws.agentSocket,
        { argv: ['df', '-P', '-k', '/'], timeoutMs: PROBE_TIMEOUT_MS },
        { timeoutMs: PROBE_TIMEOUT_MS, onStdout: (c) => void (out += c.toString('utf8')) },
      );
      const f = out.trim().split('\n')[1]?.trim().split(/\s+/);
      if (exit.status === 'exited' && exit.exitCode === 0 && f && f.length >= 4) {
        const used = Number(f[2]);
        const avail = Number(f[3]);
        if (Number.isFinite(used) && Number.isFinite(avail))
          view.guest = { usedBytes: used * 1024, availableBytes: avail * 1024 };
      }
    } catch {
      // an image without df, or a guest that does not answer: host figures only
    }
  }
  return view;
}

/** Full status of one workspace, with live readiness probes when it runs. */
export async function workspaceStatus(options: {
  stateDir?: string;
  name: string;
}): Promise<WorkspaceStatus> {
  const paths = new StatePaths(options.stateDir);
  const { ws, record, vm } = await loadWorkspace(paths, options.name);
  const [readiness, verification, disk] = await Promise.all([
    readinessOf(ws, record, vm),
    verifyWorkspace(paths, record),
    diskView(ws, record, record.state === 'running' && vm?.readyAt !== undefined),
  ]);
  return {
    name: record.name,
    state: record.state,
    ...(record.stateDetail ? { stateDetail: record.stateDetail } : {}),
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
    identity: record.identity,
    image: record.image,
    kernel: { id: record.kernel.id, version: record.kernel.version },
    resources: record.resources,
    ...(record.outputs ? { outputs: record.outputs } : {}),
    network: networkOf(record),
    disk,
    ...(vm
      ? {
          vm: {
            monitorPid: vm.monitorPid,
            ...(vm.qemuPid !== undefined ? { qemuPid: vm.qemuPid } : {}),
            accel: vm.accel,
            accelReason: vm.accelReason,
            state: vm.state,
            startedAt: new Date(vm.startedAt).toISOString(),
            ...(vm.readyAt !== undefined ? { readyAt: new Date(vm.readyAt).toISOString() } : {}),
            ...(vm.network && vm.state !== 'exited' ? { network: vm.network } : {}),
          },
        }
      : {}),
    readiness,
    verification,
  };
}

async function readinessOf(
  ws: WorkspacePaths,
  record: WorkspaceRecord,
  vm: VmStatus | undefined,
): Promise<Readiness> {
  const notLive: ReadinessSignal = {
    ready: false,
    detail: `workspace is ${record.state}; live readiness unavailable`,
  };
  const guestReady: ReadinessSignal =
    vm?.readyAt !== undefined
      ? {
          ready: true,
          observedAt: new Date(vm.readyAt).toISOString(),
          detail: `init ${vm.guest?.init ?? ''}`.trim(),
        }
      : isLive(record.state)
        ? { ready: false, detail: 'the guest has not said HELLO yet' }
        : notLive;
  let execReady = notLive;
  let shellReady = notLive;
  if (record.state === 'running' && vm?.readyAt !== undefined) {
    // execReady: the exec service answers (whatever the image contains).
    // shellReady: the image's /bin/sh runs.
    [execReady, shellReady] = await Promise.all([
      probe(ws, ['true'], () => true),
      probe(ws, ['/bin/sh', '-c', 'exit 0'], (e) => e.status === 'exited' && e.exitCode === 0),
    ]);
  } else if (record.state === 'paused') {
    execReady = shellReady = { ready: false, detail: 'workspace is paused' };
  }
  let resultReady: ReadinessSignal = { ready: false, detail: 'no result recorded' };
  try {
    const s = await stat(ws.result);
    resultReady = { ready: true, observedAt: s.mtime.toISOString() };
  } catch {
    // no result yet
  }
  return { guestReady, shellReady, execReady, resultReady };
}

/** A bounded structured exec round trip. */
async function probe(
  ws: WorkspacePaths,
  argv: string[],
  isReady: (exit: ExecExit) => boolean,
): Promise<ReadinessSignal> {
  const started = Date.now();
  try {
    const exit = await execInGuest(
      ws.agentSocket,
      { argv, timeoutMs: PROBE_TIMEOUT_MS },
      { timeoutMs: PROBE_TIMEOUT_MS },
    );
    const ok = isReady(exit);
    return {
      ready: ok,
      observedAt: new Date().toISOString(),
      detail: `${argv.join(' ')}: ${exit.status} ${exit.exitCode} in ${Date.now() - started} ms`,
    };
  } catch (err) {
    return { ready: false, observedAt: new Date().toISOString(), error: (err as Error).message };
  }
}

/**
 * One row of `list`. A workspace whose record cannot be read is listed too,
 * with state `corrupt` and the error; other commands refuse it with
 * STATE_CORRUPT.
 */
export type WorkspaceSummary =
  | {
      name: string;
      state: WorkspaceRecord['state'];
      profile: string;
      cpus: number;
      memoryMiB: number;
      image: string;
      backend: string;
      updatedAt: string;
    }
  | { name: string; state: 'corrupt'; error: { code: 'STATE_CORRUPT'; message: string } };

/** Every workspace (or only live ones), reconciled. */
export async function listWorkspaceSummaries(options: {
  stateDir?: string;
  liveOnly?: boolean;
}): Promise<WorkspaceSummary[]> {
  const paths = new StatePaths(options.stateDir);
  const all = await listWorkspaceEntries(paths);
  return all.flatMap((e): WorkspaceSummary[] => {
    // A corrupt record's state is unknown: it is listed even with liveOnly.
    if ('corrupt' in e)
      return [
        {
          name: e.name,
          state: 'corrupt',
          error: { code: 'STATE_CORRUPT', message: e.corrupt.message },
        },
      ];
    const { record } = e.loaded;
    if (options.liveOnly && !isLive(record.state)) return [];
    return [
      {
        name: record.name,
        state: record.state,
        profile: record.resources.profile,
        cpus: record.resources.cpus,
        memoryMiB: record.resources.memoryMiB,
        image: record.image.ref,
        backend: record.identity.backend,
        updatedAt: record.updatedAt,
      },
    ];
  });
}

/** The serial console log of the workspace's current (or last) boot. */
export async function readLogs(options: { stateDir?: string; name: string }): Promise<Buffer> {
  const paths = new StatePaths(options.stateDir);
  const { ws } = await loadWorkspace(paths, options.name);
  try {
    return await readFile(vmBackend().consoleLog(ws.runtime));
  } catch {
    return Buffer.alloc(0);
  }
}

/**
 * Streams the serial log: what is there, then what is appended, until the
 * workspace leaves its live states or signal aborts.
 */
export async function followLogs(options: {
  stateDir?: string;
  name: string;
  onData: (chunk: Buffer) => void;
  signal?: AbortSignal;
}): Promise<void> {
  const paths = new StatePaths(options.stateDir);
  const { ws } = await loadWorkspace(paths, options.name);
  const log = vmBackend().consoleLog(ws.runtime);
  let offset = 0;
  for (;;) {
    offset += await readFrom(log, offset, options.onData);
    if (options.signal?.aborted) return;
    const loaded = await loadWorkspace(paths, options.name);
    if (!isLive(loaded.record.state)) {
      await readFrom(log, offset, options.onData);
      return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function readFrom(
  path: string,
  offset: number,
  onData: (c: Buffer) => void,
): Promise<number> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return 0;
  }
  try {
    let total = 0;
    const buf = Buffer.allocUnsafe(64 * 1024);
    for (;;) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, offset + total);
      if (bytesRead === 0) return total;
      onData(Buffer.from(buf.subarray(0, bytesRead)));
      total += bytesRead;
    }
  } finally {
    await handle.close();
  }
}

/** The workspace's events, oldest first. */
export async function readEvents(options: {
  stateDir?: string;
  name: string;
}): Promise<WorkspaceEvent[]> {
  const paths = new StatePaths(options.stateDir);
  const { ws } = await loadWorkspace(paths, options.name);
  return parseEvents(await readFile(ws.events, 'utf8').catch(() => ''));
}

function parseEvents(text: string): WorkspaceEvent[] {
  const events: WorkspaceEvent[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      events.push(JSON.parse(line) as WorkspaceEvent);
    } catch {
      throw new MicroagentError('STATE_CORRUPT', 'the event log has a line that is not JSON');
    }
  }
  return events;
}

/** Streams events as they are appended, until a terminal state or abort. */
export async function followEvents(options: {
  stateDir?: string;
  name: string;
  onEvent: (event: WorkspaceEvent) => void;
  signal?: AbortSignal;
}): Promise<void> {
  const paths = new StatePaths(options.stateDir);
  let seen = 0;
  for (;;) {
    const { ws, record } = await loadWorkspace(paths, options.name);
    const events = parseEvents(await readFile(ws.events, 'utf8').catch(() => ''));
    for (const e of events.slice(seen)) options.onEvent(e);
    seen = events.length;
    if (options.signal?.aborted) return;
    if (TERMINAL_STATES.includes(record.state) && seen > 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}
