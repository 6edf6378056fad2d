/**
 * The protocol additions in src/guest/protocol.ts: exec tty/resize and the
 * fs messages (the golden fixtures cover the bytes; these cover the rules).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  encodeExecMessage,
  ExecDecoder,
  ExecKind,
  ExecRequestSchema,
  ExecResizeSchema,
  FS_MAX_PATH,
  FsGuestMessageSchema,
  FsKind,
  FsWriteRequestSchema,
  GuestPort,
  ProtocolError,
} from '../../src/guest/protocol.js';

describe('guest protocol additions', () => {
  test('exec tty: rows/cols 1..65535, optional non-empty term, nothing else', () => {
    const base = { type: 'exec', v: 1, argv: ['sh'] } as const;
    assert.ok(ExecRequestSchema.safeParse({ ...base, tty: { rows: 1, cols: 65535 } }).success);
    for (const tty of [
      { rows: 0, cols: 80 },
      { rows: 24, cols: 65536 },
      { rows: 24 },
      { rows: 24, cols: 80, term: '' },
      { rows: 24, cols: 80, xpixel: 0 },
      { rows: 24.5, cols: 80 },
    ])
      assert.ok(!ExecRequestSchema.safeParse({ ...base, tty }).success, JSON.stringify(tty));
    assert.ok(ExecResizeSchema.safeParse({ type: 'resize', rows: 50, cols: 132 }).success);
    assert.ok(!ExecResizeSchema.safeParse({ type: 'resize', rows: 50 }).success);
  });

  test('fs write: mode, ids, size and path limits', () => {
    const w = { type: 'write', v: 1, path: '/x', mode: 0o644, size: 1 } as const;
    assert.ok(FsWriteRequestSchema.safeParse({ ...w, uid: 0xfffffffe, gid: 0 }).success);
    assert.ok(!FsWriteRequestSchema.safeParse({ ...w, uid: 0xffffffff }).success);
    assert.ok(!FsWriteRequestSchema.safeParse({ ...w, mode: 0o10000 }).success);
    assert.ok(!FsWriteRequestSchema.safeParse({ ...w, path: 'x' }).success);
    assert.ok(!FsWriteRequestSchema.safeParse({ ...w, path: '/a\0' }).success);
    // The limit counts UTF-8 bytes, as the guest does.
    assert.ok(FsWriteRequestSchema.safeParse({ ...w, path: '/' + 'é'.repeat(2047) }).success);
    assert.ok(!FsWriteRequestSchema.safeParse({ ...w, path: '/' + 'é'.repeat(2048) }).success);
    assert.equal(FS_MAX_PATH, 4095);
    assert.equal(GuestPort.FS, 2);
  });

  test('fs guest messages are strict', () => {
    assert.ok(FsGuestMessageSchema.safeParse({ type: 'done', bytes: 0 }).success);
    assert.ok(
      !FsGuestMessageSchema.safeParse({ type: 'error', code: 'nope', message: '' }).success,
    );
    assert.ok(!FsGuestMessageSchema.safeParse({ type: 'done', bytes: 0, extra: 1 }).success);
  });

  test('a decoder for fs rejects the exec-only kind 4', () => {
    const fs = new ExecDecoder(FsKind.DATA_TO_HOST);
    assert.equal(fs.push(encodeExecMessage(FsKind.DATA_TO_HOST, Buffer.from('x'))).length, 1);
    assert.throws(
      () => fs.push(encodeExecMessage(ExecKind.STDERR, Buffer.from('x'))),
      ProtocolError,
    );
    assert.equal(
      new ExecDecoder().push(encodeExecMessage(ExecKind.STDERR, Buffer.from('x'))).length,
      1,
    );
  });
});
