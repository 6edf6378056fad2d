/**
 * The typed handle of the public library: `createWorkspace()` /
 * `openWorkspace()` give a `Workspace` whose methods are the lifecycle
 * operations on that one workspace. Each method is the same call the CLI
 * and MCP make (lifecycle.ts, files.ts, views.ts); the handle only keeps
 * the name and state directory, so many handles on one workspace (in one
 * process or several) see the same state. `await using` kills and deletes a
 * throwaway workspace when the scope ends.
 */
import type { Readable } from 'node:stream';
import { MicroagentError } from '../errors.js';
import { StatePaths } from '../paths.js';
import type { ExecExit } from '../guest/protocol.js';
import { copyIn, copyOut, type CopyResult } from './files.js';
import {
  createWorkspace as createRecord,
  deleteWorkspace,
  execWorkspace,
  haltWorkspace,
  killWorkspace,
  pauseWorkspace,
  resumeWorkspace,
  startWorkspace,
  stopWorkspace,
  waitWorkspace,
  type CreateOptions,
  type StartOptions,
} from './lifecycle.js';
import { workspaceNetwork, type NetworkView } from './network-view.js';
import type { WorkspaceEvent, WorkspaceRecord } from './record.js';
import { loadWorkspace } from './store.js';
import {
  followEvents,
  readEvents,
  readLogs,
  workspaceStatus,
  type WorkspaceStatus,
} from './views.js';

/** Options of one exec (Workspace.exec and Workspace.execStream). */
export interface WorkspaceExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** The user to run as (an OCI `User`); default: the image's, else root. */
  user?: string;
  /** The guest kills the command's process group after this long (status `timed_out`). */
  timeoutMs?: number;
  /** Fed to the command's stdin; its end closes stdin. */
  stdin?: Readable;
  /** Aborting sends SIGTERM to the command (SIGKILL two seconds later). */
  signal?: AbortSignal;
}

/** Workspace.exec's result: the guest's exit and the output it kept. */
export interface WorkspaceExecResult extends ExecExit {
  stdout: Buffer;
  stderr: Buffer;
}

/** Largest output Workspace.exec buffers per stream (the guest stops sending beyond). */
export const EXEC_BUFFER_LIMIT = 64 * 1024 * 1024;

export class Workspace implements AsyncDisposable {
  private constructor(
    /** The workspace's name. */
    readonly name: string,
    /** The state directory it lives in (default `~/.microagent`). */
    readonly stateDir: string | undefined,
  ) {}

  /** Creates a workspace (state `prepared`; `halted` after setup commands). */
  static async create(options: CreateOptions): Promise<Workspace> {
    const record = await createRecord(options);
    return new Workspace(record.name, options.stateDir);
  }

  /** A handle on an existing workspace; WORKSPACE_NOT_FOUND when there is none. */
  static async open(name: string, options: { stateDir?: string } = {}): Promise<Workspace> {
    const ws = new Workspace(name, options.stateDir);
    await ws.record();
    return ws;
  }

  private get where(): { name: string; stateDir?: string } {
    return { name: this.name, ...(this.stateDir !== undefined ? { stateDir: this.stateDir } : {}) };
  }

  /** The workspace's record, reconciled with its VM. */
  async record(): Promise<WorkspaceRecord> {
    return (await loadWorkspace(new StatePaths(this.stateDir), this.name)).record;
  }

  /** Boots it from its disk; resolves when a command can run (`running`). */
  start(options: Omit<StartOptions, 'name' | 'stateDir'> = {}): Promise<WorkspaceRecord> {
    return startWorkspace({ ...options, ...this.where });
  }

  /**
   * Runs argv (never a shell string) and resolves with its exit and its
   * output, buffered (at most EXEC_BUFFER_LIMIT bytes per stream; the exit
   * says when output was cut). A non-zero exit is a result, not an error.
   */
  async exec(argv: string[], options: WorkspaceExecOptions = {}): Promise<WorkspaceExecResult> {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const exit = await execWorkspace({
      ...options,
      ...this.where,
      argv,
      stdoutLimit: EXEC_BUFFER_LIMIT,
      stderrLimit: EXEC_BUFFER_LIMIT,
      onStdout: (c) => void out.push(c),
      onStderr: (c) => void err.push(c),
    });
    return { ...exit, stdout: Buffer.concat(out), stderr: Buffer.concat(err) };
  }

  /**
   * Runs argv with its output streamed to the callbacks as it comes (a
   * returned promise holds the stream back until it settles).
   */
  execStream(
    argv: string[],
    options: WorkspaceExecOptions & {
      onStdout?: (chunk: Buffer) => void | Promise<void>;
      onStderr?: (chunk: Buffer) => void | Promise<void>;
    } = {},
  ): Promise<ExecExit> {
    return execWorkspace({ ...options, ...this.where, argv });
  }

  /** Copies a host file to guestPath: through the guest agent when it runs, else its disk. */
  copyIn(
    hostPath: string,
    guestPath: string,
    options: { mode?: number } = {},
  ): Promise<CopyResult> {
    return copyIn({
      ...(this.stateDir !== undefined ? { stateDir: this.stateDir } : {}),
      hostPath,
      to: { name: this.name, path: guestPath },
      ...(options.mode !== undefined ? { mode: options.mode } : {}),
    });
  }

  /** Copies guestPath to a host file (running or stopped). */
  copyOut(guestPath: string, hostPath: string): Promise<CopyResult> {
    return copyOut({
      ...(this.stateDir !== undefined ? { stateDir: this.stateDir } : {}),
      from: { name: this.name, path: guestPath },
      hostPath,
    });
  }

  /** Clean power-off; the disk is kept. */
  halt(): Promise<WorkspaceRecord> {
    return haltWorkspace(this.where);
  }

  /** Asks the guest to stop (STOP_TIMEOUT when it does not within 5 s). */
  stop(): Promise<WorkspaceRecord> {
    return stopWorkspace(this.where);
  }

  /** Hard stop. */
  kill(): Promise<WorkspaceRecord> {
    return killWorkspace(this.where);
  }

  /** Freezes the vCPUs. */
  pause(): Promise<WorkspaceRecord> {
    return pauseWorkspace(this.where);
  }

  resume(): Promise<WorkspaceRecord> {
    return resumeWorkspace(this.where);
  }

  /** Blocks until it is prepared, halted, stopped or failed (bounded by timeoutMs). */
  wait(timeoutMs?: number): Promise<WorkspaceRecord & { timedOut?: boolean }> {
    return waitWorkspace({ ...this.where, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
  }

  /** State, resources, disk, network, VM, readiness and verification (`status --json`). */
  status(): Promise<WorkspaceStatus> {
    return workspaceStatus(this.where);
  }

  /** The declared network and, while it runs, the live view (`network --json`). */
  network(): Promise<NetworkView> {
    return workspaceNetwork(this.where);
  }

  /** State changes, oldest first. */
  events(): Promise<WorkspaceEvent[]> {
    return readEvents(this.where);
  }

  /** Calls onEvent for every event, then each new one, until a terminal state or abort. */
  followEvents(onEvent: (event: WorkspaceEvent) => void, signal?: AbortSignal): Promise<void> {
    return followEvents({ ...this.where, onEvent, ...(signal ? { signal } : {}) });
  }

  /** The serial console of the current or last boot. */
  logs(): Promise<Buffer> {
    return readLogs(this.where);
  }

  /** Removes the workspace; it must not be running (kill or halt first). */
  async delete(): Promise<void> {
    await deleteWorkspace(this.where);
  }

  /** For `await using`: kills the VM if it runs and deletes the workspace. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.kill();
    } catch (err) {
      // not running (or already gone): nothing to kill
      if (!(err instanceof MicroagentError)) throw err;
    }
    try {
      await this.delete();
    } catch (err) {
      if (!(err instanceof MicroagentError && err.code === 'WORKSPACE_NOT_FOUND')) throw err;
    }
  }
}

/** Creates a workspace and returns its handle (Workspace.create). */
export function createWorkspace(options: CreateOptions): Promise<Workspace> {
  return Workspace.create(options);
}

/** A handle on an existing workspace (Workspace.open). */
export function openWorkspace(
  name: string,
  options: { stateDir?: string } = {},
): Promise<Workspace> {
  return Workspace.open(name, options);
}
