/**
 * The library's side of the supervisor boundary (ARCHITECTURE D3): run a
 * supervisor executable with one JSON request on stdin and read its one JSON
 * response from stdout.
 */
import { MicroagentError, errorFromJSON } from '../errors.js';
import { lastLines, spawnAttached, stopProcessGroup, waitForExit } from '../proc/spawn.js';
import {
  StartResultSchema,
  StatusResultSchema,
  SupervisorRequestSchema,
  SupervisorResponseSchema,
  type StartResult,
  type StatusResult,
  type SupervisorRequestInput,
} from './schema.js';

export interface CallSupervisorOptions {
  /** Kill the supervisor after this long (SUPERVISOR_FAILED). Default 120 s. */
  timeoutMs?: number;
  /** Program that runs the supervisor script; default this Node (process.execPath). */
  interpreter?: string;
  env?: NodeJS.ProcessEnv;
}

const MAX_OUTPUT = 4 * 1024 * 1024;

/**
 * Runs `<interpreter> <supervisorPath>`, writes the request (validated here
 * first) to its stdin, and returns its response. A response with ok:false is
 * thrown as a RemoteError (origin 'supervisor') with the supervisor's code,
 * and its stderr in data.stderr. A non-zero exit must come with ok:false and
 * exit 0 with ok:true; anything else is SUPERVISOR_PROTOCOL.
 */
export async function callSupervisor(
  supervisorPath: string,
  request: SupervisorRequestInput & { command: 'start' },
  options?: CallSupervisorOptions,
): Promise<StartResult>;
export async function callSupervisor(
  supervisorPath: string,
  request: SupervisorRequestInput,
  options?: CallSupervisorOptions,
): Promise<StatusResult>;
export async function callSupervisor(
  supervisorPath: string,
  request: SupervisorRequestInput,
  options: CallSupervisorOptions = {},
): Promise<StartResult | StatusResult> {
  const parsed = SupervisorRequestSchema.safeParse(request);
  if (!parsed.success) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `invalid supervisor request: ${parsed.error.message}`,
    );
  }
  const argv = [options.interpreter ?? process.execPath, supervisorPath];
  const child = spawnAttached(argv, { ...(options.env ? { env: options.env } : {}) });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  let outSize = 0;
  let errSize = 0;
  child.stdout?.on('data', (b: Buffer) => {
    if ((outSize += b.length) <= MAX_OUTPUT) stdout.push(b);
  });
  child.stderr?.on('data', (b: Buffer) => {
    if ((errSize += b.length) <= MAX_OUTPUT) stderr.push(b);
  });
  child.stdin?.on('error', () => {});
  child.stdin?.end(JSON.stringify(parsed.data) + '\n');

  let timedOut = false;
  const timeoutMs = options.timeoutMs ?? 120_000;
  const timer = setTimeout(() => {
    timedOut = true;
    void stopProcessGroup(child, 1000);
  }, timeoutMs);
  let exit: { code: number | null; signal: NodeJS.Signals | null };
  try {
    exit = await waitForExit(child);
  } catch (err) {
    throw new MicroagentError(
      'SUPERVISOR_FAILED',
      `cannot run the supervisor ${argv.join(' ')}: ${(err as Error).message}`,
      {
        data: { argv },
        cause: err,
      },
    );
  } finally {
    clearTimeout(timer);
  }
  const err = Buffer.concat(stderr).toString('utf8').trim();
  const out = Buffer.concat(stdout).toString('utf8').trim();
  const facts = { argv, exitCode: exit.code, signal: exit.signal, stderr: err };
  if (timedOut) {
    throw new MicroagentError(
      'SUPERVISOR_FAILED',
      `the supervisor did not answer \`${parsed.data.command}\` within ${timeoutMs} ms`,
      {
        data: facts,
      },
    );
  }
  let response;
  try {
    response = SupervisorResponseSchema.parse(JSON.parse(out));
  } catch (e) {
    throw new MicroagentError(
      'SUPERVISOR_PROTOCOL',
      `the supervisor's answer to \`${parsed.data.command}\` cannot be read (exit ${exit.code ?? exit.signal})${err ? `: ${lastLines(err, 10)}` : ''}`,
      { data: { ...facts, stdout: out.slice(0, 4096) }, cause: e },
    );
  }
  if (!response.ok) {
    if (exit.code === 0) throw protocolMismatch('ok:false with exit code 0', facts);
    const remote = errorFromJSON('supervisor', response.error);
    Object.assign(remote.data, { supervisor: facts });
    throw remote;
  }
  if (exit.code !== 0)
    throw protocolMismatch(`ok:true with exit ${exit.code ?? exit.signal}`, facts);
  if (parsed.data.command === 'start') return StartResultSchema.parse(response);
  return StatusResultSchema.parse(response);
}

function protocolMismatch(what: string, data: Record<string, unknown>): MicroagentError {
  return new MicroagentError('SUPERVISOR_PROTOCOL', `the supervisor answered ${what}`, { data });
}
