/**
 * `connect`: an interactive shell in a running workspace, on a guest PTY.
 */
import type { Readable } from 'node:stream';
import { startExec, type ExecHandle } from '../guest/exec-client.js';
import { StatePaths } from '../paths.js';
import { execUserFor } from './image.js';
import { assertTransition } from './states.js';
import { loadWorkspace } from './store.js';

export interface ConnectOptions {
  stateDir?: string;
  name: string;
  /** Program to run (default: the image's /bin/sh as a login shell). */
  argv?: string[];
  /** USER[:GROUP] to run as (default: the image's User). */
  user?: string;
  rows: number;
  cols: number;
  term?: string;
  stdin: Readable;
  onOutput: (chunk: Buffer) => void | Promise<void>;
}

/**
 * Opens a shell on a PTY in the guest. The returned handle resizes it and
 * settles with its exit; closing the connection hangs the session up.
 */
export async function connectWorkspace(options: ConnectOptions): Promise<ExecHandle> {
  const paths = new StatePaths(options.stateDir);
  const { ws, record } = await loadWorkspace(paths, options.name);
  assertTransition('connect', record.state, record.name);
  const user = execUserFor(record.image.defaults, options.user);
  return startExec(
    ws.agentSocket,
    {
      argv: options.argv ?? ['/bin/sh', '-l'],
      tty: {
        rows: options.rows,
        cols: options.cols,
        ...(options.term ? { term: options.term } : {}),
      },
      ...(record.image.defaults?.workingDir ? { cwd: record.image.defaults.workingDir } : {}),
      ...(user ? { user } : {}),
    },
    { stdin: options.stdin, onStdout: options.onOutput },
  );
}
