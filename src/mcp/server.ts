/**
 * The MCP server: the tools of tools.ts over the official SDK (McpServer).
 *
 * Tool calls are dispatched here rather than by McpServer's own handler so
 * that every failure — a schema error included — comes back in the same
 * envelope (envelope.ts) with isError, and so that mutating calls go through
 * the idempotency store. McpServer still owns tools/list (schemas, hints).
 *
 * The state directory is fixed when the server is made. close() aborts the
 * calls in flight (a `run` signals its command, then tears its VM down and
 * deletes its throwaway workspace) and waits a bounded time for them; a run
 * still booting after that is ended by its monitor's owner lease when this
 * process exits.
 */
import type { Readable, Writable } from 'node:stream';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import { CallToolRequestSchema, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { MicroagentError, StatePaths, packageVersion } from '../index.js';
import {
  argumentError,
  errorOf,
  toCallToolResult,
  type Envelope,
  type EnvelopeMeta,
} from './envelope.js';
import { IdempotencyStore } from './idempotency.js';
import { TOOLS, type ToolContext, type ToolDef } from './tools.js';

/** How long close() waits for calls in flight after aborting them. */
export const CLOSE_GRACE_MS = 10_000;

const INSTRUCTIONS = `microagent runs commands in Linux microVMs ("workspaces").
- One-off command: call run (a throwaway VM; a non-zero exit is a result, not an error).
- Longer work: create → start → exec (as often as needed) → cp/artifacts → halt → delete.
- Every answer is {ok, result | error, meta}; errors carry kind, code, remediation and retryable.
- Repeat a mutating call with the same idempotency_key to get its first answer instead of acting twice.`;

const idempotencyKey = z
  .string()
  .min(1)
  .max(200)
  .describe(
    'Repeat a call with the same key (within 15 minutes) to get its first answer back instead of acting twice',
  );

interface RegisteredTool {
  def: ToolDef;
  schema: z.ZodObject<z.ZodRawShape>;
}

export interface McpServerOptions {
  /** State directory (default: MICROAGENT_STATE_DIR or ~/.microagent). Fixed for the server's life. */
  stateDir?: string;
  /** How long close() waits for calls in flight (default CLOSE_GRACE_MS). */
  closeGraceMs?: number;
}

export class MicroagentMcpServer {
  readonly mcp: McpServer;
  readonly stateDir: string;
  readonly #tools = new Map<string, RegisteredTool>();
  readonly #idempotency = new IdempotencyStore();
  readonly #inflight = new Set<Promise<Envelope>>();
  readonly #shutdown = new AbortController();
  readonly #closeGraceMs: number;
  #closed: Promise<{ abandoned: number }> | undefined;

  constructor(options: McpServerOptions = {}) {
    this.stateDir = new StatePaths(options.stateDir).root;
    this.#closeGraceMs = options.closeGraceMs ?? CLOSE_GRACE_MS;
    this.mcp = new McpServer(
      { name: 'microagent', version: packageVersion() },
      { capabilities: { tools: {} }, instructions: INSTRUCTIONS },
    );
    for (const def of TOOLS) {
      const shape = def.mutating
        ? { ...def.shape, idempotency_key: idempotencyKey.optional() }
        : def.shape;
      const schema = z.object(shape).strict();
      this.#tools.set(def.name, { def, schema });
      this.mcp.registerTool(
        def.name,
        {
          title: def.title,
          description: def.description,
          inputSchema: schema,
          annotations: { title: def.title, ...def.annotations },
        },
        // Never called: tools/call is dispatched by #call (set below).
        () => ({ content: [], isError: true }),
      );
    }
    this.mcp.server.setRequestHandler(CallToolRequestSchema, (request, extra) =>
      this.#call(
        request.params.name,
        request.params.arguments,
        request.params._meta?.progressToken,
        extra,
      ),
    );
  }

  /** Connects a transport (stdio in production; an in-memory pair in tests). */
  async connect(transport: Transport): Promise<void> {
    await this.mcp.connect(transport);
  }

  /** Number of tool calls running now. */
  get inflight(): number {
    return this.#inflight.size;
  }

  /**
   * Stops taking calls, aborts the ones in flight and waits for them (at
   * most closeGraceMs), then closes the transport. Idempotent.
   */
  close(): Promise<{ abandoned: number }> {
    this.#closed ??= (async () => {
      this.#shutdown.abort();
      const pending = [...this.#inflight];
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(pending),
        new Promise((r) => {
          timer = setTimeout(r, this.#closeGraceMs);
        }),
      ]);
      clearTimeout(timer);
      const abandoned = this.#inflight.size;
      await this.mcp.close().catch(() => undefined);
      return { abandoned };
    })();
    return this.#closed;
  }

  async #call(
    name: string,
    rawArgs: unknown,
    progressToken: string | number | undefined,
    extra: {
      signal: AbortSignal;
      requestId: string | number;
      sendNotification: (n: {
        method: 'notifications/progress';
        params: {
          progressToken: string | number;
          progress: number;
          total?: number;
          message?: string;
        };
      }) => Promise<void>;
    },
  ): Promise<CallToolResult> {
    const started = performance.now();
    const meta = (): EnvelopeMeta => ({
      tool: name,
      durationMs: Math.round(performance.now() - started),
      requestId: String(extra.requestId),
    });
    const fail = (err: unknown): CallToolResult =>
      toCallToolResult({ ok: false, error: errorOf(err), meta: meta() });

    const registered = this.#tools.get(name);
    if (!registered) {
      return fail(
        new MicroagentError('INVALID_ARGUMENT', `unknown tool "${name}"`, {
          remediation: `Call one of: ${[...this.#tools.keys()].join(', ')}.`,
        }),
      );
    }
    const parsed = registered.schema.safeParse(rawArgs ?? {});
    if (!parsed.success) return fail(argumentError(name, parsed.error));
    if (this.#shutdown.signal.aborted) {
      return fail(
        new MicroagentError('GUEST_CHANNEL_UNAVAILABLE', 'the MCP server is shutting down', {
          remediation: 'Reconnect and retry.',
        }),
      );
    }
    const { idempotency_key: key, ...args } = parsed.data as Record<string, unknown> & {
      idempotency_key?: string;
    };

    let step = 0;
    const progress: ToolContext['progress'] = (message, value, total) => {
      if (progressToken === undefined) return;
      step = value !== undefined && value > step ? value : step + 1;
      extra
        .sendNotification({
          method: 'notifications/progress',
          params: {
            progressToken,
            progress: step,
            ...(total !== undefined && total >= step ? { total } : {}),
            message,
          },
        })
        .catch(() => undefined);
    };
    const execute = (): Promise<Envelope> => {
      const signal = AbortSignal.any([extra.signal, this.#shutdown.signal]);
      const ctx: ToolContext = { stateDir: this.stateDir, signal, progress };
      const answer = (async (): Promise<Envelope> => {
        try {
          const result = await registered.def.handler(args, ctx);
          return { ok: true, result: result ?? null, meta: meta() };
        } catch (err) {
          return { ok: false, error: errorOf(err), meta: meta() };
        }
      })();
      this.#inflight.add(answer);
      void answer.finally(() => this.#inflight.delete(answer));
      return answer;
    };

    if (registered.def.mutating && key !== undefined) {
      try {
        const { envelope, replayed } = await this.#idempotency.call(name, key, args, execute);
        return toCallToolResult(
          replayed ? { ...envelope, meta: { ...envelope.meta, replayed: true } } : envelope,
        );
      } catch (err) {
        return fail(err);
      }
    }
    return toCallToolResult(await execute());
  }
}

export interface ServeStdioOptions extends McpServerOptions {
  stdin?: Readable;
  stdout?: Writable;
}

/**
 * Serves MCP over stdin/stdout until stdin closes (or stdout breaks), then
 * closes the server (see close()). Resolves with what close() reports.
 * Nothing but MCP messages is written to stdout.
 */
export async function serveMcpStdio(
  options: ServeStdioOptions = {},
): Promise<{ abandoned: number }> {
  const stdin = options.stdin ?? process.stdin;
  const stdout = options.stdout ?? process.stdout;
  const server = new MicroagentMcpServer(options);
  const transport = new StdioServerTransport(stdin, stdout);
  const ended = new Promise<void>((resolve) => {
    stdin.once('end', resolve);
    stdin.once('close', resolve);
    stdin.once('error', () => resolve());
    // The client went away mid-answer (EPIPE): nobody is left to answer.
    stdout.once('error', () => resolve());
    transport.onclose = () => resolve();
  });
  await server.connect(transport);
  await ended;
  return await server.close();
}
