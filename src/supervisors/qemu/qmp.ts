/**
 * A minimal QMP client: connect to QEMU's unix socket, read the greeting,
 * negotiate capabilities, then execute() commands and receive events.
 * QMP is line-delimited JSON; replies carry the id we sent.
 *
 * Events: 'event' ({event, data, timestamp}), 'close'.
 */
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { MicroagentError } from '../../errors.js';
import { sleep } from '../../proc/spawn.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class QmpClient extends EventEmitter {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private greeted: (() => void) | undefined;
  private closedFlag = false;

  private constructor(private readonly socket: Socket) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (s: string) => this.onData(s));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closedFlag = true;
      for (const p of this.pending.values()) {
        p.reject(new MicroagentError('VM_EXITED', `QMP closed before \`${p.command}\` answered`));
      }
      this.pending.clear();
      this.emit('close');
    });
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /**
   * Connects (retrying while QEMU has not created the socket yet, up to
   * timeoutMs) and negotiates capabilities. `alive` lets the caller stop the
   * retries early when QEMU has already exited.
   */
  static async connect(
    path: string,
    timeoutMs: number,
    alive: () => boolean = () => true,
  ): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => {
            s.off('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        });
        const client = new QmpClient(socket);
        await client.handshake(Math.max(1000, deadline - Date.now()));
        return client;
      } catch (err) {
        if (Date.now() >= deadline || !alive()) {
          throw new MicroagentError(
            'VMM_START_FAILED',
            `cannot reach QEMU's QMP socket ${path}: ${(err as Error).message}`,
            {
              cause: err,
            },
          );
        }
        await sleep(20);
      }
    }
  }

  private async handshake(timeoutMs: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no QMP greeting')), timeoutMs);
      this.greeted = () => {
        clearTimeout(timer);
        resolve();
      };
      this.socket.once('close', () => {
        clearTimeout(timer);
        reject(new Error('QMP closed during the greeting'));
      });
    });
    await this.execute('qmp_capabilities');
  }

  /** Runs a QMP command; resolves with its `return` value, rejects with its `error`. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<unknown> {
    if (this.closedFlag)
      return Promise.reject(
        new MicroagentError('VM_EXITED', `QMP is closed; cannot run \`${command}\``),
      );
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new MicroagentError(
            'VMM_START_FAILED',
            `QMP \`${command}\` did not answer within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      this.pending.set(id, {
        command,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.socket.write(
        JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + '\n',
      );
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(text: string): void {
    this.buffer += text;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line.length === 0) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue; // QEMU only sends JSON; ignore anything else
      }
      if ('QMP' in msg) {
        this.greeted?.();
        this.greeted = undefined;
      } else if ('event' in msg) {
        this.emit('event', msg as unknown as QmpEvent);
      } else if (typeof msg.id === 'string') {
        const p = this.pending.get(msg.id);
        if (!p) continue;
        this.pending.delete(msg.id);
        if ('error' in msg) {
          const e = msg.error as { class?: string; desc?: string };
          p.reject(
            new MicroagentError(
              'INTERNAL',
              `QMP \`${p.command}\` failed: ${e.class ?? ''} ${e.desc ?? ''}`.trim(),
            ),
          );
        } else p.resolve(msg.return);
      }
    }
  }
}
