/**
 * Host-side client of the guest file transfer service (docs/protocol.md §6):
 * copy one regular file out of or into a running guest over agent.sock,
 * streaming with backpressure (memory use does not grow with the file).
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { basename, dirname, join } from 'node:path';
import type { Writable } from 'node:stream';
import { MicroagentError, RemoteError } from '../errors.js';
import { connectAgent, vmFailure } from './agent-client.js';
import {
  encodeExecMessage,
  encodeFsJson,
  EXEC_HEADER_SIZE,
  ExecDecoder,
  FsGuestMessageSchema,
  FsKind,
  FsReadRequestSchema,
  FsWriteRequestSchema,
  GuestPort,
  PROTOCOL_VERSION,
  type ExecMessage,
  type FsGuestMessage,
  type FsStat,
} from './protocol.js';

export interface GuestFileOptions {
  /** Bound on connecting (including waiting for the guest to boot). Default 60 s. */
  timeoutMs?: number;
  /** Abort: the stream is reset; the guest drops a partial write (its temp file). */
  signal?: AbortSignal;
}

export interface WriteGuestFileOptions extends GuestFileOptions {
  /** Permission bits (0..0o7777, applied exactly). Default: the source file's (& 0o777), or 0o644 for a Buffer. */
  mode?: number;
  /** Owner in the guest; unchanged (the init's, root) when absent. */
  uid?: number;
  gid?: number;
}

export type GuestFileStat = Omit<FsStat, 'type'>;

export interface ReadGuestFileResult extends GuestFileStat {
  /** Bytes copied (differs from size only if the file changed while it was read). */
  bytes: number;
}

export interface WriteGuestFileResult {
  bytes: number;
}

/** Data message payloads the client sends (the guest takes them piecewise; big is fine). */
const WRITE_CHUNK = 256 * 1024;

/**
 * Copies the regular file at guestPath (absolute) out of the guest into
 * destination: a host file path (written to a temp file next to it and
 * renamed over it once complete, mode 0600 until then and then 0644; removed on
 * failure) or a Writable (written with backpressure, not ended).
 *
 * Rejects with GUEST_FILE_NOT_FOUND, GUEST_FILE_ERROR (data.guestCode:
 * is_directory, not_regular, permission_denied, io_error, invalid_request),
 * INVALID_ARGUMENT for a bad path, the connectAgent errors, VM_EXITED, or
 * GUEST_PROTOCOL.
 */
export async function readGuestFile(
  agentSock: string,
  guestPath: string,
  destination: Writable | string,
  options: GuestFileOptions = {},
): Promise<ReadGuestFileResult> {
  const req = parseOrThrow(() =>
    FsReadRequestSchema.parse({ type: 'read', v: PROTOCOL_VERSION, path: guestPath }),
  );
  let sink: Sink;
  if (typeof destination === 'string') sink = await FileSink.create(destination);
  else sink = new WritableSink(destination);
  let sock: Socket | undefined;
  try {
    sock = await connect(agentSock, options);
    const s = sock;
    const onAbort = (): void => void s.destroy();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      s.on('error', () => {}); // surfaced through the iteration below / the missing reply
      s.end(encodeFsJson(req)); // a read needs nothing more from the host
      let stat: GuestFileStat | undefined;
      let bytes = 0;
      const decoder = new ExecDecoder(FsKind.DATA_TO_HOST);
      let done: number | undefined;
      try {
        for await (const chunk of s as AsyncIterable<Buffer>) {
          for (const msg of decode(decoder, chunk)) {
            if (done !== undefined) throw protocolError('message after done');
            if (msg.kind === FsKind.DATA_TO_HOST) {
              if (!stat) throw protocolError('data before stat');
              bytes += msg.payload.length;
              const pending = sink.write(msg.payload);
              if (pending) await pending;
              continue;
            }
            if (msg.kind !== FsKind.JSON)
              throw protocolError(`the guest sent message kind ${msg.kind}`);
            const m = parseGuestMessage(msg);
            if (m.type === 'error') throw guestError(m, guestPath, 'read');
            if (m.type === 'stat') {
              if (stat) throw protocolError('second stat');
              stat = { size: m.size, mode: m.mode, uid: m.uid, gid: m.gid };
            } else {
              if (!stat) throw protocolError('done before stat');
              if (m.bytes !== bytes)
                throw protocolError(`done says ${m.bytes} bytes, ${bytes} arrived`);
              done = m.bytes;
            }
          }
        }
      } catch (err) {
        if (err instanceof MicroagentError) throw err;
        // A socket error (reset): decided below like an early end.
      }
      options.signal?.throwIfAborted();
      if (!stat || done === undefined) throw await endedEarly(agentSock, guestPath, 'read');
      await sink.finish();
      return { ...stat, bytes: done };
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      s.destroy();
    }
  } catch (err) {
    await sink.abort();
    throw err;
  }
}

/**
 * Writes source (a host file path, streamed, or a Buffer) to guestPath
 * (absolute) in the guest: the guest writes a temp file in the target's
 * directory, fsyncs it, applies uid/gid and mode, and renames it over
 * guestPath. A symlink at guestPath is replaced, never followed; the parent
 * directory must exist.
 *
 * Rejects like readGuestFile (GUEST_FILE_NOT_FOUND when the parent
 * directory does not exist).
 */
export async function writeGuestFile(
  agentSock: string,
  guestPath: string,
  source: string | Buffer,
  options: WriteGuestFileOptions = {},
): Promise<WriteGuestFileResult> {
  let fh: FileHandle | undefined;
  let size: number;
  let mode = options.mode;
  if (typeof source === 'string') {
    fh = await open(source, 'r');
    const st = await fh.stat().catch(async (err: unknown) => {
      await fh?.close();
      throw err;
    });
    if (!st.isFile()) {
      await fh.close();
      throw new MicroagentError('INVALID_ARGUMENT', `${source} is not a regular file`, {
        data: { path: source },
      });
    }
    size = st.size;
    mode ??= st.mode & 0o777;
  } else {
    size = source.length;
    mode ??= 0o644;
  }
  try {
    const req = parseOrThrow(() =>
      FsWriteRequestSchema.parse({
        type: 'write',
        v: PROTOCOL_VERSION,
        path: guestPath,
        mode,
        ...(options.uid !== undefined ? { uid: options.uid } : {}),
        ...(options.gid !== undefined ? { gid: options.gid } : {}),
        size,
      }),
    );
    const sock = await connect(agentSock, options);
    const onAbort = (): void => void sock.destroy();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await new WriteSession(sock, agentSock, guestPath).run(
        encodeFsJson(req),
        fh ?? (source as Buffer),
        size,
        options.signal,
      );
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      sock.destroy();
    }
  } finally {
    await fh?.close();
  }
}

class WriteSession {
  private readonly decoder = new ExecDecoder(FsKind.DATA_TO_HOST);
  private reply: FsGuestMessage | undefined;
  private failure: Error | undefined;
  private closed = false;
  private readonly settledPromise: Promise<void>;
  private wake: () => void = () => {};

  constructor(
    private readonly sock: Socket,
    private readonly agentSock: string,
    private readonly guestPath: string,
  ) {
    this.settledPromise = new Promise<void>((resolve) => {
      this.wake = resolve;
    });
    sock.on('error', () => {}); // 'close' follows
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Sends the request and the data; resolves with the guest's answer. */
  async run(
    request: Buffer,
    source: FileHandle | Buffer,
    size: number,
    signal: AbortSignal | undefined,
  ): Promise<WriteGuestFileResult> {
    this.sock.write(request);
    let sent = 0;
    while (sent < size && !this.stopped()) {
      const want = Math.min(WRITE_CHUNK, size - sent);
      let message: Buffer;
      if (Buffer.isBuffer(source)) {
        message = encodeExecMessage(FsKind.DATA_TO_GUEST, source.subarray(sent, sent + want));
      } else {
        // Read straight into a fresh message buffer (the socket may still hold the last one).
        const buf = Buffer.allocUnsafe(EXEC_HEADER_SIZE + want);
        const { bytesRead } = await source.read(buf, EXEC_HEADER_SIZE, want, sent);
        if (bytesRead === 0) break; // the file shrank: the guest reports the size mismatch
        buf.writeUInt8(FsKind.DATA_TO_GUEST, 0);
        buf.writeUInt32BE(bytesRead, 1);
        message = buf.subarray(0, EXEC_HEADER_SIZE + bytesRead);
      }
      this.sock.write(message);
      sent += message.length - EXEC_HEADER_SIZE;
      if (this.sock.writableNeedDrain) await this.drained();
    }
    if (!this.stopped()) {
      // The end of the data; the guest answers done or error, then EOF.
      this.sock.end(encodeExecMessage(FsKind.DATA_TO_GUEST, Buffer.alloc(0)));
    }
    await this.settledPromise;
    signal?.throwIfAborted();
    if (this.failure) throw this.failure;
    const reply = this.reply;
    if (reply?.type === 'error') throw guestError(reply, this.guestPath, 'write');
    if (reply?.type === 'done') {
      if (reply.bytes !== size)
        throw protocolError(`done says ${reply.bytes} bytes, ${size} were sent`);
      return { bytes: reply.bytes };
    }
    throw await endedEarly(this.agentSock, this.guestPath, 'write');
  }

  private stopped(): boolean {
    return this.reply !== undefined || this.failure !== undefined || this.closed;
  }

  private async drained(): Promise<void> {
    if (this.stopped()) return;
    await Promise.race([once(this.sock, 'drain'), this.settledPromise]);
  }

  private onData(chunk: Buffer): void {
    if (this.failure) return;
    try {
      for (const msg of decode(this.decoder, chunk)) {
        if (msg.kind !== FsKind.JSON)
          throw protocolError(`the guest sent message kind ${msg.kind} to a write`);
        if (this.reply) throw protocolError('message after the answer');
        const m = parseGuestMessage(msg);
        if (m.type === 'stat') throw protocolError('stat in answer to a write');
        this.reply = m;
        this.wake(); // stop sending; the guest drops the rest anyway
      }
    } catch (err) {
      this.failure = err as Error;
      this.sock.destroy();
      this.wake();
    }
  }
}

// ---- sinks for readGuestFile --------------------------------------------------------

interface Sink {
  /** A promise when the caller must wait before the next write. */
  write(chunk: Buffer): Promise<void> | undefined;
  finish(): Promise<void>;
  abort(): Promise<void>;
}

class WritableSink implements Sink {
  constructor(private readonly out: Writable) {}

  write(chunk: Buffer): Promise<void> | undefined {
    if (this.out.write(chunk)) return undefined;
    return new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        this.out.off('drain', onDrain);
        this.out.off('error', done);
        this.out.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = (): void => done();
      const onClose = (): void => done(new Error('the destination stream closed'));
      this.out.on('drain', onDrain);
      this.out.on('error', done);
      this.out.on('close', onClose);
    });
  }

  async finish(): Promise<void> {}
  async abort(): Promise<void> {}
}

/** A temp file next to the destination, renamed over it when complete. */
class FileSink implements Sink {
  private constructor(
    private readonly fh: FileHandle,
    private readonly tmp: string,
    private readonly dest: string,
  ) {}

  static async create(dest: string): Promise<FileSink> {
    const tmp = join(dirname(dest), `.${basename(dest)}.ma-${randomBytes(6).toString('hex')}`);
    return new FileSink(await open(tmp, 'wx', 0o600), tmp, dest);
  }

  write(chunk: Buffer): Promise<void> | undefined {
    return this.fh.write(chunk).then(() => undefined);
  }

  async finish(): Promise<void> {
    try {
      await this.fh.chmod(0o644);
      await this.fh.close();
      await rename(this.tmp, this.dest);
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await rm(this.tmp, { force: true }).catch(() => undefined);
  }
}

// ---- helpers ------------------------------------------------------------------------

function connect(agentSock: string, options: GuestFileOptions): Promise<Socket> {
  return connectAgent(agentSock, GuestPort.FS, {
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

function parseOrThrow<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    const issues = (err as { issues?: { path: unknown[]; message: string }[] }).issues;
    const text = issues
      ? issues.map((i) => `${i.path.join('.') || 'request'}: ${i.message}`).join('; ')
      : (err as Error).message;
    throw new MicroagentError('INVALID_ARGUMENT', `invalid file transfer request: ${text}`, {
      cause: err,
    });
  }
}

function decode(decoder: ExecDecoder, chunk: Buffer): ExecMessage[] {
  try {
    return decoder.push(chunk);
  } catch (err) {
    throw protocolError((err as Error).message);
  }
}

function parseGuestMessage(msg: ExecMessage): FsGuestMessage {
  try {
    return FsGuestMessageSchema.parse(JSON.parse(msg.payload.toString('utf8')));
  } catch (err) {
    throw protocolError((err as Error).message);
  }
}

function protocolError(detail: string): MicroagentError {
  return new MicroagentError('GUEST_PROTOCOL', `bad fs message from the guest: ${detail}`);
}

function guestError(
  m: Extract<FsGuestMessage, { type: 'error' }>,
  guestPath: string,
  op: 'read' | 'write',
): RemoteError {
  const data = { path: guestPath, op, guestCode: m.code, guestMessage: m.message };
  if (m.code === 'not_found')
    return new RemoteError('guest', 'GUEST_FILE_NOT_FOUND', `${op} ${m.message}`, { data });
  return new RemoteError('guest', 'GUEST_FILE_ERROR', `${op} ${m.message} (${m.code})`, { data });
}

async function endedEarly(
  agentSock: string,
  guestPath: string,
  op: 'read' | 'write',
): Promise<MicroagentError> {
  return (
    (await vmFailure(dirname(agentSock))) ??
    new MicroagentError(
      'GUEST_CHANNEL_UNAVAILABLE',
      `the fs stream for ${op} ${guestPath} ended before the guest's answer`,
      { data: { path: guestPath, op } },
    )
  );
}
