/**
 * The documents that `run` and `exec` return: one shape whether it comes
 * from the library, the CLI's `--json` or the MCP tool. Output is text
 * when it is valid UTF-8, else base64, with the encoding named.
 */
import type { ExecExit } from '../guest/protocol.js';
import type { RunResult } from './run.js';

export type OutputEncoding = 'utf8' | 'base64';

/** Text when the bytes are valid UTF-8, else base64, with the encoding named. */
export function encodeOutput(data: Buffer): { text: string; encoding: OutputEncoding } {
  try {
    return { text: new TextDecoder('utf-8', { fatal: true }).decode(data), encoding: 'utf8' };
  } catch {
    return { text: data.toString('base64'), encoding: 'base64' };
  }
}

interface OutputFields {
  stdout: string;
  stdoutEncoding: OutputEncoding;
  stderr: string;
  stderrEncoding: OutputEncoding;
}

function outputFields(stdout: Buffer, stderr: Buffer): OutputFields {
  const o = encodeOutput(stdout);
  const e = encodeOutput(stderr);
  return { stdout: o.text, stdoutEncoding: o.encoding, stderr: e.text, stderrEncoding: e.encoding };
}

/** `run`'s document: the run's result with the command's output. */
export type RunDocument = RunResult & OutputFields;

export function runDocument(result: RunResult, stdout: Buffer, stderr: Buffer): RunDocument {
  const { stdout: so, stdoutEncoding, stderr: se, stderrEncoding } = outputFields(stdout, stderr);
  return {
    workspace: result.workspace,
    status: result.status,
    exitCode: result.exitCode,
    ...(result.signal !== undefined ? { signal: result.signal } : {}),
    ...(result.error ? { error: result.error } : {}),
    stdout: so,
    stdoutEncoding,
    stdoutBytes: result.stdoutBytes,
    stdoutTruncated: result.stdoutTruncated,
    stderr: se,
    stderrEncoding,
    stderrBytes: result.stderrBytes,
    stderrTruncated: result.stderrTruncated,
    kept: result.kept,
    image: result.image,
    kernel: result.kernel,
    accel: result.accel,
    resources: result.resources,
    timings: result.timings,
  };
}

/** `exec`'s document: the guest's exit (without its wire `type`) and the output. */
export type ExecDocument = { workspace: string } & Omit<ExecExit, 'type'> & OutputFields;

export function execDocument(
  workspace: string,
  exit: ExecExit,
  stdout: Buffer,
  stderr: Buffer,
): ExecDocument {
  const { type: _type, ...rest } = exit;
  return { workspace, ...rest, ...outputFields(stdout, stderr) };
}
