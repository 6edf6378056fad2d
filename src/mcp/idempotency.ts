/**
 * Replay of mutating tool calls by `idempotency_key`. A client that lost an
 * answer (a timeout, a reconnect) repeats the call with the same key and gets
 * the first answer back instead of a second workspace. Concurrent calls with
 * the same key share one execution. The same key with other arguments is a
 * mistake worth stopping: IDEMPOTENCY_CONFLICT.
 *
 * Entries live for 15 minutes in this server process (at most 1,024, oldest
 * evicted first). Retryable failures are not kept: repeating the call is
 * then a real retry.
 */
import { MicroagentError } from '../index.js';
import type { Envelope } from './envelope.js';

export const IDEMPOTENCY_TTL_MS = 15 * 60 * 1000;
export const IDEMPOTENCY_MAX_ENTRIES = 1024;

interface Entry {
  fingerprint: string;
  expiresAt: number;
  answer: Promise<Envelope>;
}

/** JSON with object keys sorted, so that argument order does not matter. */
export function fingerprint(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)),
        )
      : v,
  );
}

export class IdempotencyStore {
  readonly #entries = new Map<string, Entry>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /**
   * The answer for (tool, key, args): a replay of the first call's answer
   * (`replayed: true`), or run() when the key is new. Throws
   * IDEMPOTENCY_CONFLICT when the key was used with other arguments.
   */
  async call(
    tool: string,
    key: string,
    args: unknown,
    run: () => Promise<Envelope>,
  ): Promise<{ envelope: Envelope; replayed: boolean }> {
    this.#prune();
    const id = `${tool}\u0000${key}`;
    const print = fingerprint(args);
    const existing = this.#entries.get(id);
    if (existing) {
      if (existing.fingerprint !== print) {
        throw new MicroagentError(
          'IDEMPOTENCY_CONFLICT',
          `idempotency_key "${key}" was already used for ${tool} with different arguments`,
          { data: { tool, idempotencyKey: key } },
        );
      }
      return { envelope: await existing.answer, replayed: true };
    }
    const answer = run();
    this.#entries.set(id, {
      fingerprint: print,
      expiresAt: this.#now() + IDEMPOTENCY_TTL_MS,
      answer,
    });
    while (this.#entries.size > IDEMPOTENCY_MAX_ENTRIES) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
    const envelope = await answer.catch((err: unknown) => {
      this.#entries.delete(id);
      throw err;
    });
    if (!envelope.ok && envelope.error.retryable) this.#entries.delete(id);
    return { envelope, replayed: false };
  }

  get size(): number {
    return this.#entries.size;
  }

  #prune(): void {
    const now = this.#now();
    for (const [id, entry] of this.#entries) {
      if (entry.expiresAt <= now) this.#entries.delete(id);
    }
  }
}
