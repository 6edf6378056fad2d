/**
 * The fs client (src/guest/fs-client.ts) and the exec client's tty support
 * against an in-process fake of agent.sock and the guest services: 100 MiB
 * in both directions with a stalled peer (memory must not grow with the
 * file), error mapping, early errors, a vanished guest.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { MicroagentError } from '../../src/errors.js';
import { startExec } from '../../src/guest/exec-client.js';
import { readGuestFile, writeGuestFile } from '../../src/guest/fs-client.js';
import {
  encodeExecJson,
  encodeExecMessage,
  encodeFsJson,
  ExecDecoder,
  ExecKind,
  FsKind,
  FsRequestSchema,
  GuestPort,
  type ExecMessage,
  type FsGuestMessage,
} from '../../src/guest/protocol.js';

const MiB = 1024 * 1024;

type Handler = (sock: Socket, port: number) => void;

/** A unix socket speaking agent.sock's CONNECT line, then handing the stream to handler. */
async function fakeAgent(dir: string, handler: Handler): Promise<{ path: string; server: Server }> {
  const path = join(dir, `agent-${Math.random().toString(36).slice(2)}.sock`);
  const server = createServer({ allowHalfOpen: true }, (sock) => {
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) return;
      sock.off('data', onData);
      sock.pause();
      const port = Number(/^CONNECT (\d+)$/.exec(buf.subarray(0, nl).toString())?.[1]);
      sock.write('OK 1\n');
      const rest = buf.subarray(nl + 1);
      if (rest.length > 0) sock.unshift(rest);
      handler(sock, port);
    };
    sock.on('data', onData);
    sock.on('error', () => {});
  });
  server.listen(path);
  await once(server, 'listening');
  return { path, server };
}

/**
 * Reads host messages from sock and hands them to onMessage, which may
 * return a promise: the socket is paused until it settles (backpressure).
 * (Not `for await`: ending that loop destroys the socket and drops what the
 * fake still has queued.)
 */
function readMessages(sock: Socket, onMessage: (m: ExecMessage) => void | Promise<void>): void {
  const decoder = new ExecDecoder();
  let chain = Promise.resolve();
  sock.on('data', (chunk: Buffer) => {
    const msgs = decoder.push(chunk);
    sock.pause();
    chain = chain
      .then(async () => {
        for (const m of msgs) await onMessage(m);
      })
      .catch(() => void sock.destroy())
      .finally(() => sock.resume());
  });
  sock.resume();
}

function json(m: ExecMessage): Record<string, unknown> {
  return JSON.parse(m.payload.toString()) as Record<string, unknown>;
}

async function writeAll(sock: Socket, b: Buffer): Promise<void> {
  if (sock.write(b)) return;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      sock.off('drain', done);
      sock.off('close', done);
      resolve();
    };
    sock.on('drain', done);
    sock.on('close', done);
  });
}

/** Deterministic content: byte i of the stream. */
function pattern(offset: number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = ((offset + i) * 2654435761) >>> 24;
  return b;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    assert.ok(err instanceof MicroagentError, String(err));
    return `${err.code}${err.data.guestCode ? `/${String(err.data.guestCode)}` : ''}`;
  }
}

describe('fs client', () => {
  let dir: string;
  const servers: Server[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ma-fsc-'));
  });
  after(async () => {
    for (const s of servers) s.close();
    await rm(dir, { recursive: true, force: true });
  });
  async function agent(handler: Handler): Promise<string> {
    const { path, server } = await fakeAgent(dir, handler);
    servers.push(server);
    return path;
  }

  test('reads 100 MiB with backpressure: a stalled destination stalls the guest', async () => {
    const size = 100 * MiB;
    let sent = 0;
    let port = 0;
    let request: unknown;
    const sock = await agent((s, p) => {
      port = p;
      readMessages(s, async (m) => {
        request = json(m);
        await writeAll(s, encodeFsJson({ type: 'stat', size, mode: 0o640, uid: 1, gid: 2 }));
        while (sent < size) {
          const n = Math.min(32763, size - sent);
          await writeAll(s, encodeExecMessage(FsKind.DATA_TO_HOST, pattern(sent, n)));
          sent += n;
        }
        s.end(encodeFsJson({ type: 'done', bytes: size }));
      });
    });
    const hash = createHash('sha256');
    let received = 0;
    let stalled = true;
    let pendingCb: (() => void) | undefined;
    const sink = new Writable({
      highWaterMark: 64 * 1024,
      write(c: Buffer, _e, cb) {
        hash.update(c);
        received += c.length;
        if (stalled && received > MiB) pendingCb = cb;
        else cb();
      },
    });
    const base = process.memoryUsage().arrayBuffers;
    const done = readGuestFile(sock, '/big', sink);
    await sleep(500);
    const sentWhileStalled = sent;
    assert.ok(sentWhileStalled < 16 * MiB, `the guest kept sending: ${sentWhileStalled}`);
    assert.ok(process.memoryUsage().arrayBuffers - base < 40 * MiB, 'memory grew while stalled');
    stalled = false;
    pendingCb?.();
    const r = await done;
    assert.deepEqual(r, { size, mode: 0o640, uid: 1, gid: 2, bytes: size });
    assert.equal(port, GuestPort.FS);
    assert.deepEqual(request, { type: 'read', v: 1, path: '/big' });
    assert.equal(hash.digest('hex'), createHash('sha256').update(pattern(0, size)).digest('hex'));
  });

  test('writes 100 MiB from a file with backpressure: a stalled guest stalls the client', async () => {
    const size = 100 * MiB;
    const src = join(dir, 'src.bin');
    await writeFile(src, pattern(0, size));
    let request: Record<string, unknown> | undefined;
    let received = 0;
    let ended = false;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const hash = createHash('sha256');
    const sock = await agent((s) => {
      readMessages(s, async (m) => {
        if (m.kind === FsKind.JSON) {
          request = json(m);
          await gate; // the guest does not read for a while
          return;
        }
        assert.equal(m.kind, FsKind.DATA_TO_GUEST);
        if (m.payload.length === 0) {
          ended = true;
          s.end(encodeFsJson({ type: 'done', bytes: received }));
          return;
        }
        received += m.payload.length;
        hash.update(m.payload);
      });
    });
    const base = process.memoryUsage().arrayBuffers;
    const done = writeGuestFile(sock, '/root/big', src, { uid: 7, gid: 8 });
    await sleep(500);
    assert.ok(process.memoryUsage().arrayBuffers - base < 40 * MiB, 'memory grew while stalled');
    release();
    assert.deepEqual(await done, { bytes: size });
    assert.ok(ended);
    assert.deepEqual(request, {
      type: 'write',
      v: 1,
      path: '/root/big',
      mode: 0o644, // the source file's
      uid: 7,
      gid: 8,
      size,
    });
    assert.equal(hash.digest('hex'), createHash('sha256').update(pattern(0, size)).digest('hex'));
  });

  test('guest errors map to typed errors; a failed read leaves no host file', async () => {
    const answer = (m: FsGuestMessage): Promise<string> =>
      agent((s) => readMessages(s, () => void s.end(encodeFsJson(m))));
    const out = join(dir, 'out.bin');
    const nf = await answer({ type: 'error', code: 'not_found', message: '/x: nope' });
    assert.equal(await code(readGuestFile(nf, '/x', out)), 'GUEST_FILE_NOT_FOUND/not_found');
    const isdir = await answer({ type: 'error', code: 'is_directory', message: '/x: dir' });
    assert.equal(await code(readGuestFile(isdir, '/x', out)), 'GUEST_FILE_ERROR/is_directory');
    assert.equal(
      await code(writeGuestFile(isdir, '/x', Buffer.from('abc'))),
      'GUEST_FILE_ERROR/is_directory',
    );
    try {
      await readGuestFile(nf, '/x', out);
    } catch (err) {
      assert.equal((err as MicroagentError).kind, 'not_found');
      assert.equal((err as MicroagentError & { origin: string }).origin, 'guest');
      assert.deepEqual((err as MicroagentError).data, {
        path: '/x',
        op: 'read',
        guestCode: 'not_found',
        guestMessage: '/x: nope',
      });
    }
    assert.equal(existsSync(out), false);
    assert.deepEqual(await readdir(dir).then((f) => f.filter((n) => n.includes('.ma-'))), []);
  });

  test('an error in the middle of a write stops the upload', async () => {
    const src = join(dir, 'src.bin'); // 100 MiB from the test above
    let got = 0;
    const sock = await agent((s) => {
      readMessages(s, (m) => {
        if (m.kind !== FsKind.DATA_TO_GUEST) return;
        got += m.payload.length;
        if (got >= MiB && s.writable)
          s.end(encodeFsJson({ type: 'error', code: 'io_error', message: 'No space left' }));
      });
    });
    assert.equal(await code(writeGuestFile(sock, '/f', src)), 'GUEST_FILE_ERROR/io_error');
    assert.ok(got < 32 * MiB, `kept sending after the error: ${got}`);
  });

  test('bad requests fail before connecting; a vanished guest and bad answers are reported', async () => {
    const never = join(dir, 'no.sock');
    assert.equal(await code(readGuestFile(never, 'rel', join(dir, 'o'))), 'INVALID_ARGUMENT');
    assert.equal(await code(readGuestFile(never, '/a\0b', join(dir, 'o'))), 'INVALID_ARGUMENT');
    assert.equal(
      await code(writeGuestFile(never, '/x', Buffer.alloc(1), { mode: 0o10000 })),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      await code(writeGuestFile(never, '/x', Buffer.alloc(1), { uid: 2 ** 32 - 1 })),
      'INVALID_ARGUMENT',
    );
    const gone = await agent((s) => readMessages(s, () => void s.end()));
    assert.equal(
      await code(readGuestFile(gone, '/x', join(dir, 'o'))),
      'GUEST_CHANNEL_UNAVAILABLE',
    );
    assert.equal(
      await code(writeGuestFile(gone, '/x', Buffer.from('x'))),
      'GUEST_CHANNEL_UNAVAILABLE',
    );
    const garbage = await agent((s) =>
      readMessages(s, () => void s.end(encodeExecMessage(FsKind.JSON, Buffer.from('{"type":1}')))),
    );
    assert.equal(await code(readGuestFile(garbage, '/x', join(dir, 'o'))), 'GUEST_PROTOCOL');
    const kind4 = await agent((s) =>
      readMessages(s, () => void s.end(encodeExecMessage(ExecKind.STDERR, Buffer.from('x')))),
    );
    assert.equal(await code(readGuestFile(kind4, '/x', join(dir, 'o'))), 'GUEST_PROTOCOL');
    const short = await agent((s) =>
      readMessages(s, () => {
        s.write(encodeFsJson({ type: 'stat', size: 3, mode: 0o644, uid: 0, gid: 0 }));
        s.write(encodeExecMessage(FsKind.DATA_TO_HOST, Buffer.from('ab')));
        s.end(encodeFsJson({ type: 'done', bytes: 3 }));
      }),
    );
    assert.equal(await code(readGuestFile(short, '/x', join(dir, 'o'))), 'GUEST_PROTOCOL');
    assert.deepEqual(await readdir(dir).then((f) => f.filter((n) => n.includes('.ma-'))), []);
  });

  test('the request schema accepts what the client sends', () => {
    assert.ok(FsRequestSchema.safeParse({ type: 'read', v: 1, path: '/x' }).success);
    assert.ok(
      FsRequestSchema.safeParse({ type: 'write', v: 1, path: '/x', mode: 0o644, size: 0 }).success,
    );
    assert.ok(!FsRequestSchema.safeParse({ type: 'write', v: 1, path: '/x', size: 0 }).success);
  });
});

describe('exec client with a tty', () => {
  let dir: string;
  let server: Server | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ma-ttyc-'));
  });
  after(async () => {
    server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('sends tty in the request and resize/signal messages; the exit resolves the handle', async () => {
    const seen: Record<string, unknown>[] = [];
    const fake = await fakeAgent(dir, (s, port) => {
      assert.equal(port, GuestPort.EXEC);
      readMessages(s, (m) => {
        if (m.kind !== ExecKind.JSON) return;
        const j = json(m);
        seen.push(j);
        if (j.type === 'exec') {
          s.write(encodeExecJson({ type: 'started', pid: 42 }));
          s.write(encodeExecMessage(ExecKind.STDOUT, Buffer.from('$ ')));
        }
        if (j.type === 'signal')
          s.end(
            encodeExecJson({
              type: 'exit',
              status: 'signaled',
              exitCode: 129,
              signal: 1,
              stdoutBytes: 2,
              stderrBytes: 0,
              stdoutTruncated: false,
              stderrTruncated: false,
              durationMs: 5,
            }),
          );
      });
    });
    server = fake.server;
    let out = '';
    let pid = 0;
    const handle = await startExec(
      fake.path,
      { argv: ['sh', '-i'], tty: { rows: 24, cols: 80, term: 'vt100' } },
      { onStdout: (c) => void (out += c.toString()), onStarted: (p) => (pid = p) },
    );
    while (pid === 0) await sleep(5);
    handle.resize(50, 132);
    assert.throws(() => handle.resize(0, 80));
    handle.kill(1);
    const exit = await handle.exit;
    assert.equal(exit.exitCode, 129);
    assert.equal(out, '$ ');
    assert.deepEqual(seen, [
      {
        type: 'exec',
        v: 1,
        argv: ['sh', '-i'],
        stdin: false,
        tty: { rows: 24, cols: 80, term: 'vt100' },
      },
      { type: 'resize', rows: 50, cols: 132 },
      { type: 'signal', signal: 1 },
    ]);
  });
});
