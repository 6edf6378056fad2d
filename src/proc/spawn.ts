/**
 * The one module that starts processes. Every external tool runs through
 * here: explicit argv (never a shell string), its own process group, output
 * captured with a cap, and an escalating stop (SIGTERM, then SIGKILL to the
 * whole group, then confirm it is gone).
 */
import { spawn, type ChildProcess, type SpawnOptions, type StdioOptions } from 'node:child_process';
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { MicroagentError } from '../errors.js';

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Bytes written to the child's stdin, then closed. */
  input?: Buffer | string;
  /** Kill the process group after this many ms (SIGTERM, then SIGKILL). */
  timeoutMs?: number;
  /** Cap on captured stdout/stderr bytes each (the rest is dropped). */
  maxOutputBytes?: number;
  /** Resolve instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
  /** Package that provides the tool, named in the error when it is missing. */
  providedBy?: string;
  signal?: AbortSignal;
}

export interface RunResult {
  argv: string[];
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
}

const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024;

/**
 * Runs argv to completion and returns its output. Throws HOST_TOOL_MISSING
 * when the program does not exist and HOST_TOOL_FAILED on a non-zero exit
 * (unless allowFailure), with argv, exit code and stderr in the error.
 */
export async function run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv;
  if (file === undefined) throw new MicroagentError('INTERNAL', 'run() needs a program');
  const max = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const env = options.env ?? process.env;
  const child = spawn(file.includes('/') ? file : (findHostTool(file, env) ?? file), args, {
    cwd: options.cwd,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true, // own process group, so a stop reaches grandchildren too
  });
  const stdout = capture(child.stdout, max);
  const stderr = capture(child.stderr, max);
  child.stdin?.on('error', () => {}); // EPIPE when the child does not read its input
  child.stdin?.end(options.input ?? '');

  let timedOut = false;
  const timer =
    options.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          void stopProcessGroup(child);
        }, options.timeoutMs);
  const onAbort = (): void => void stopProcessGroup(child);
  options.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    const { code, signal } = await waitForExit(child);
    const result: RunResult = {
      argv: [...argv],
      exitCode: code,
      signal,
      stdout: await stdout,
      stderr: await stderr,
      timedOut,
    };
    if (!options.allowFailure && (code !== 0 || timedOut)) {
      throw toolFailed(result);
    }
    return result;
  } catch (err) {
    if (isEnoent(err)) {
      throw new MicroagentError('HOST_TOOL_MISSING', hostToolMissing(file), {
        remediation: options.providedBy
          ? `Install it with \`apt-get install ${options.providedBy}\` or run \`npm run setup\`.`
          : undefined,
        data: { argv: [...argv] },
        cause: err,
      });
    }
    throw err;
  } finally {
    if (timer) clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * The distribution's sbin folders: e2fsprogs (mke2fs, debugfs, e2fsck)
 * lives in /sbin on Debian, which an ordinary user's PATH lacks. Host
 * tools are looked for there after PATH.
 */
export const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'] as const;

/**
 * The absolute path of a host tool: the first executable file `name` on
 * PATH, then in SBIN_DIRS; undefined when there is none.
 */
export function findHostTool(
  name: string,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  const dirs = [...(env.PATH ?? '').split(delimiter).filter(Boolean), ...SBIN_DIRS];
  for (const d of dirs) {
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      if (!statSync(p).isFile()) continue;
    } catch {
      continue;
    }
    return p;
  }
  return undefined;
}

/** The message for a host tool that findHostTool cannot find. */
export function hostToolMissing(name: string): string {
  return name.includes('/')
    ? `${name} does not exist or is not executable`
    : `${name} is not installed (looked on PATH and in ${SBIN_DIRS.join(', ')})`;
}

export function toolFailed(result: RunResult): MicroagentError {
  const stderr = result.stderr.toString('utf8').trim();
  const how = result.timedOut
    ? 'timed out'
    : result.signal
      ? `was killed by ${result.signal}`
      : `exited with ${result.exitCode}`;
  return new MicroagentError(
    'HOST_TOOL_FAILED',
    `${result.argv.join(' ')} ${how}${stderr ? `: ${lastLines(stderr, 20)}` : ''}`,
    { data: { argv: result.argv, exitCode: result.exitCode, signal: result.signal, stderr } },
  );
}

export interface SpawnDetachedOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  stdio?: StdioOptions;
}

/**
 * Starts a long-lived process in its own session (it outlives its parent).
 * The caller owns it: use stopProcessGroup to end it.
 */
export function spawnDetached(
  argv: readonly string[],
  options: SpawnDetachedOptions = {},
): ChildProcess {
  const [file, ...args] = argv;
  if (file === undefined) throw new MicroagentError('INTERNAL', 'spawnDetached() needs a program');
  const spawnOptions: SpawnOptions = {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: options.stdio ?? 'ignore',
    detached: true,
  };
  return spawn(file, args, spawnOptions);
}

/**
 * Starts a child that stays attached to this process (same lifetime rules as
 * spawn), in its own process group, with pipes. For supervisors and servers
 * driven over stdio.
 */
export function spawnAttached(
  argv: readonly string[],
  options: SpawnDetachedOptions = {},
): ChildProcess {
  const [file, ...args] = argv;
  if (file === undefined) throw new MicroagentError('INTERNAL', 'spawnAttached() needs a program');
  return spawn(file, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: options.stdio ?? ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
}

/** Resolves when the child has exited (or failed to start: rejects). */
export function waitForExit(
  child: ChildProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode });
      return;
    }
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
}

/**
 * Escalating stop of a child's process group: SIGTERM, wait graceMs, SIGKILL,
 * then wait until it is gone.
 */
export async function stopProcessGroup(child: ChildProcess, graceMs = 2000): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = waitForExit(child).catch(() => undefined);
  signalGroup(child.pid, 'SIGTERM');
  const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
  if ((await Promise.race([exited, timer])) === 'timeout') {
    signalGroup(child.pid, 'SIGKILL');
    await exited;
  }
}

/** Sends a signal to a process group, ignoring a group that is already gone. */
export function signalGroup(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Sends a signal to one process; false when it does not exist. */
export function signalProcess(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** True while pid exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  if (!signalProcess(pid, 0)) return false;
  const stat = procStat(pid);
  return stat === undefined || stat.state !== 'Z';
}

export interface ProcStat {
  state: string;
  /** Start time in clock ticks since boot: with the pid, a unique identity. */
  startTime: number;
}

/** Reads /proc/<pid>/stat; undefined when the process is gone. */
export function procStat(pid: number): ProcStat | undefined {
  try {
    // Synchronous on purpose: callers poll, and /proc reads do not block.
    const text = readFileSyncSafe(`/proc/${pid}/stat`);
    if (text === undefined) return undefined;
    const close = text.lastIndexOf(')'); // comm may contain spaces and parens
    const fields = text.slice(close + 2).split(' ');
    return { state: fields[0] ?? '?', startTime: Number(fields[19]) };
  } catch {
    return undefined;
  }
}

/** A process named so that a reused pid is not mistaken for it. */
export interface ProcessIdentity {
  pid: number;
  /** From /proc/<pid>/stat; 0 when it could not be read (the pid alone decides). */
  startTime: number;
}

/** This process's identity, for owner stamps, locks and leases. */
export function currentProcess(): ProcessIdentity {
  return { pid: process.pid, startTime: procStat(process.pid)?.startTime ?? 0 };
}

/**
 * True while the process p names still runs: its pid is alive and not a
 * zombie, and it has the same start time (a reused pid is another process).
 */
export function processAlive(p: ProcessIdentity): boolean {
  if (!isAlive(p.pid)) return false;
  if (p.startTime === 0) return true;
  const stat = procStat(p.pid);
  return stat === undefined || stat.startTime === p.startTime;
}

function readFileSyncSafe(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function capture(stream: NodeJS.ReadableStream | null, max: number): Promise<Buffer> {
  return new Promise((resolve) => {
    if (!stream) return resolve(Buffer.alloc(0));
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      if (size >= max) return;
      const part = chunk.subarray(0, max - size);
      chunks.push(part);
      size += part.length;
    });
    stream.on('error', () => resolve(Buffer.concat(chunks)));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

function isEnoent(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

export function lastLines(text: string, n: number): string {
  const lines = text.split('\n');
  return lines.slice(Math.max(0, lines.length - n)).join('\n');
}
