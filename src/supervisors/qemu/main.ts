/**
 * The QEMU supervisor executable (ARCHITECTURE D3):
 *
 *   node main.js < request.json > response.json
 *
 * Reads ONE JSON request on stdin, writes ONE JSON response line on stdout,
 * and exits 0 (ok:true), 1 (ok:false: the command failed) or 2 (ok:false:
 * the request could not be read or validated). Diagnostics go to stderr.
 * docs/supervisor-protocol.md is the contract.
 */
import { MicroagentError } from '../../errors.js';
import { SupervisorExit } from '../../vmkit/schema.js';
import { handleRequest } from './supervisor.js';

const MAX_REQUEST = 1024 * 1024;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > MAX_REQUEST) throw new Error(`request larger than ${MAX_REQUEST} bytes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function write(value: unknown, code: number): void {
  process.stdout.write(JSON.stringify(value) + '\n', () => process.exit(code));
}

let raw: unknown;
try {
  raw = JSON.parse(await readStdin());
} catch (err) {
  const e = new MicroagentError(
    'INVALID_ARGUMENT',
    `the request is not JSON: ${(err as Error).message}`,
  );
  write({ ok: false, error: e.toJSON() }, SupervisorExit.BAD_REQUEST);
  raw = undefined;
}
if (raw !== undefined) {
  const { response, exitCode } = await handleRequest(raw);
  if (!response.ok)
    process.stderr.write(`qemu supervisor: ${response.error.code}: ${response.error.message}\n`);
  write(response, exitCode);
}
