/**
 * `cp` and `artifacts`: files in and out of a workspace. A running workspace
 * goes through the guest agent's file service; a stopped one through its
 * disk image.
 */
import { MicroagentError } from '../errors.js';
import { readGuestFile, writeGuestFile } from '../guest/fs-client.js';
import { StatePaths } from '../paths.js';
import { acquireLock, type WorkspaceLock } from './lock.js';
import { assertTransition, isLive, TRANSITIONS } from './states.js';
import { loadWorkspace, type LoadedWorkspace } from './store.js';

/** `NAME:/path` on one side of a copy. */
export interface GuestLocation {
  name: string;
  path: string;
}

/** Parses `NAME:/abs/path`; undefined for a host path. */
export function parseGuestLocation(arg: string): GuestLocation | undefined {
  const m = /^([A-Za-z0-9][A-Za-z0-9._-]{0,62}):(\/.*)$/.exec(arg);
  return m ? { name: m[1] as string, path: m[2] as string } : undefined;
}

/** Takes the workspace lock for an offline copy and re-checks the state under it. */
async function lockOffline(
  stateDir: string | undefined,
  name: string,
  operation: string,
): Promise<WorkspaceLock> {
  const paths = new StatePaths(stateDir);
  const lock = await acquireLock(paths.workspace(name).lock, name, operation);
  try {
    const { record } = await loadWorkspace(paths, name, { holdsLock: true });
    assertTransition('cp-offline', record.state, record.name);
    return lock;
  } catch (err) {
    await lock.release();
    throw err;
  }
}

export interface CopyResult {
  direction: 'in' | 'out';
  workspace: string;
  guestPath: string;
  hostPath: string;
  bytes: number;
  via: 'agent' | 'disk';
}

async function loadForCopy(stateDir: string | undefined, name: string): Promise<LoadedWorkspace> {
  const loaded = await loadWorkspace(new StatePaths(stateDir), name);
  const state = loaded.record.state;
  if (state !== 'running' && !TRANSITIONS['cp-offline'].from.includes(state)) {
    throw new MicroagentError(
      'WORKSPACE_RUNNING',
      `cannot copy files while workspace ${name} is ${state}`,
      {
        remediation: isLive(state)
          ? state === 'paused'
            ? `Resume it first: microagent resume ${name}`
            : 'Wait until it is running or stopped.'
          : '',
        data: { name, state },
      },
    );
  }
  return loaded;
}

/** Copies a host file into a workspace (running or stopped). */
export async function copyIn(options: {
  stateDir?: string;
  hostPath: string;
  to: GuestLocation;
  mode?: number;
}): Promise<CopyResult> {
  const { ws, record } = await loadForCopy(options.stateDir, options.to.name);
  const common = {
    direction: 'in' as const,
    workspace: record.name,
    guestPath: options.to.path,
    hostPath: options.hostPath,
  };
  if (record.state === 'running') {
    const r = await writeGuestFile(ws.agentSocket, options.to.path, options.hostPath, {
      ...(options.mode !== undefined ? { mode: options.mode } : {}),
    });
    return { ...common, bytes: r.bytes, via: 'agent' };
  }
  // Offline: the disk image is rewritten, so hold the workspace lock (no
  // start or other copy meanwhile) and check the state again under it.
  await using _lock = await lockOffline(options.stateDir, record.name, 'cp');
  const { writeFileToDisk } = await import('../rootfs/offline-files.js');
  const r = await writeFileToDisk(ws.disk, options.to.path, options.hostPath, {
    ...(options.mode !== undefined ? { mode: options.mode } : {}),
  });
  return { ...common, bytes: r.bytes, via: 'disk' };
}

/** Copies a file out of a workspace (running or stopped) to a host path. */
export async function copyOut(options: {
  stateDir?: string;
  from: GuestLocation;
  hostPath: string;
}): Promise<CopyResult> {
  const { ws, record } = await loadForCopy(options.stateDir, options.from.name);
  const common = {
    direction: 'out' as const,
    workspace: record.name,
    guestPath: options.from.path,
    hostPath: options.hostPath,
  };
  if (record.state === 'running') {
    const r = await readGuestFile(ws.agentSocket, options.from.path, options.hostPath);
    return { ...common, bytes: r.bytes, via: 'agent' };
  }
  await using _lock = await lockOffline(options.stateDir, record.name, 'cp');
  const { readFileFromDisk } = await import('../rootfs/offline-files.js');
  const r = await readFileFromDisk(ws.disk, options.from.path, options.hostPath);
  return { ...common, bytes: r.size, via: 'disk' };
}

/** Declared outputs of a workspace (`create --output NAME=/path`). */
export async function listArtifacts(options: {
  stateDir?: string;
  name: string;
}): Promise<{ name: string; path: string }[]> {
  const { record } = await loadWorkspace(new StatePaths(options.stateDir), options.name);
  return Object.entries(record.outputs ?? {}).map(([name, path]) => ({ name, path }));
}

/** Copies one declared output to a host path. */
export async function getArtifact(options: {
  stateDir?: string;
  name: string;
  artifact: string;
  hostPath: string;
}): Promise<CopyResult> {
  const { record } = await loadWorkspace(new StatePaths(options.stateDir), options.name);
  const path = record.outputs?.[options.artifact];
  if (path === undefined) {
    throw new MicroagentError(
      'ARTIFACT_NOT_FOUND',
      `workspace ${record.name} declares no output "${options.artifact}"`,
      {
        remediation: `See the declared outputs with microagent artifacts ${record.name}.`,
        data: {
          name: record.name,
          artifact: options.artifact,
          declared: Object.keys(record.outputs ?? {}),
        },
      },
    );
  }
  return copyOut({
    ...(options.stateDir ? { stateDir: options.stateDir } : {}),
    from: { name: record.name, path },
    hostPath: options.hostPath,
  });
}
