/**
 * Host-side client of the guest exec service (docs/protocol.md §3): run one
 * program in the guest over agent.sock, stream its output as it comes, feed
 * its stdin, forward cancellation as signals; optionally on a
 * pseudo-terminal (request.tty) whose size can change while it runs.
 */
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { dirname } from 'node:path';
import { MicroagentError } from '../errors.js';
import { connectAgent, vmFailure } from './agent-client.js';
import {
  encodeExecJson,
  encodeExecMessage,
  EXEC_MAX_MESSAGE,
  ExecDecoder,
  ExecExitSchema,
  ExecGuestMessageSchema,
  ExecKind,
  ExecRequestSchema,
  ExecResizeSchema,
  ExecSignalSchema,
  GuestPort,
  PROTOCOL_VERSION,
  type ExecExit,
  type ExecMessage,
  type ExecRequest,
} from './protocol.js';

/**
 * The request without its protocol fields. With `tty: {rows, cols, term?}`
 * the program runs on a new pseudo-terminal: its output (stdout and stderr
 * together, with the terminal's line discipline applied) arrives through
 * onStdout, `options.stdin` feeds the terminal's input, and the end of
 * `options.stdin` does not close anything (the program sees ^D only if the
 * user types it).
 */
export type ExecInput = Omit<ExecRequest, 'type' | 'v'>;

/** A running guest program (startExec). */
export interface ExecHandle {
  /** Settles like execInGuest's promise. */
  readonly exit: Promise<ExecExit>;
  /** New terminal size (rows, cols: 1..65535); the guest ignores it without a tty. */
  resize(rows: number, cols: number): void;
  /** Sends a signal (1..64, default 15) to the program's process group; ignored once it has exited. */
  kill(signal?: number): void;
}

export interface ExecOptions {
  /**
   * Output chunks as they arrive. Return a promise to apply backpressure:
   * the socket is not read (so the guest is throttled by the mux window)
   * until it settles.
   */
  onStdout?: (chunk: Buffer) => void | Promise<void>;
  onStderr?: (chunk: Buffer) => void | Promise<void>;
  /** The guest process started (its pid in the guest). */
  onStarted?: (pid: number) => void;
  /** Fed to the program's stdin (request.stdin is set to true); its end closes stdin. */
  stdin?: Readable;
  /** Abort: SIGTERM to the program's process group, SIGKILL killGraceMs later. */
  signal?: AbortSignal;
  /** Default 2000. */
  killGraceMs?: number;
  /** Bound on connecting (including waiting for the guest to boot). Default 60 s. */
  timeoutMs?: number;
}

/**
 * Runs request.argv in the guest and resolves with its `exit` message
 * (zod-validated) once it has ended. Output is delivered in order through
 * onStdout/onStderr before the promise resolves. Rejects with the
 * connectAgent errors, VM_EXITED (with the console tail) when the VM dies
 * mid-run, or GUEST_PROTOCOL when the guest answers something malformed.
 * An abort does not reject: the program is signalled and its `exit`
 * (status `signaled`) is returned.
 */
export async function execInGuest(
  agentSock: string,
  request: ExecInput,
  options: ExecOptions = {},
): Promise<ExecExit> {
  return (await startExec(agentSock, request, options)).exit;
}

/**
 * Like execInGuest, but resolves as soon as the stream to the guest is open
 * and the request is sent, with a handle to resize the terminal and signal
 * the program; `handle.exit` settles as execInGuest's promise does. Connect
 * failures reject this call itself.
 */
export async function startExec(
  agentSock: string,
  request: ExecInput,
  options: ExecOptions = {},
): Promise<ExecHandle> {
  const wantStdin = options.stdin !== undefined || request.stdin === true;
  const req = ExecRequestSchema.parse({
    ...request,
    type: 'exec',
    v: PROTOCOL_VERSION,
    stdin: wantStdin,
  });
  // The request travels with CONNECT: the guest starts the command as the
  // stream opens instead of a channel round trip later.
  const sock = await connectAgent(agentSock, GuestPort.EXEC, {
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    early: encodeExecJson(req),
  });
  const session = new ExecSession(sock, agentSock, req, options);
  const exit = session.run();
  // The caller may attach its handler later; an unobserved rejection must not crash.
  exit.catch(() => {});
  return {
    exit,
    resize: (rows, cols) => session.sendResize(rows, cols),
    kill: (signal = 15) => session.sendSignal(signal),
  };
}

class ExecSession {
  private readonly decoder = new ExecDecoder();
  private readonly queue: ExecMessage[] = [];
  private processing = false;
  private exit: ExecExit | undefined;
  private settled = false;
  private killTimer: NodeJS.Timeout | undefined;
  private resolve!: (e: ExecExit) => void;
  private reject!: (e: Error) => void;

  constructor(
    private readonly sock: Socket,
    private readonly agentSock: string,
    private readonly req: ExecRequest,
    private readonly options: ExecOptions,
  ) {}

  run(): Promise<ExecExit> {
    const done = new Promise<ExecExit>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    const { sock, options } = this;
    sock.on('error', () => {}); // 'close' follows and decides
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('close', () => void this.onClosed());
    sock.on('end', () => void this.onClosed());
    if (options.signal) {
      if (options.signal.aborted) this.onAbort();
      else options.signal.addEventListener('abort', this.onAbort, { once: true });
    }
    if (this.req.stdin) void this.pumpStdin();
    return done.finally(() => {
      options.signal?.removeEventListener('abort', this.onAbort);
      if (this.killTimer) clearTimeout(this.killTimer);
      sock.end();
      setTimeout(() => sock.destroy(), 2000).unref();
    });
  }

  private readonly onAbort = (): void => {
    if (this.settled) return;
    this.sendSignal(15);
    this.killTimer = setTimeout(() => this.sendSignal(9), this.options.killGraceMs ?? 2000);
  };

  sendSignal(signal: number): void {
    if (this.settled || this.sock.destroyed) return;
    this.sock.write(encodeExecJson(ExecSignalSchema.parse({ type: 'signal', signal })));
  }

  sendResize(rows: number, cols: number): void {
    if (this.settled || this.sock.destroyed) return;
    this.sock.write(encodeExecJson(ExecResizeSchema.parse({ type: 'resize', rows, cols })));
  }

  private async pumpStdin(): Promise<void> {
    const input = this.options.stdin;
    try {
      if (input) {
        for await (const chunk of input) {
          if (this.settled || this.sock.destroyed) return;
          const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
          for (let off = 0; off < buf.length; off += EXEC_MAX_MESSAGE) {
            if (
              !this.sock.write(
                encodeExecMessage(ExecKind.STDIN, buf.subarray(off, off + EXEC_MAX_MESSAGE)),
              )
            ) {
              await new Promise<void>((r) => {
                const done = (): void => {
                  this.sock.off('drain', done);
                  this.sock.off('close', done);
                  r();
                };
                this.sock.on('drain', done);
                this.sock.on('close', done);
              });
            }
          }
        }
      }
    } catch {
      // a failing stdin source just closes the program's stdin
    }
    if (!this.settled && !this.sock.destroyed)
      this.sock.write(encodeExecMessage(ExecKind.STDIN, Buffer.alloc(0)));
  }

  private onData(chunk: Buffer): void {
    if (this.settled) return;
    try {
      this.queue.push(...this.decoder.push(chunk));
    } catch (err) {
      this.fail(
        new MicroagentError(
          'GUEST_PROTOCOL',
          `bad exec message from the guest: ${(err as Error).message}`,
        ),
      );
      return;
    }
    void this.drainQueue();
  }

  private async drainQueue(): Promise<void> {
    if (this.processing) return;
    this.processing = true;
    try {
      while (this.queue.length > 0 && !this.settled) {
        const msg = this.queue.shift()!;
        const pending = this.handle(msg);
        if (pending) {
          // Backpressure: stop reading until the consumer has taken it.
          this.sock.pause();
          await pending;
          if (!this.sock.destroyed) this.sock.resume();
        }
      }
    } catch (err) {
      this.fail(
        err instanceof MicroagentError
          ? err
          : new MicroagentError('EXEC_FAILED', `output handler failed: ${(err as Error).message}`, {
              cause: err,
            }),
      );
    } finally {
      this.processing = false;
    }
    if (this.queue.length === 0 && this.exit && !this.settled) {
      this.settled = true;
      this.resolve(this.exit);
    } else if (this.closedEarly) void this.onClosed();
  }

  private handle(msg: ExecMessage): Promise<void> | undefined {
    switch (msg.kind) {
      case ExecKind.STDOUT: {
        const r = this.options.onStdout?.(msg.payload);
        return r instanceof Promise ? r : undefined;
      }
      case ExecKind.STDERR: {
        const r = this.options.onStderr?.(msg.payload);
        return r instanceof Promise ? r : undefined;
      }
      case ExecKind.JSON: {
        let parsed;
        try {
          parsed = ExecGuestMessageSchema.parse(JSON.parse(msg.payload.toString('utf8')));
        } catch (err) {
          throw new MicroagentError(
            'GUEST_PROTOCOL',
            `bad exec message from the guest: ${(err as Error).message}`,
          );
        }
        if (this.exit) throw new MicroagentError('GUEST_PROTOCOL', 'exec message after exit');
        if (parsed.type === 'started') this.options.onStarted?.(parsed.pid);
        else this.exit = ExecExitSchema.parse(parsed);
        return undefined;
      }
      default:
        throw new MicroagentError('GUEST_PROTOCOL', `the guest sent exec message kind ${msg.kind}`);
    }
  }

  private closedEarly = false;

  private async onClosed(): Promise<void> {
    if (this.settled) return;
    if (this.processing || this.queue.length > 0) {
      this.closedEarly = true; // decide once the queued output is delivered
      return;
    }
    if (this.exit) {
      this.settled = true;
      this.resolve(this.exit);
      return;
    }
    const vm = await vmFailure(dirname(this.agentSock));
    this.fail(
      vm ??
        new MicroagentError(
          'EXEC_FAILED',
          `the exec stream for ${JSON.stringify(this.req.argv[0])} ended before its exit status`,
          {
            data: { argv: this.req.argv },
          },
        ),
    );
  }

  private fail(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.sock.destroy();
    this.reject(err);
  }
}
