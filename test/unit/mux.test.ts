/**
 * The host side of the mux against an in-process fake guest over a real
 * unix socket pair: handshake, streams, flow control, resets, control frames
 * and fatal protocol errors.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { MicroagentError } from '../../src/errors.js';
import {
  encodeFrame,
  FrameType,
  LEGACY_MUX_WINDOW,
  MUX_WINDOW,
  u32,
} from '../../src/guest/protocol.js';
import { Mux, type MuxStream } from '../../src/supervisors/qemu/mux.js';
import { FakeGuest, type FakeGuestOptions, type GuestStream } from './fake-guest.js';

const dir = mkdtempSync(join(tmpdir(), 'mux-test-'));
let n = 0;
const open: { server: Server; host: Socket; guest: Socket }[] = [];

after(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => {
  for (const p of open.splice(0)) {
    p.host.destroy();
    p.guest.destroy();
    p.server.close();
  }
});

async function pair(
  options: FakeGuestOptions = {},
): Promise<{ mux: Mux; guest: FakeGuest; guestSock: Socket }> {
  const path = join(dir, `s${n++}.sock`);
  const server = createServer();
  await new Promise<void>((r) => server.listen(path, r));
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const guestSock = connect(path);
  const host = await accepted;
  open.push({ server, host, guest: guestSock });
  const mux = new Mux(host);
  const guest = new FakeGuest(guestSock, options);
  return { mux, guest, guestSock };
}

/** Collects a host stream's bytes, consuming as they come. */
function collect(s: MuxStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (b: Buffer, consumed: () => void) => {
    chunks.push(b);
    consumed();
  });
  return new Promise((resolve, reject) => {
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('reset', (reason: string) => reject(new Error(`reset: ${reason}`)));
  });
}

function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) resolve();
      else if (Date.now() > deadline) reject(new Error('condition not met in time'));
      else setTimeout(tick, 5);
    };
    tick();
  });
}

const settle = (ms = 50): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('mux handshake', () => {
  it('answers the guest HELLO with the host time and resolves ready()', async () => {
    const { mux, guest } = await pair();
    const hello = await mux.ready();
    assert.deepEqual(hello, { v: 1, init: 'fake-0', bootMs: 42, window: MUX_WINDOW });
    await waitFor(() => guest.hostHello !== undefined);
    const h = guest.hostHello as { v: number; timeMs: number };
    assert.equal(h.v, 1);
    assert.ok(Math.abs(h.timeMs - Date.now()) < 5000);
  });

  it('sends nothing before the guest HELLO, and opens wait for it', async () => {
    const { mux, guest } = await pair({ hello: false });
    const opening = mux.openStream(7);
    await settle();
    assert.equal(guest.hostHello, undefined);
    assert.equal(guest.openCount, 0);
    guest.sendHello();
    const s = await opening;
    assert.equal(s.id, 1);
    assert.deepEqual(guest.violations, []);
  });

  it('treats a HELLO with unknown fields as fatal', async () => {
    const { mux, guest } = await pair({ hello: false });
    const errors: MicroagentError[] = [];
    mux.on('error', (e: MicroagentError) => errors.push(e));
    guest.send(
      0,
      FrameType.HELLO,
      Buffer.from(JSON.stringify({ v: 1, init: 'x', bootMs: 1, extra: true })),
    );
    await waitFor(() => mux.closed);
    assert.equal(errors[0]?.code, 'GUEST_PROTOCOL');
  });
});

describe('mux streams', () => {
  it('echoes 1 MiB through a stream and closes after both EOFs', async () => {
    const { mux, guest } = await pair();
    const s = await mux.openStream(7);
    const data = randomBytes(1024 * 1024);
    const back = collect(s);
    const closed = new Promise((r) => s.once('close', r));
    let off = 0;
    const pump = (): void => {
      while (off < data.length) {
        const ok = s.write(data.subarray(off, off + 50_000));
        off += 50_000;
        if (!ok) return void s.once('drain', pump);
      }
      s.end();
    };
    pump();
    assert.ok((await back).equals(data));
    await closed;
    assert.equal(mux.activeStreams, 0);
    assert.deepEqual(guest.violations, []);
  });

  it('never lets the guest send more than the window to a slow host consumer', async () => {
    let gs: GuestStream | undefined;
    const { mux } = await pair({
      services: {
        9: (s) => {
          gs = s;
          s.write(Buffer.alloc(1024 * 1024, 1));
          s.end();
        },
      },
    });
    const s = await mux.openStream(9);
    const held: { len: number; consumed: () => void }[] = [];
    let received = 0;
    s.on('data', (b: Buffer, consumed: () => void) => {
      received += b.length;
      held.push({ len: b.length, consumed });
    });
    const ended = new Promise((r) => s.once('end', r));
    await settle(200);
    assert.equal(received, MUX_WINDOW, 'exactly one window arrives while nothing is consumed');
    assert.ok(gs!.queuedBytes > 0, 'the guest is holding the rest');
    // Consume slowly; everything eventually arrives.
    while (received < 1024 * 1024 || held.length > 0) {
      const h = held.shift();
      if (h) h.consumed();
      else await settle(1);
    }
    await ended;
    assert.equal(received, 1024 * 1024);
  });

  it('stops writing to a guest that does not consume, then drains when it does', async () => {
    const { mux, guest } = await pair();
    const s = await mux.openStream(8);
    while (s.write(Buffer.alloc(16384))) {
      // fill until write() asks us to wait
    }
    await settle(100);
    const sink = guest.sinks[0] as GuestStream & { release: () => void };
    assert.equal(sink.received, MUX_WINDOW, 'the guest got exactly one window');
    assert.ok(s.pendingBytes > 0);
    const drained = new Promise((r) => s.once('drain', r));
    const releaser = setInterval(() => sink.release(), 5);
    await drained;
    clearInterval(releaser);
    assert.deepEqual(guest.violations, []);
  });

  it('sends a guest whose HELLO has no window (an older init) only 128 KiB at a time', async () => {
    const { mux, guest } = await pair({ legacyWindow: true });
    const s = await mux.openStream(8);
    while (s.write(Buffer.alloc(16384))) {
      // fill until write() asks us to wait
    }
    await settle(100);
    const sink = guest.sinks[0] as GuestStream & { release: () => void };
    assert.equal(sink.received, LEGACY_MUX_WINDOW, 'the guest got exactly its window');
    const drained = new Promise((r) => s.once('drain', r));
    const releaser = setInterval(() => sink.release(), 5);
    await drained;
    clearInterval(releaser);
    assert.deepEqual(guest.violations, [], 'the older guest never saw more than its window');
  });

  it('serves many concurrent streams, queueing opens above the guest limit of 64', async () => {
    const { mux, guest } = await pair();
    const results = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const s = await mux.openStream(7);
        const data = randomBytes(1000 + i * 97);
        const back = collect(s);
        s.write(data);
        s.end();
        return (await back).equals(data);
      }),
    );
    assert.ok(results.every(Boolean));
    assert.ok(guest.maxConcurrent <= 64, `max concurrent ${guest.maxConcurrent}`);
    assert.equal(guest.openCount, 100);
    assert.deepEqual(guest.violations, []);
  });

  it('rejects an OPEN the guest refuses with its reason', async () => {
    const { mux } = await pair();
    await assert.rejects(mux.openStream(99), (e: MicroagentError) => {
      assert.equal(e.code, 'GUEST_CHANNEL_UNAVAILABLE');
      assert.equal(e.data.reason, 'no service on port 99');
      return true;
    });
    // Ids are never reused: the next stream gets a new one.
    const s = await mux.openStream(7);
    assert.equal(s.id, 2);
  });

  it('sends early bytes right behind OPEN, before the OPEN_OK', async () => {
    const { mux, guest } = await pair({ holdOpenOk: true });
    const early = Buffer.from('an exec request');
    let resolved = false;
    const opening = mux.openStream(8, early).then((s) => {
      resolved = true;
      return s;
    });
    await waitFor(() => guest.streams.get(1)?.received === early.length);
    assert.equal(resolved, false, 'the guest had the bytes before its OPEN_OK went out');
    guest.releaseOpenOks();
    const s = await opening;
    assert.equal(s.id, 1);
    assert.equal(s.pendingBytes, 0);
    assert.deepEqual(guest.violations, []);
  });

  it('drops the early bytes of a refused stream (the guest ignores them)', async () => {
    const { mux, guest } = await pair();
    await assert.rejects(mux.openStream(99, Buffer.from('lost')), (e: MicroagentError) => {
      assert.equal(e.code, 'GUEST_CHANNEL_UNAVAILABLE');
      return true;
    });
    const s = await mux.openStream(7);
    const back = collect(s);
    s.write(Buffer.from('next'));
    s.end();
    assert.equal((await back).toString(), 'next');
    assert.deepEqual(guest.violations, []);
  });

  it('holds the early bytes of an open that waits for a free slot until its OPEN', async () => {
    const { mux, guest } = await pair();
    const first = await Promise.all(Array.from({ length: 64 }, () => mux.openStream(7)));
    let resolved = false;
    const waiting = mux.openStream(8, Buffer.from('queued')).then((s) => {
      resolved = true;
      return s;
    });
    await settle();
    assert.equal(resolved, false);
    assert.equal(guest.openCount, 64);
    first[0]!.reset('make room');
    const s = await waiting;
    assert.equal(s.id, 65);
    await waitFor(() => guest.streams.get(65)?.received === 6);
    assert.deepEqual(guest.violations, [], 'no DATA went out before its OPEN');
  });

  it('surfaces a guest RESET as a reset event and ignores frames that cross it', async () => {
    let gs: GuestStream | undefined;
    const { mux, guest } = await pair({ services: { 9: (s) => (gs = s) } });
    const s = await mux.openStream(9);
    const reset = new Promise<[string, boolean]>((r) =>
      s.once('reset', (reason: string, byGuest: boolean) => r([reason, byGuest])),
    );
    gs!.reset('boom');
    assert.deepEqual(await reset, ['boom', true]);
    // Host data written after the reset goes nowhere, and a late frame from
    // the guest for that id is ignored (not fatal).
    assert.equal(s.write(Buffer.from('late')), false);
    guest.send(s.id, FrameType.DATA, Buffer.from('late'));
    await settle();
    assert.equal(mux.closed, false);
  });

  it('sends a host RESET with its reason to the guest', async () => {
    let gs: GuestStream | undefined;
    const { mux, guest } = await pair({ services: { 9: (s) => (gs = s) } });
    const s = await mux.openStream(9);
    await waitFor(() => gs !== undefined);
    const got = new Promise<string>((r) => gs!.once('reset', r));
    const events: string[] = [];
    s.on('reset', (_r: string, byGuest: boolean) => events.push(`reset:${byGuest}`));
    s.on('close', () => events.push('close'));
    s.reset('client went away');
    assert.equal(await got, 'client went away');
    assert.deepEqual(events, ['reset:false', 'close']);
    guest.send(s.id, FrameType.CREDIT, u32(10)); // crosses the reset: ignored
    await settle();
    assert.equal(mux.closed, false);
  });
});

describe('mux control frames', () => {
  it('measures a PING round trip', async () => {
    const { mux } = await pair();
    await mux.ready();
    const us = await mux.ping();
    assert.ok(us >= 0 && us < 1_000_000);
  });

  it('sends POWEROFF with its reason', async () => {
    const { mux, guest } = await pair();
    await mux.ready();
    mux.powerOff('stop requested');
    await waitFor(() => guest.powerOffs.length === 1);
    assert.deepEqual(guest.powerOffs[0], { reason: 'stop requested' });
  });

  it('emits the boot command result', async () => {
    const { mux, guest } = await pair();
    await mux.ready();
    const got = new Promise((r) => mux.once('result', r));
    const result = {
      type: 'exit' as const,
      status: 'exited' as const,
      exitCode: 0,
      stdoutBytes: 1,
      stderrBytes: 0,
      stdoutTruncated: false,
      stderrTruncated: false,
      durationMs: 5,
    };
    guest.sendResult(result);
    assert.deepEqual(await got, result);
  });
});

describe('mux fatal errors', () => {
  async function expectFatal(
    act: (g: FakeGuest, mux: Mux) => void | Promise<void>,
    match: RegExp,
  ): Promise<void> {
    const { mux, guest } = await pair();
    await mux.ready();
    const s = await mux.openStream(7);
    const resets: string[] = [];
    s.on('reset', (r: string) => resets.push(r));
    const err = new Promise<MicroagentError>((r) => mux.once('error', r));
    const closed = new Promise<string>((r) => mux.once('close', r));
    await act(guest, mux);
    const e = await err;
    assert.equal(e.code, 'GUEST_PROTOCOL');
    assert.match(e.message, match);
    await closed;
    assert.equal(resets.length, 1, 'open streams are reset');
    await assert.rejects(
      mux.openStream(7),
      (x: MicroagentError) => x.code === 'GUEST_CHANNEL_UNAVAILABLE',
    );
  }

  it('on DATA for a stream id never opened', () =>
    expectFatal((g) => g.send(77, FrameType.DATA, Buffer.from('x')), /unknown stream 77/));

  it('on DATA beyond the window', () =>
    expectFatal((g) => {
      for (let i = 0; i <= MUX_WINDOW / 32768; i++) g.send(1, FrameType.DATA, Buffer.alloc(32768));
    }, /overran the window/));

  it('on an unknown frame type', () =>
    expectFatal((g) => {
      const f = encodeFrame(0, FrameType.PING);
      f.writeUInt8(99, 4);
      g.socket.write(f);
    }, /unknown mux frame type 99/));

  it('on a host-only frame type from the guest', () =>
    expectFatal((g) => g.send(0, FrameType.POWEROFF, Buffer.from('{}')), /not sent by a guest/));

  it('on CREDIT that exceeds what was consumed', () =>
    expectFatal((g) => g.send(1, FrameType.CREDIT, u32(1)), /more credit/));
});

describe('mux channel loss', () => {
  it('resets every stream and fails pending opens when the channel closes', async () => {
    const { mux, guestSock } = await pair();
    const s = await mux.openStream(7);
    const reset = new Promise<string>((r) => s.once('reset', r));
    const closed = new Promise<string>((r) => mux.once('close', r));
    guestSock.destroy();
    assert.match(await reset, /closed the guest channel/);
    await closed;
    await assert.rejects(
      mux.ping(),
      (e: MicroagentError) => e.code === 'GUEST_CHANNEL_UNAVAILABLE',
    );
  });

  it('shutdown(reason) carries the reason to streams', async () => {
    const { mux } = await pair();
    const s = await mux.openStream(7);
    const reset = new Promise<string>((r) => s.once('reset', r));
    mux.shutdown('vm_exited poweroff');
    assert.equal(await reset, 'vm_exited poweroff');
  });
});
