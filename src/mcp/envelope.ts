/**
 * The answer every MCP tool gives, as structured content (and the same JSON
 * as text, for clients that only read text):
 *
 *   {ok: true,  result, meta: {tool, durationMs, requestId, replayed?}}
 *   {ok: false, error: {kind, code, message, remediation, retryable, data?}, meta}
 *
 * A failure is also flagged `isError: true`, so the model sees it as a
 * failed call. Handlers never throw out of the server: everything thrown
 * is classified here (typed library errors keep their code and kind).
 */
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { z } from 'zod';
import { MicroagentError, toMicroagentError, type ErrorKind } from '../index.js';

export interface EnvelopeMeta {
  tool: string;
  durationMs: number;
  /** The JSON-RPC id of the call that produced the answer. */
  requestId: string;
  /** Set when the answer is a replay of an earlier call with the same idempotency_key. */
  replayed?: boolean;
}

export interface EnvelopeError {
  kind: ErrorKind;
  code: string;
  message: string;
  remediation: string;
  retryable: boolean;
  data?: Record<string, unknown>;
}

export type Envelope =
  | { ok: true; result: unknown; meta: EnvelopeMeta }
  | { ok: false; error: EnvelopeError; meta: EnvelopeMeta };

export function errorOf(err: unknown): EnvelopeError {
  const e = toMicroagentError(err);
  const json = e.toJSON();
  return {
    kind: json.kind,
    code: json.code,
    message: json.message,
    remediation: json.remediation,
    retryable: json.retryable,
    ...(json.data ? { data: plain(json.data) } : {}),
  };
}

/** Drops what JSON cannot carry (a cause chain, buffers) from error data. */
function plain(data: Record<string, unknown>): Record<string, unknown> {
  try {
    return JSON.parse(JSON.stringify(data)) as Record<string, unknown>;
  } catch {
    return {};
  }
}

export function toCallToolResult(envelope: Envelope): CallToolResult {
  return {
    content: [{ type: 'text', text: JSON.stringify(envelope) }],
    structuredContent: envelope as unknown as Record<string, unknown>,
    ...(envelope.ok ? {} : { isError: true }),
  };
}

function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const seg of path)
    out += typeof seg === 'number' ? `[${seg}]` : out === '' ? seg : `.${seg}`;
  return out;
}

/** Arguments that fail the tool's schema: one message naming every bad field. */
export function argumentError(tool: string, error: z.ZodError): MicroagentError {
  const issues = error.issues.flatMap((issue) => {
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({
        field: formatPath([...issue.path, key]),
        message:
          key === 'state_dir' || key === 'stateDir'
            ? 'the state directory is fixed when the server starts (serve mcp --state-dir)'
            : 'unknown argument',
      }));
    }
    const field = formatPath(issue.path);
    let message = issue.message;
    if (issue.code === 'invalid_type') {
      message =
        issue.received === 'undefined'
          ? 'is required'
          : `expected ${issue.expected}, got ${issue.received}`;
    }
    return [{ field, message }];
  });
  const text = issues.map((i) => (i.field ? `${i.field}: ${i.message}` : i.message)).join('; ');
  return new MicroagentError('INVALID_ARGUMENT', `invalid arguments for ${tool}: ${text}`, {
    remediation: `Correct the named argument${issues.length > 1 ? 's' : ''}; tools/list has the schema of ${tool}.`,
    data: { tool, issues },
  });
}
