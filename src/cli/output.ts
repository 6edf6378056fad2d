/**
 * Rendering for the CLI: JSON documents, errors, colour only on a TTY, and
 * the documented exit codes.
 */
import { MicroagentError, toMicroagentError } from '../errors.js';

/** Documented, stable exit codes (docs/cli.md). */
export const EXIT = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  TEMPORARY: 75,
} as const;

export interface Output {
  /** AX mode: exactly one JSON envelope on stdout, nothing for humans. */
  json: boolean;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export function colorEnabled(stream: NodeJS.WritableStream): boolean {
  return (stream as NodeJS.WriteStream).isTTY === true && !process.env.NO_COLOR;
}

export function paint(stream: NodeJS.WritableStream, code: number, text: string): string {
  return colorEnabled(stream) ? `\x1b[${code}m${text}\x1b[0m` : text;
}

/**
 * The one JSON document of a command. In AX mode (--json, --mode ax) it is
 * the envelope {ok: true, result}; failures are {ok: false, error}.
 */
export function writeJson(out: Output, value: unknown): void {
  const doc = out.json ? { ok: true, result: value } : value;
  out.stdout.write(JSON.stringify(doc, null, 2) + '\n');
}

/** Prints an error (JSON on stdout in --json mode) and returns the exit code. */
export function reportError(out: Output, err: unknown): number {
  const error = toMicroagentError(err);
  if (out.json) {
    out.stdout.write(JSON.stringify({ ok: false, error: error.toJSON() }, null, 2) + '\n');
  } else {
    out.stderr.write(`${paint(out.stderr, 31, 'error:')} ${error.message}\n`);
    if (error.remediation) out.stderr.write(`  ${error.remediation}\n`);
  }
  return exitCodeFor(error);
}

export function exitCodeFor(error: MicroagentError): number {
  if (error.kind === 'usage') return EXIT.USAGE;
  if (error.kind === 'transient') return EXIT.TEMPORARY;
  return EXIT.FAILURE;
}

/** Fixed-width table for human output. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows
    .map((row) =>
      row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '),
    )
    .join('\n');
}
