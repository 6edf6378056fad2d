/**
 * Loading, listing and reconciling workspace records. A record says what
 * microagent last did; the monitor's status says what the VM is doing. When
 * they disagree — the VMM was SIGKILLed, the host rebooted — the record is
 * corrected and the change is appended as an event, so a dead VM is never
 * reported as a ghost `running`.
 */
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { MicroagentError } from '../errors.js';
import { ensurePrivateDir } from '../util/fs.js';
import { join } from 'node:path';
import type { VmStatus } from '../vmkit/schema.js';
import { vmBackend } from './backend.js';
import type { StatePaths, WorkspacePaths } from '../paths.js';
import { currentProcess, processAlive, type ProcessIdentity } from '../proc/spawn.js';
import { acquireLock } from './lock.js';
import { validateWorkspaceName } from './names.js';
import {
  appendEvent,
  readRecord,
  writeRecord,
  type WorkspaceRecord,
  type WorkspaceState,
} from './record.js';
import { isLive } from './states.js';

export interface LoadedWorkspace {
  ws: WorkspacePaths;
  record: WorkspaceRecord;
  /** The live VM's status, when a monitor is running for it. */
  vm: VmStatus | undefined;
}

/** The VM's last recorded status (the backend's); undefined when there is none. */
export function readVmStatus(ws: WorkspacePaths): Promise<VmStatus | undefined> {
  return vmBackend().lastStatus(ws.runtime);
}

/**
 * True while the VM's monitor process is alive and the VM has not exited.
 * The monitor is named by pid and start time, as locks and pins are: after
 * a host reboot its pid may belong to another process.
 */
export function vmAlive(vm: VmStatus | undefined): boolean {
  if (vm === undefined || vm.state === 'exited') return false;
  return processAlive({ pid: vm.monitorPid, startTime: vm.monitorStartTime ?? 0 });
}

/**
 * Loads a workspace and reconciles its record with the VM. Throws
 * INVALID_NAME, WORKSPACE_NOT_FOUND or STATE_CORRUPT.
 */
export async function loadWorkspace(
  paths: StatePaths,
  name: string,
  options: { holdsLock?: boolean } = {},
): Promise<LoadedWorkspace> {
  validateWorkspaceName(name);
  const ws = paths.workspace(name);
  const record = await readRecord(ws, name);
  const vm = await readVmStatus(ws);
  return {
    ws,
    record: await reconcile(ws, record, vm, options.holdsLock === true),
    vm: vmAlive(vm) ? vm : undefined,
  };
}

/** What the record should say given the VM's status (undefined: it is right). */
export function reconciledState(
  record: WorkspaceRecord,
  vm: VmStatus | undefined,
): { state: WorkspaceState; detail: string } | undefined {
  if (!isLive(record.state)) return undefined;
  if (vmAlive(vm)) {
    if (vm?.state === 'paused' && record.state === 'running') {
      return { state: 'paused', detail: 'the VM is paused' };
    }
    if ((vm?.state === 'ready' || vm?.state === 'booting') && record.state === 'paused') {
      return { state: 'running', detail: 'the VM is running' };
    }
    return undefined;
  }
  // An operation in progress (starting/stopping) owns the record while its
  // lock is held; reconcile() only runs its result through when the lock is free.
  const exit = vm?.exit;
  if (exit?.reason === 'poweroff') {
    return { state: 'halted', detail: 'the guest powered off' };
  }
  const why = exit
    ? `${exit.reason}${exit.detail ? `: ${exit.detail}` : ''}`
    : vm
      ? 'the VM monitor is gone'
      : 'no VM monitor was found (host reboot or crash)';
  return { state: 'failed', detail: `the VM is not running (${why})` };
}

async function reconcile(
  ws: WorkspacePaths,
  record: WorkspaceRecord,
  vm: VmStatus | undefined,
  holdsLock: boolean,
): Promise<WorkspaceRecord> {
  const change = reconciledState(record, vm);
  if (!change) return record;
  let lock;
  if (!holdsLock) {
    try {
      lock = await acquireLock(ws.lock, record.name, 'reconcile');
    } catch {
      // Another process is changing this workspace right now; its view wins.
      return record;
    }
  }
  try {
    // Re-read under the lock: the operation that held it may have finished.
    const fresh = await readRecord(ws, record.name);
    const again = reconciledState(fresh, await readVmStatus(ws));
    if (!again) return fresh;
    const at = new Date().toISOString();
    const updated: WorkspaceRecord = {
      ...fresh,
      state: again.state,
      stateDetail: again.detail,
      updatedAt: at,
    };
    await writeRecord(ws, updated);
    await appendEvent(ws, {
      at,
      state: again.state,
      detail: `reconciled: ${again.detail}`,
      identity: fresh.identity,
    });
    return updated;
  } finally {
    await lock?.release();
  }
}

const OWNER_STAMP = 'owner.json';

/**
 * Creates the directory of a new workspace: fails with WORKSPACE_EXISTS when
 * the name is taken (mkdir is the atomic claim), and stamps it as this
 * process's until its record exists, so listings reap it if we die first.
 */
export async function claimWorkspaceDir(paths: StatePaths, name: string): Promise<WorkspacePaths> {
  const ws = paths.workspace(name);
  ws.checkSocketPaths();
  await ensurePrivateDir(paths.workspaces);
  try {
    await mkdir(ws.dir, { mode: 0o700 }); // not recursive: fails if the name is taken
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new MicroagentError('WORKSPACE_EXISTS', `workspace ${name} already exists`, {
        data: { name },
      });
    }
    throw err;
  }
  await writeOwnerStamp(ws);
  return ws;
}

/** Marks a workspace directory that has no record yet as this process's. */
export async function writeOwnerStamp(ws: WorkspacePaths): Promise<void> {
  await writeFile(join(ws.dir, OWNER_STAMP), JSON.stringify(currentProcess()), { mode: 0o600 });
}

/**
 * Removes a directory without a record whose creator is gone (a `run`
 * killed while it prepared its image). True when it was removed.
 */
async function reapOrphan(ws: WorkspacePaths): Promise<boolean> {
  try {
    await stat(ws.record);
    return false; // has a record: a real workspace
  } catch {
    // no record
  }
  try {
    const owner = JSON.parse(await readFile(join(ws.dir, OWNER_STAMP), 'utf8')) as ProcessIdentity;
    if (processAlive(owner)) return false;
  } catch {
    return false; // not ours to judge
  }
  await rm(ws.dir, { recursive: true, force: true });
  return true;
}

/** Every workspace in the state directory, reconciled, sorted by name. */
export async function listWorkspaces(paths: StatePaths): Promise<LoadedWorkspace[]> {
  return (await listWorkspaceEntries(paths)).flatMap((e) => ('loaded' in e ? [e.loaded] : []));
}

/** A workspace folder in a listing: loaded, or with a record that cannot be read. */
export type WorkspaceEntry =
  { name: string; loaded: LoadedWorkspace } | { name: string; corrupt: MicroagentError };

/**
 * Every workspace folder, sorted by name: loaded ones, and those whose
 * record is corrupt (STATE_CORRUPT), so that a listing hides none of them.
 */
export async function listWorkspaceEntries(paths: StatePaths): Promise<WorkspaceEntry[]> {
  let names: string[];
  try {
    names = await readdir(paths.workspaces);
  } catch {
    return [];
  }
  const out: WorkspaceEntry[] = [];
  for (const name of names.sort()) {
    if (await reapOrphan(paths.workspace(name)).catch(() => false)) continue;
    try {
      out.push({ name, loaded: await loadWorkspace(paths, name) });
    } catch (err) {
      // Half-created or foreign directories (no record, a name that is not
      // a workspace's) are not workspaces; `status NAME` explains them.
      if (err instanceof MicroagentError && err.code === 'STATE_CORRUPT')
        out.push({ name, corrupt: err });
    }
  }
  return out;
}
