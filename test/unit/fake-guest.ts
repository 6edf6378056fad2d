/**
 * An in-process fake of the guest side of the mux (docs/protocol.md §1) and
 * of a tiny exec service (§3), for testing the host side without a VM. It
 * checks the host's behaviour as strictly as the real init should: frames
 * before HELLO, DATA beyond the window, frames on unknown streams are
 * recorded in `violations`.
 *
 * Services by port:
 *   1  exec — built-in programs: echo ARGS…, cat (stdin→stdout), yes N
 *      (N bytes of "y\n"), stderr TEXT, sleep (until signalled), exit N,
 *      missing (failed_to_start not_found)
 *   7  echo — every byte back, EOF back on EOF
 *   8  sink — consumes only when test code calls release() (slow consumer)
 *   other: RESET "no service on port N"
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import {
  encodeExecJson,
  encodeExecMessage,
  encodeFrame,
  ExecDecoder,
  ExecKind,
  FrameDecoder,
  FrameType,
  MUX_MAX_DATA,
  MUX_MAX_STREAMS,
  LEGACY_MUX_WINDOW,
  MUX_WINDOW,
  u32,
  type ExecExit,
  type Frame,
} from '../../src/guest/protocol.js';

type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

export class GuestStream extends EventEmitter {
  sendCredit = MUX_WINDOW;
  recvWindow: number;
  private readonly queue: Buffer[] = [];
  private endQueued = false;
  eofSent = false;
  eofReceived = false;
  closed = false;
  received = 0;

  constructor(
    readonly guest: FakeGuest,
    readonly id: number,
    readonly port: number,
  ) {
    super();
    this.recvWindow = guest.window;
  }

  write(b: Buffer): void {
    if (this.closed) return;
    this.queue.push(b);
    this.flush();
  }

  end(): void {
    this.endQueued = true;
    this.flush();
  }

  reset(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.guest.send(this.id, FrameType.RESET, Buffer.from(reason));
    this.guest.streams.delete(this.id);
  }

  /** Gives back credit for n consumed bytes. */
  consumed(n: number): void {
    if (this.closed || this.eofReceived) return;
    this.recvWindow += n;
    this.guest.send(this.id, FrameType.CREDIT, u32(n));
  }

  get queuedBytes(): number {
    return this.queue.reduce((a, b) => a + b.length, 0);
  }

  flush(): void {
    while (this.queue.length > 0 && this.sendCredit > 0 && !this.closed) {
      const head = this.queue[0]!;
      const n = Math.min(head.length, this.sendCredit, MUX_MAX_DATA);
      this.guest.send(this.id, FrameType.DATA, head.subarray(0, n));
      this.sendCredit -= n;
      if (n === head.length) this.queue.shift();
      else this.queue[0] = head.subarray(n);
    }
    if (this.queue.length === 0) {
      if (this.endQueued && !this.eofSent && !this.closed) {
        this.eofSent = true;
        this.guest.send(this.id, FrameType.EOF);
        this.maybeClose();
      }
      this.emit('drain');
    }
  }

  maybeClose(): void {
    if (this.eofSent && this.eofReceived && !this.closed) {
      this.closed = true;
      this.guest.streams.delete(this.id);
      this.emit('close');
    }
  }
}

export interface FakeGuestOptions {
  /** Send HELLO at once (default true). */
  hello?: boolean;
  /** Extra or replacement services. */
  services?: Record<number, (s: GuestStream) => void>;
  /** Act as an init from before HELLO carried `window` (a 128 KiB window). */
  legacyWindow?: boolean;
  /**
   * Hold every OPEN_OK until releaseOpenOks() (the service runs at once;
   * use one that sends nothing before it).
   */
  holdOpenOk?: boolean;
}

export class FakeGuest extends EventEmitter {
  readonly streams = new Map<number, GuestStream>();
  readonly violations: string[] = [];
  readonly powerOffs: unknown[] = [];
  hostHello: unknown;
  openCount = 0;
  maxConcurrent = 0;
  private readonly decoder = new FrameDecoder();
  private readonly seen = new Set<number>();
  private readonly services: Record<number, (s: GuestStream) => void>;
  /** Sink streams' pending (unconsumed) byte counts. */
  readonly sinks: GuestStream[] = [];
  private readonly heldOpenOks: number[] = [];

  constructor(
    readonly socket: Duplex,
    private readonly options: FakeGuestOptions = {},
  ) {
    super();
    this.services = {
      1: execService,
      7: echoService,
      8: (s) => this.sinkService(s),
      ...options.services,
    };
    socket.on('data', (b: Buffer) => this.onBytes(b));
    socket.on('error', () => {});
    if (options.hello !== false) this.sendHello();
  }

  /** The credit this guest grants per stream. */
  get window(): number {
    return this.options.legacyWindow ? LEGACY_MUX_WINDOW : MUX_WINDOW;
  }

  sendHello(): void {
    const hello = this.options.legacyWindow
      ? { v: 1, init: 'fake-0', bootMs: 42 }
      : { v: 1, init: 'fake-0', bootMs: 42, window: MUX_WINDOW };
    this.send(0, FrameType.HELLO, Buffer.from(JSON.stringify(hello)));
  }

  /** Sends the OPEN_OKs held back by holdOpenOk. */
  releaseOpenOks(): void {
    for (const id of this.heldOpenOks.splice(0)) this.send(id, FrameType.OPEN_OK);
  }

  sendResult(result: ExecExit): void {
    this.send(0, FrameType.RESULT, Buffer.from(JSON.stringify(result)));
  }

  send(stream: number, type: FrameTypeValue, payload?: Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(encodeFrame(stream, type, payload));
  }

  private sinkService(s: GuestStream): void {
    this.sinks.push(s);
    let pending = 0;
    s.on('data', (b: Buffer) => (pending += b.length));
    (s as GuestStream & { release: () => void }).release = () => {
      const n = pending;
      pending = 0;
      if (n > 0) s.consumed(n);
    };
    s.on('end', () => s.end());
  }

  private onBytes(b: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(b);
    } catch (err) {
      this.violations.push(`decode: ${(err as Error).message}`);
      return;
    }
    for (const f of frames) this.onFrame(f);
  }

  private onFrame(f: Frame): void {
    if (f.type !== FrameType.HELLO && this.hostHello === undefined)
      this.violations.push(`frame ${f.type} before host HELLO`);
    // Like the init: a frame for an id that was opened and then refused or
    // reset is ignored below; one for an id never opened is an error.
    if (f.stream !== 0 && f.type !== FrameType.OPEN && !this.seen.has(f.stream))
      this.violations.push(`frame ${f.type} on stream ${f.stream} that was never opened`);
    switch (f.type) {
      case FrameType.HELLO:
        this.hostHello = JSON.parse(f.payload.toString());
        this.emit('hello', this.hostHello);
        return;
      case FrameType.PING:
        this.send(0, FrameType.PONG, f.payload);
        return;
      case FrameType.POWEROFF:
        this.powerOffs.push(JSON.parse(f.payload.toString()));
        this.emit('poweroff');
        return;
      case FrameType.OPEN: {
        if (this.seen.has(f.stream)) this.violations.push(`stream id ${f.stream} reused`);
        this.seen.add(f.stream);
        const port = f.payload.readUInt32BE(0);
        const service = this.services[port];
        if (this.streams.size >= MUX_MAX_STREAMS) {
          this.send(f.stream, FrameType.RESET, Buffer.from('too many streams'));
          return;
        }
        if (!service) {
          this.send(f.stream, FrameType.RESET, Buffer.from(`no service on port ${port}`));
          return;
        }
        const s = new GuestStream(this, f.stream, port);
        this.streams.set(f.stream, s);
        this.openCount++;
        this.maxConcurrent = Math.max(this.maxConcurrent, this.streams.size);
        if (this.options.holdOpenOk) this.heldOpenOks.push(f.stream);
        else this.send(f.stream, FrameType.OPEN_OK);
        service(s);
        this.emit('open', s);
        return;
      }
      case FrameType.DATA: {
        const s = this.streams.get(f.stream);
        if (!s) return;
        if (f.payload.length > s.recvWindow)
          this.violations.push(`host overran window on ${f.stream}`);
        if (f.payload.length > MUX_MAX_DATA || f.payload.length === 0)
          this.violations.push(`bad DATA size ${f.payload.length}`);
        if (s.eofReceived) this.violations.push(`DATA after EOF on ${f.stream}`);
        s.recvWindow -= f.payload.length;
        s.received += f.payload.length;
        s.emit('data', f.payload);
        return;
      }
      case FrameType.EOF: {
        const s = this.streams.get(f.stream);
        if (!s) return;
        s.eofReceived = true;
        s.emit('end');
        s.maybeClose();
        return;
      }
      case FrameType.CREDIT: {
        const s = this.streams.get(f.stream);
        if (!s) return;
        const n = f.payload.readUInt32BE(0);
        s.sendCredit += n;
        if (s.sendCredit > MUX_WINDOW)
          this.violations.push(`host gave too much credit on ${f.stream}`);
        s.flush();
        return;
      }
      case FrameType.RESET: {
        const s = this.streams.get(f.stream);
        if (!s) return;
        s.closed = true;
        this.streams.delete(f.stream);
        s.emit('reset', f.payload.toString());
        return;
      }
      default:
        this.violations.push(`unexpected frame type ${f.type} from host`);
    }
  }
}

function echoService(s: GuestStream): void {
  s.on('data', (b: Buffer) => {
    s.write(b);
    s.consumed(b.length);
  });
  s.on('end', () => s.end());
}

/** A tiny exec service speaking docs/protocol.md §3. */
function execService(s: GuestStream): void {
  const dec = new ExecDecoder();
  let argv: string[] | undefined;
  let finished = false;
  let stdoutBytes = 0;
  let stderrBytes = 0;
  const started = Date.now();
  const out = (kind: typeof ExecKind.STDOUT | typeof ExecKind.STDERR, b: Buffer): void => {
    if (kind === ExecKind.STDOUT) stdoutBytes += b.length;
    else stderrBytes += b.length;
    s.write(encodeExecMessage(kind, b));
  };
  const exit = (partial: Partial<ExecExit> & Pick<ExecExit, 'status' | 'exitCode'>): void => {
    if (finished) return;
    finished = true;
    const msg: ExecExit = {
      type: 'exit',
      stdoutBytes,
      stderrBytes,
      stdoutTruncated: false,
      stderrTruncated: false,
      durationMs: Date.now() - started,
      ...partial,
    };
    s.write(encodeExecJson(msg));
    s.end();
  };
  s.on('data', (b: Buffer) => {
    s.consumed(b.length);
    for (const m of dec.push(b)) {
      if (m.kind === ExecKind.JSON) {
        const j = JSON.parse(m.payload.toString()) as {
          type: string;
          argv?: string[];
          signal?: number;
        };
        if (j.type === 'exec') {
          argv = j.argv ?? [];
          start();
        } else if (j.type === 'signal' && !finished) {
          exit({ status: 'signaled', exitCode: 128 + (j.signal ?? 15), signal: j.signal ?? 15 });
        }
      } else if (m.kind === ExecKind.STDIN) {
        if (argv?.[0] !== 'cat') continue;
        if (m.payload.length === 0) exit({ status: 'exited', exitCode: 0 });
        else out(ExecKind.STDOUT, m.payload);
      }
    }
  });
  s.on('end', () => s.end());
  const start = (): void => {
    const [cmd, ...args] = argv!;
    if (cmd === 'missing') {
      exit({
        status: 'failed_to_start',
        exitCode: 127,
        error: { code: 'not_found', message: 'missing: not found' },
      });
      return;
    }
    s.write(encodeExecJson({ type: 'started', pid: 4242 }));
    switch (cmd) {
      case 'echo':
        out(ExecKind.STDOUT, Buffer.from(args.join(' ') + '\n'));
        return exit({ status: 'exited', exitCode: 0 });
      case 'stderr':
        out(ExecKind.STDERR, Buffer.from(args.join(' ')));
        return exit({ status: 'exited', exitCode: 3 });
      case 'exit':
        return exit({ status: 'exited', exitCode: Number(args[0] ?? 0) });
      case 'yes': {
        let left = Number(args[0] ?? 0);
        const chunk = Buffer.alloc(16384, 'y\n');
        // Produce only while the stream's queue is small: a real program
        // blocks on its pipe when the host does not return credit.
        let busy = false; // out() can emit 'drain' synchronously
        const pump = (): void => {
          if (busy) return;
          busy = true;
          while (left > 0 && s.queuedBytes < 65536) {
            const n = Math.min(left, chunk.length);
            left -= n;
            out(ExecKind.STDOUT, chunk.subarray(0, n));
          }
          busy = false;
          if (left === 0) {
            s.off('drain', pump);
            exit({ status: 'exited', exitCode: 0 });
          }
        };
        s.on('drain', pump);
        return pump();
      }
      case 'cat':
      case 'sleep':
        return; // until stdin closes / a signal
      default:
        return exit({
          status: 'failed_to_start',
          exitCode: 127,
          error: { code: 'not_found', message: `${cmd}: not found` },
        });
    }
  };
}
