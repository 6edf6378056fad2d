/**
 * Shared helpers for tests that drive the real CLI against real QEMU.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../src/paths.js';

/**
 * The state directory shared by end-to-end tests: it keeps the installed
 * kernel and the default image between runs so that a re-run is quick.
 * Workspaces in it are throwaway.
 */
export const E2E_STATE_DIR =
  process.env.MICROAGENT_TEST_STATE_DIR ?? join(PACKAGE_ROOT, '.local', 'test-state');

export const CLI_MAIN = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
/** The CLI as users start it: from the start-up snapshot when it is current. */
export const CLI_BIN = join(PACKAGE_ROOT, 'bin', 'microagent');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: Buffer;
}

export interface CliOptions {
  input?: Buffer | string;
  env?: NodeJS.ProcessEnv;
  stateDir?: string;
  timeoutMs?: number;
}

/**
 * Starts the CLI through bin/microagent, so that the suite runs what users
 * run (src/cli/snapshot.ts), with MICROAGENT_STATE_DIR set.
 */
export function startCli(args: string[], options: CliOptions = {}): ChildProcess {
  return spawn(CLI_BIN, args, {
    env: {
      ...process.env,
      MICROAGENT_STATE_DIR: options.stateDir ?? E2E_STATE_DIR,
      ...options.env,
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** Runs the CLI to completion, collecting its output. */
export function cli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const child = startCli(args, options);
  return collect(child, options);
}

export function collect(child: ChildProcess, options: CliOptions = {}): Promise<CliResult> {
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout?.on('data', (c: Buffer) => stdout.push(c));
  child.stderr?.on('data', (c: Buffer) => stderr.push(c));
  child.stdin?.on('error', () => {});
  child.stdin?.end(options.input ?? '');
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr) });
    });
  });
}

/** Processes (pid, argv) whose command line mentions needle. */
export function processesMentioning(needle: string): { pid: number; cmdline: string }[] {
  const found: { pid: number; cmdline: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ');
      const state = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (state.slice(state.lastIndexOf(')') + 2).startsWith('Z')) continue;
      if (cmdline.includes(needle)) found.push({ pid, cmdline });
    } catch {
      // the process went away while we looked
    }
  }
  return found;
}

/** Waits (bounded) until no process mentions needle; returns those left. */
export async function waitNoProcesses(
  needle: string,
  timeoutMs = 10_000,
): Promise<{ pid: number; cmdline: string }[]> {
  const deadline = Date.now() + timeoutMs;
  let left = processesMentioning(needle);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = processesMentioning(needle);
  }
  return left;
}

/** Kills whatever mentions needle (test clean-up of last resort). */
export function killProcessesMentioning(needle: string): void {
  for (const p of processesMentioning(needle)) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(PACKAGE_ROOT, '.local', `${prefix}-`));
}

/** The document of a `--json` answer (`{ok, result}` wraps it). */
export function jsonOf<T>(r: { stdout: Buffer }): T {
  const doc = JSON.parse(r.stdout.toString()) as { ok?: boolean; result?: unknown };
  return (doc.ok === true && 'result' in doc ? doc.result : doc) as T;
}

/** This host's first non-loopback IPv4 address: "the host's own address". */
export function hostAddress(): string {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  throw new Error('this host has no non-loopback IPv4 address to serve the guest from');
}

/** Starts a TCP or HTTP server on host, port chosen by the kernel; resolves with the port. */
export function listen(server: Pick<Server, 'listen' | 'address'>, host: string): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port)),
  );
}

/** A loopback TCP port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const s = createServer();
  const port = await listen(s, '127.0.0.1');
  await new Promise((r) => s.close(r));
  return port;
}
