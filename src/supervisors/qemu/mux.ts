/**
 * Host side of the mux (docs/protocol.md §1): many byte streams over the one
 * virtio-serial port, with credit-based flow control per stream direction.
 *
 * The Mux owns the byte stream to QEMU's chardev. It waits for the guest's
 * HELLO, answers with its own, then opens streams on demand. Any violation
 * of the protocol by the guest is fatal: the Mux stops, emits 'error' with a
 * GUEST_PROTOCOL MicroagentError, and resets every stream.
 *
 * Events:
 *  - 'hello' (GuestHello)   the guest is ready
 *  - 'result' (ExecExit)    the boot command's result record
 *  - 'error' (MicroagentError) fatal protocol error
 *  - 'close' (reason: string) the channel is gone; every stream was reset
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { MicroagentError } from '../../errors.js';
import {
  encodeFrame,
  ExecExitSchema,
  FrameDecoder,
  FrameType,
  GuestHelloSchema,
  MUX_MAX_DATA,
  MUX_MAX_RESET_REASON,
  MUX_MAX_STREAMS,
  LEGACY_MUX_WINDOW,
  MUX_WINDOW,
  PROTOCOL_VERSION,
  u32,
  type ExecExit,
  type Frame,
  type GuestHello,
} from '../../guest/protocol.js';

/** Return credit once this much has been consumed (a quarter window): coalesces CREDIT frames. */
const CREDIT_BATCH = MUX_WINDOW / 4;
/** MuxStream.write() returns false once this much is queued locally. */
const WRITE_HIGH_WATER = 64 * 1024;

type StreamState = 'opening' | 'open' | 'closed';

/**
 * One stream. Events:
 *  - 'data' (chunk: Buffer, consumed: () => void)  call consumed() once the
 *    chunk has really been taken (written to a socket, a pipe, …): that is
 *    when its credit goes back to the guest. Forgetting it stalls the stream.
 *  - 'end'    the guest sent EOF
 *  - 'drain'  write() may be called again after it returned false
 *  - 'reset' (reason: string, byGuest: boolean)  the stream is dead
 *  - 'close'  the stream is finished (both EOFs, or a reset)
 */
export class MuxStream extends EventEmitter {
  private state: StreamState = 'opening';
  /** OPEN has gone out (a stream may wait for a free slot first). */
  private openSent = false;
  /** Bytes we may still send (the guest's window for us). */
  private sendCredit: number;
  /** Bytes the guest may still send us without a CREDIT from us. */
  private recvWindow = MUX_WINDOW;
  /** Consumed bytes not yet returned in a CREDIT frame. */
  private pendingCredit = 0;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private needDrain = false;
  private endQueued = false;
  private eofSent = false;
  private eofReceived = false;
  private endEmitted = false;
  private readonly inbox: Buffer[] = [];

  constructor(
    private readonly mux: Mux,
    readonly id: number,
    readonly port: number,
    /** The guest's window for this stream (its HELLO's `window`). */
    private readonly sendWindow: number,
  ) {
    super();
    this.sendCredit = sendWindow;
    this.on('newListener', (event: string) => {
      if (event === 'data' || event === 'end') queueMicrotask(() => this.deliver());
    });
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** Queues bytes to the guest; false when the caller should wait for 'drain'. */
  write(chunk: Uint8Array): boolean {
    if (this.state === 'closed' || this.endQueued) return false;
    if (chunk.length > 0) {
      this.queue.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
      this.queued += chunk.length;
      this.flush();
    }
    if (this.queued >= WRITE_HIGH_WATER) {
      this.needDrain = true;
      return false;
    }
    return true;
  }

  /** Half close: EOF is sent once the queued data has gone out. */
  end(): void {
    if (this.state === 'closed' || this.endQueued) return;
    this.endQueued = true;
    this.flush();
  }

  /** Aborts the stream: RESET to the guest, 'reset' + 'close' locally. */
  reset(reason: string): void {
    if (this.state === 'closed') return;
    this.mux.sendFrame(this.id, FrameType.RESET, truncateReason(reason));
    this.terminate(reason, false);
  }

  /** A write returned false and 'drain' has not been emitted yet. */
  get needsDrain(): boolean {
    return this.needDrain;
  }

  /** Bytes queued here waiting for credit. */
  get pendingBytes(): number {
    return this.queued;
  }

  // ---- called by the Mux ----------------------------------------------------

  /** @internal OPEN is on the wire: queued data may follow it. */
  onOpenSent(): void {
    this.openSent = true;
    this.flush();
  }

  /** @internal */
  onOpened(): void {
    if (this.state !== 'opening') return;
    this.state = 'open';
    this.flush();
  }

  /** @internal */
  onData(payload: Buffer): void {
    if (this.state === 'closed') return; // crossed a RESET
    if (this.state === 'opening')
      throw new MicroagentError('GUEST_PROTOCOL', `DATA on stream ${this.id} before OPEN_OK`);
    if (this.eofReceived)
      throw new MicroagentError('GUEST_PROTOCOL', `DATA on stream ${this.id} after EOF`);
    if (payload.length === 0 || payload.length > MUX_MAX_DATA) {
      throw new MicroagentError(
        'GUEST_PROTOCOL',
        `DATA of ${payload.length} bytes on stream ${this.id}`,
      );
    }
    if (payload.length > this.recvWindow) {
      throw new MicroagentError(
        'GUEST_PROTOCOL',
        `guest overran the window on stream ${this.id} (${payload.length} > ${this.recvWindow})`,
      );
    }
    this.recvWindow -= payload.length;
    this.inbox.push(payload);
    this.deliver();
  }

  /**
   * Hands buffered guest data (and then the guest's EOF) to 'data'
   * listeners. Data that arrives before anyone listens — e.g. in the same
   * read as OPEN_OK, before openStream()'s caller attached its handler —
   * waits here; the window bounds it.
   */
  private deliver(): void {
    while (this.inbox.length > 0 && this.listenerCount('data') > 0 && this.state !== 'closed') {
      const payload = this.inbox.shift()!;
      let done = false;
      const consumed = (): void => {
        if (done) return;
        done = true;
        this.returnCredit(payload.length);
      };
      this.emit('data', payload, consumed);
    }
    if (
      this.inbox.length === 0 &&
      this.eofReceived &&
      !this.endEmitted &&
      this.state !== 'closed'
    ) {
      this.endEmitted = true;
      this.emit('end');
      this.maybeFinish();
    }
  }

  /** @internal */
  onEof(): void {
    if (this.state === 'closed') return;
    if (this.state === 'opening')
      throw new MicroagentError('GUEST_PROTOCOL', `EOF on stream ${this.id} before OPEN_OK`);
    if (this.eofReceived)
      throw new MicroagentError('GUEST_PROTOCOL', `second EOF on stream ${this.id}`);
    this.eofReceived = true;
    this.deliver();
  }

  /** @internal */
  onCredit(increment: number): void {
    if (this.state === 'closed') return;
    if (this.sendCredit + increment > this.sendWindow) {
      throw new MicroagentError(
        'GUEST_PROTOCOL',
        `guest returned more credit than it consumed on stream ${this.id}`,
      );
    }
    this.sendCredit += increment;
    this.flush();
  }

  /** @internal The guest reset the stream (or the mux died). */
  terminate(reason: string, byGuest: boolean): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.queue.length = 0;
    this.queued = 0;
    this.inbox.length = 0;
    this.mux.forget(this);
    this.emit('reset', reason, byGuest);
    this.emit('close');
  }

  private returnCredit(n: number): void {
    if (this.state === 'closed') return;
    this.recvWindow += n;
    this.pendingCredit += n;
    // Coalesce, but never hold back so much that the guest could stall:
    // whatever we hold is < CREDIT_BATCH < window, so the guest always keeps
    // some credit. After the guest's EOF nothing more comes: skip it.
    if (this.pendingCredit >= CREDIT_BATCH && !this.eofReceived) {
      this.mux.sendFrame(this.id, FrameType.CREDIT, u32(this.pendingCredit));
      this.pendingCredit = 0;
    }
  }

  private flush(): void {
    // Data may follow OPEN before OPEN_OK: the window is granted at OPEN,
    // and the guest ignores what crosses its RESET of a refused stream.
    if (this.state === 'closed' || !this.openSent) return;
    while (this.queued > 0 && this.sendCredit > 0) {
      const head = this.queue[0]!;
      const n = Math.min(head.length, this.sendCredit, MUX_MAX_DATA);
      this.mux.sendFrame(this.id, FrameType.DATA, head.subarray(0, n));
      this.sendCredit -= n;
      this.queued -= n;
      if (n === head.length) this.queue.shift();
      else this.queue[0] = head.subarray(n);
    }
    if (this.queued === 0 && this.endQueued && !this.eofSent) {
      this.eofSent = true;
      this.mux.sendFrame(this.id, FrameType.EOF);
    }
    if (this.needDrain && this.queued < WRITE_HIGH_WATER) {
      this.needDrain = false;
      this.emit('drain');
    }
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.state === 'open' && this.eofSent && this.endEmitted) {
      this.state = 'closed';
      this.mux.forget(this);
      this.emit('close');
    }
  }
}

function truncateReason(reason: string): Buffer {
  let b = Buffer.from(reason, 'utf8');
  if (b.length > MUX_MAX_RESET_REASON) {
    // Cut on a character boundary so the guest sees valid UTF-8.
    b = Buffer.from(
      b
        .subarray(0, MUX_MAX_RESET_REASON)
        .toString('utf8')
        .replace(/\uFFFD$/, ''),
      'utf8',
    );
    while (b.length > MUX_MAX_RESET_REASON) b = b.subarray(0, b.length - 1);
  }
  return b;
}

interface PendingOpen {
  stream: MuxStream;
  resolve: (s: MuxStream) => void;
  reject: (e: Error) => void;
}

export class Mux extends EventEmitter {
  private readonly decoder = new FrameDecoder();
  private guestHello: GuestHello | undefined;
  private dead: string | undefined;
  private nextId = 1;
  private readonly streams = new Map<number, MuxStream>();
  private readonly opening = new Map<number, PendingOpen>();
  /** Opens waiting for a free slot (the guest serves at most 64 streams). */
  private readonly waitingOpens: PendingOpen[] = [];
  private readonly pings = new Map<
    string,
    { start: bigint; resolve: (us: number) => void; reject: (e: Error) => void }
  >();
  private pingCounter = 0n;
  private readonly helloWaiters: {
    resolve: (h: GuestHello) => void;
    reject: (e: Error) => void;
  }[] = [];

  constructor(private readonly socket: Duplex) {
    super();
    socket.on('data', (chunk: Buffer) => this.onBytes(chunk));
    socket.on('error', (err) => this.shutdown(`mux socket error: ${err.message}`));
    socket.on('close', () => this.shutdown('the VM closed the guest channel'));
  }

  /** The guest's HELLO, once it arrived. */
  get hello(): GuestHello | undefined {
    return this.guestHello;
  }

  get closed(): boolean {
    return this.dead !== undefined;
  }

  get activeStreams(): number {
    return this.streams.size;
  }

  /** Resolves with the guest's HELLO (rejects if the channel dies first). */
  ready(): Promise<GuestHello> {
    if (this.guestHello) return Promise.resolve(this.guestHello);
    if (this.dead !== undefined) return Promise.reject(channelClosed(this.dead));
    return new Promise((resolve, reject) => this.helloWaiters.push({ resolve, reject }));
  }

  /**
   * Opens a stream to a guest port. Resolves once the guest answered
   * OPEN_OK; rejects with GUEST_CHANNEL_UNAVAILABLE carrying the guest's
   * RESET reason (data.reason) or the channel's death reason. `early`
   * bytes go out right behind OPEN instead of a round trip later (a
   * request the guest can act on at once); they are lost if the guest
   * refuses the stream.
   */
  async openStream(port: number, early?: Uint8Array): Promise<MuxStream> {
    if (!Number.isInteger(port) || port < 0 || port > 0xffffffff)
      throw new RangeError(`bad port ${port}`);
    await this.ready();
    if (this.dead !== undefined) throw channelClosed(this.dead);
    const stream = new MuxStream(
      this,
      this.nextId++,
      port,
      this.guestHello?.window ?? LEGACY_MUX_WINDOW,
    );
    if (early !== undefined && early.length > 0) stream.write(early);
    return new Promise((resolve, reject) => {
      const pending: PendingOpen = { stream, resolve, reject };
      if (this.streams.size >= MUX_MAX_STREAMS) this.waitingOpens.push(pending);
      else this.startOpen(pending);
    });
  }

  /** Raw channel round trip in microseconds; rejects after timeoutMs without a PONG. */
  ping(timeoutMs = 5000): Promise<number> {
    if (this.dead !== undefined) return Promise.reject(channelClosed(this.dead));
    if (!this.guestHello)
      return Promise.reject(
        new MicroagentError('GUEST_CHANNEL_UNAVAILABLE', 'the guest is not ready yet'),
      );
    const payload = Buffer.allocUnsafe(8);
    payload.writeBigUInt64BE(++this.pingCounter);
    const key = payload.toString('hex');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pings.delete(key);
        reject(
          new MicroagentError(
            'GUEST_CHANNEL_UNAVAILABLE',
            `the guest did not answer a PING within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      const settle =
        <T>(f: (v: T) => void) =>
        (v: T): void => {
          clearTimeout(timer);
          f(v);
        };
      this.pings.set(key, {
        start: process.hrtime.bigint(),
        resolve: settle(resolve),
        reject: settle(reject),
      });
      this.sendFrame(0, FrameType.PING, payload);
    });
  }

  /** Asks the guest to power off (docs/protocol.md §1 "Power off"). */
  powerOff(reason: string): void {
    if (this.dead !== undefined || !this.guestHello) {
      throw new MicroagentError(
        'GUEST_CHANNEL_UNAVAILABLE',
        'the guest is not ready; it cannot be asked to power off',
      );
    }
    this.sendFrame(0, FrameType.POWEROFF, Buffer.from(JSON.stringify({ reason }), 'utf8'));
  }

  /**
   * Ends the channel from the host side: every stream is reset with reason,
   * pending opens and pings fail. Idempotent; emits 'close' once.
   */
  shutdown(reason: string): void {
    if (this.dead !== undefined) return;
    this.dead = reason;
    const err = channelClosed(reason);
    for (const w of this.helloWaiters.splice(0)) w.reject(err);
    for (const p of [...this.opening.values(), ...this.waitingOpens.splice(0)]) {
      p.stream.terminate(reason, false);
      p.reject(err);
    }
    this.opening.clear();
    for (const s of [...this.streams.values()]) s.terminate(reason, false);
    for (const p of this.pings.values()) p.reject(err);
    this.pings.clear();
    this.socket.destroy();
    this.emit('close', reason);
  }

  // ---- internals ---------------------------------------------------------------

  /** @internal */
  sendFrame(
    stream: number,
    type: (typeof FrameType)[keyof typeof FrameType],
    payload?: Uint8Array,
  ): void {
    if (this.dead !== undefined) return;
    // No backpressure on the shared socket on purpose: what can be queued is
    // bounded by the per-stream windows plus small control frames.
    this.socket.write(encodeFrame(stream, type, payload));
  }

  /** @internal A stream finished; frees its slot. */
  forget(stream: MuxStream): void {
    this.opening.delete(stream.id);
    if (this.streams.get(stream.id) === stream) this.streams.delete(stream.id);
    while (
      this.dead === undefined &&
      this.streams.size < MUX_MAX_STREAMS &&
      this.waitingOpens.length > 0
    ) {
      this.startOpen(this.waitingOpens.shift()!);
    }
  }

  private startOpen(p: PendingOpen): void {
    this.streams.set(p.stream.id, p.stream);
    this.opening.set(p.stream.id, p);
    this.sendFrame(p.stream.id, FrameType.OPEN, u32(p.stream.port));
    p.stream.onOpenSent();
  }

  private onBytes(chunk: Buffer): void {
    if (this.dead !== undefined) return;
    try {
      for (const frame of this.decoder.push(chunk)) {
        this.onFrame(frame);
        if (this.dead !== undefined) return;
      }
    } catch (err) {
      this.fatal(err);
    }
  }

  private fatal(err: unknown): void {
    const e =
      err instanceof MicroagentError
        ? err
        : new MicroagentError(
            'GUEST_PROTOCOL',
            `guest protocol error: ${err instanceof Error ? err.message : String(err)}`,
            { cause: err },
          );
    // 'error' first, so the owner learns why before the 'close' that follows.
    if (this.listenerCount('error') > 0) this.emit('error', e);
    this.shutdown(e.message);
  }

  private onFrame(f: Frame): void {
    if (!this.guestHello && f.type !== FrameType.HELLO) {
      throw new MicroagentError('GUEST_PROTOCOL', `frame type ${f.type} before the guest's HELLO`);
    }
    switch (f.type) {
      case FrameType.HELLO: {
        if (f.stream !== 0)
          throw new MicroagentError('GUEST_PROTOCOL', 'HELLO on a non-zero stream');
        if (this.guestHello)
          throw new MicroagentError('GUEST_PROTOCOL', 'second HELLO from the guest');
        const hello = GuestHelloSchema.parse(parseJson(f.payload, 'HELLO'));
        this.guestHello = hello;
        this.sendFrame(
          0,
          FrameType.HELLO,
          Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, timeMs: Date.now() }), 'utf8'),
        );
        for (const w of this.helloWaiters.splice(0)) w.resolve(hello);
        this.emit('hello', hello);
        return;
      }
      case FrameType.PONG: {
        this.requireControl(f);
        const key = f.payload.toString('hex');
        const p = this.pings.get(key);
        if (!p) return; // a late PONG for a ping we gave up on
        this.pings.delete(key);
        p.resolve(Number((process.hrtime.bigint() - p.start) / 1000n));
        return;
      }
      case FrameType.RESULT: {
        this.requireControl(f);
        const result: ExecExit = ExecExitSchema.parse(parseJson(f.payload, 'RESULT'));
        this.emit('result', result);
        return;
      }
      case FrameType.OPEN_OK: {
        const p = this.opening.get(f.stream);
        if (!p) {
          this.requireKnown(f);
          return; // crossed our RESET
        }
        if (f.payload.length !== 0)
          throw new MicroagentError('GUEST_PROTOCOL', 'OPEN_OK with a payload');
        this.opening.delete(f.stream);
        p.stream.onOpened();
        p.resolve(p.stream);
        return;
      }
      case FrameType.RESET: {
        if (f.payload.length > MUX_MAX_RESET_REASON)
          throw new MicroagentError('GUEST_PROTOCOL', 'RESET reason too long');
        const reason = f.payload.toString('utf8');
        const p = this.opening.get(f.stream);
        if (p) {
          this.opening.delete(f.stream);
          p.stream.terminate(reason, true);
          p.reject(
            new MicroagentError(
              'GUEST_CHANNEL_UNAVAILABLE',
              `the guest refused port ${p.stream.port}: ${reason}`,
              {
                data: { port: p.stream.port, reason },
              },
            ),
          );
          return;
        }
        const s = this.streams.get(f.stream);
        if (s) s.terminate(reason, true);
        else this.requireKnown(f);
        return;
      }
      case FrameType.DATA:
      case FrameType.EOF:
      case FrameType.CREDIT: {
        const s = this.streams.get(f.stream);
        if (!s) {
          this.requireKnown(f);
          return; // crossed a RESET
        }
        if (f.type === FrameType.DATA) s.onData(f.payload);
        else if (f.type === FrameType.EOF) {
          if (f.payload.length !== 0)
            throw new MicroagentError('GUEST_PROTOCOL', 'EOF with a payload');
          s.onEof();
        } else {
          if (f.payload.length !== 4)
            throw new MicroagentError('GUEST_PROTOCOL', 'CREDIT payload is not a u32');
          s.onCredit(f.payload.readUInt32BE(0));
        }
        return;
      }
      default:
        throw new MicroagentError('GUEST_PROTOCOL', `frame type ${f.type} is not sent by a guest`);
    }
  }

  private requireControl(f: Frame): void {
    if (f.stream !== 0)
      throw new MicroagentError('GUEST_PROTOCOL', `control frame ${f.type} on stream ${f.stream}`);
  }

  /** Frames for an id we never opened are fatal; for a finished one, ignored. */
  private requireKnown(f: Frame): void {
    if (f.stream === 0 || f.stream >= this.nextId) {
      throw new MicroagentError(
        'GUEST_PROTOCOL',
        `frame type ${f.type} on unknown stream ${f.stream}`,
      );
    }
  }
}

function parseJson(payload: Buffer, what: string): unknown {
  try {
    return JSON.parse(payload.toString('utf8'));
  } catch (err) {
    throw new MicroagentError('GUEST_PROTOCOL', `the guest's ${what} is not JSON`, { cause: err });
  }
}

function channelClosed(reason: string): MicroagentError {
  return new MicroagentError(
    'GUEST_CHANNEL_UNAVAILABLE',
    `the guest channel is closed: ${reason}`,
    { data: { reason } },
  );
}
