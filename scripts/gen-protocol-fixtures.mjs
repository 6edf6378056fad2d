#!/usr/bin/env node
// Writes the golden fixtures of the guest protocols (docs/protocol.md) to
// test/fixtures/protocol/: one NAME.bin per case plus cases.json describing
// what the C init must decode or encode from/to those bytes
// (guest/init/test_fixtures.c). The bytes come from src/guest/protocol.ts,
// the host's single source, so the two sides cannot drift apart silently.
//
// Usage (after the TS build):
//   scripts/node node_modules/typescript/bin/tsc -p tsconfig.json
//   scripts/node scripts/gen-protocol-fixtures.mjs
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const P = await import(join(root, 'dist/src/guest/protocol.js'));
const out = join(root, 'test/fixtures/protocol');
mkdirSync(out, { recursive: true });
for (const f of readdirSync(out))
  if (f.endsWith('.bin') || f === 'cases.json') rmSync(join(out, f));

const cases = [];
const names = new Set();
function add(name, kind, bytes, extra = {}) {
  if (names.has(name)) throw new Error(`duplicate case ${name}`);
  names.add(name);
  writeFileSync(join(out, `${name}.bin`), bytes);
  cases.push({ name, kind, file: `${name}.bin`, ...extra });
}
const hex = (b) => Buffer.from(b).toString('hex');
const utf8 = (s) => Buffer.from(s, 'utf8');
function must(cond, what) {
  if (!cond) throw new Error(`fixture self-check failed: ${what}`);
}
const { FrameType: F } = P;

// ---- mux frames ----------------------------------------------------------------
const frames = [
  ['frame-hello-guest', 0, F.HELLO, utf8('{"v":1,"init":"0.1.0","bootMs":1234}')],
  ['frame-hello-host', 0, F.HELLO, utf8('{"v":1,"timeMs":1763736000000}')],
  ['frame-open', 1, F.OPEN, P.u32(1)],
  ['frame-open-ok', 1, F.OPEN_OK, undefined],
  ['frame-reset', 7, F.RESET, utf8('no service on port 7')],
  ['frame-data-1', 3, F.DATA, Buffer.from([0])],
  ['frame-data-max', 0xfffffffe, F.DATA, Buffer.alloc(P.MUX_MAX_DATA, 0xab)],
  ['frame-eof', 2, F.EOF, undefined],
  ['frame-credit', 2, F.CREDIT, P.u32(P.MUX_WINDOW)],
  ['frame-poweroff', 0, F.POWEROFF, utf8('{"reason":"user"}')],
  ['frame-ping', 0, F.PING, Buffer.from(Array.from({ length: 64 }, (_, i) => i))],
  ['frame-pong-empty', 0, F.PONG, undefined],
  ['frame-result', 0, F.RESULT, utf8('{"type":"exit"}')],
  ['frame-max-payload', 5, F.HELLO, Buffer.alloc(P.MUX_MAX_PAYLOAD, 0x5a)],
];
for (const [name, stream, type, payload] of frames) {
  const bytes = P.encodeFrame(stream, type, payload);
  const decoded = new P.FrameDecoder().push(bytes);
  must(decoded.length === 1 && decoded[0].stream === stream && decoded[0].type === type, name);
  const body = payload ?? Buffer.alloc(0);
  // Big payloads are one repeated byte: describe them instead of spelling them out.
  const desc =
    body.length <= 64
      ? { payloadHex: hex(body) }
      : (must(
          body.every((x) => x === body[0]),
          name,
        ),
        { payloadLen: body.length, payloadFill: body[0] });
  add(name, 'frame', bytes, { stream, type, ...desc });
}
function badFrame(name, mutate, why) {
  const bytes = P.encodeFrame(1, F.DATA, Buffer.from('x'));
  mutate(bytes);
  let threw = false;
  try {
    new P.FrameDecoder().push(bytes);
  } catch (e) {
    threw = e instanceof P.ProtocolError;
  }
  must(threw, name);
  add(name, 'frame_invalid', bytes, { why });
}
badFrame('frame-bad-type-0', (b) => b.writeUInt8(0, 4), 'unknown type 0');
badFrame('frame-bad-type-12', (b) => b.writeUInt8(12, 4), 'unknown type 12');
badFrame('frame-bad-flags', (b) => b.writeUInt8(1, 5), 'non-zero flags');
badFrame('frame-bad-reserved', (b) => b.writeUInt16BE(0x0100, 6), 'non-zero reserved');
badFrame(
  'frame-bad-length',
  (b) => b.writeUInt32BE(P.MUX_MAX_PAYLOAD + 1, 8),
  'length over the maximum',
);

// ---- exec message headers ---------------------------------------------------------
for (const [name, kind, len] of [
  ['exec-header-bad-kind-0', 0, 0],
  ['exec-header-bad-kind-5', 5, 1],
  ['exec-header-too-long', 2, P.EXEC_MAX_MESSAGE + 1],
]) {
  const b = Buffer.alloc(5);
  b.writeUInt8(kind, 0);
  b.writeUInt32BE(len, 1);
  let threw = false;
  try {
    new P.ExecDecoder().push(b);
  } catch {
    threw = true;
  }
  must(threw, name);
  add(name, 'exec_header_invalid', b);
}
add('exec-stdin-close', 'exec_stdin', P.encodeExecMessage(P.ExecKind.STDIN, Buffer.alloc(0)), {
  payloadHex: '',
});
add(
  'exec-stdin-bytes',
  'exec_stdin',
  P.encodeExecMessage(P.ExecKind.STDIN, Buffer.from([0, 1, 2, 255])),
  {
    payloadHex: '000102ff',
  },
);

// ---- exec requests -----------------------------------------------------------------
// Valid requests: the C side must accept them and see these values.
function expectOf(r) {
  return {
    argv: r.argv,
    env: r.env ?? {},
    cwd: r.cwd ?? '/',
    stdin: r.stdin ?? false,
    timeoutMs: r.timeoutMs ?? 0,
    stdoutLimit: r.stdoutLimit ?? -1,
    stderrLimit: r.stderrLimit ?? -1,
    tty: r.tty ? { rows: r.tty.rows, cols: r.tty.cols, term: r.tty.term ?? null } : null,
    user: r.user ?? null,
  };
}
function validRequest(name, req) {
  const parsed = P.ExecRequestSchema.parse(req);
  add(name, 'exec_request', P.encodeExecJson(parsed), { expect: expectOf(parsed) });
}
validRequest('exec-req-minimal', { type: 'exec', v: 1, argv: ['uname'] });
validRequest('exec-req-full', {
  type: 'exec',
  v: 1,
  argv: ['uname', '-a', ''],
  env: { LANG: 'C', EMPTY: '', 'WITH SPACE': 'a=b=c' },
  cwd: '/tmp',
  stdin: true,
  timeoutMs: 1500,
  stdoutLimit: 10485760,
  stderrLimit: 0,
});
validRequest('exec-req-unicode', {
  type: 'exec',
  v: 1,
  argv: ['echo', 'é😀', 'tab\tnl\n"q"\\', '\u2028', '\u007f\u0001'],
  env: { Ü: 'ß' },
});
validRequest('exec-req-max-argv', {
  type: 'exec',
  v: 1,
  argv: Array.from({ length: 4096 }, (_, i) => `a${i}`),
});
validRequest('exec-req-big-numbers', {
  type: 'exec',
  v: 1,
  argv: ['x'],
  timeoutMs: Number.MAX_SAFE_INTEGER,
  stdoutLimit: 2 ** 40,
  stderrLimit: 1,
});
validRequest('exec-req-tty', {
  type: 'exec',
  v: 1,
  argv: ['/bin/sh', '-i'],
  env: { TERM: 'dumb' },
  tty: { rows: 24, cols: 80, term: 'vt100' },
});
validRequest('exec-req-tty-minimal', {
  type: 'exec',
  v: 1,
  argv: ['sh'],
  tty: { rows: 65535, cols: 1 },
});
// Every OCI `User` form; the guest resolves them at start (bad_user), not here.
for (const [name, user] of [
  ['exec-req-user-name', 'alice'],
  ['exec-req-user-uid', '1000'],
  ['exec-req-user-name-group', 'alice:staff'],
  ['exec-req-user-uid-gid', '1000:50'],
  ['exec-req-user-name-gid', 'alice:50'],
  ['exec-req-user-uid-group', '0:staff'],
  ['exec-req-user-unicode', 'é😀 x:g-1.2_3'],
]) {
  validRequest(name, { type: 'exec', v: 1, argv: ['id'], user });
}
validRequest('exec-req-stdin-false', {
  type: 'exec',
  v: 1,
  argv: ['cat'],
  stdin: false,
  timeoutMs: 0,
});
// Hand-written JSON (escapes, whitespace, key order) that zod accepts.
function validRaw(name, json) {
  const parsed = P.ExecRequestSchema.parse(JSON.parse(json));
  add(name, 'exec_request', P.encodeExecMessage(P.ExecKind.JSON, utf8(json)), {
    expect: expectOf(parsed),
  });
}
validRaw(
  'exec-req-escapes',
  '{"argv":["\\u0065cho","\\ud83d\\ude00\\u00e9","\\"\\\\\\/\\b\\f\\n\\r\\t"],"v":1,"type":"exec"}',
);
validRaw(
  'exec-req-whitespace',
  ' \n\t{ "type" : "exec" ,\r\n "v" : 1 , "argv" : [ "ls" , "-l" ] , "env" : { } }\n ',
);
validRaw('exec-req-lone-surrogate', '{"type":"exec","v":1,"argv":["a\\ud800b","\\udc00"]}');

// Invalid requests: zod (or JSON.parse) rejects them; the C side must too.
function invalidRaw(name, json) {
  let ok = false;
  try {
    ok = P.ExecRequestSchema.safeParse(JSON.parse(json)).success;
  } catch {
    ok = false;
  }
  must(!ok, `${name} must be invalid`);
  add(name, 'exec_request_invalid', P.encodeExecMessage(P.ExecKind.JSON, utf8(json)));
}
const inv = (o) => JSON.stringify(o);
const base = { type: 'exec', v: 1, argv: ['true'] };
invalidRaw('exec-req-bad-unknown-field', inv({ ...base, group: 'root' }));
invalidRaw('exec-req-bad-user-empty', inv({ ...base, user: '' }));
invalidRaw('exec-req-bad-user-colon-only', inv({ ...base, user: ':' }));
invalidRaw('exec-req-bad-user-no-group', inv({ ...base, user: 'alice:' }));
invalidRaw('exec-req-bad-user-no-name', inv({ ...base, user: ':staff' }));
invalidRaw('exec-req-bad-user-two-colons', inv({ ...base, user: 'a:b:c' }));
invalidRaw('exec-req-bad-user-nul', inv({ ...base, user: 'a\u0000b' }));
invalidRaw('exec-req-bad-user-number', inv({ ...base, user: 1000 }));
invalidRaw('exec-req-bad-user-null', inv({ ...base, user: null }));
invalidRaw('exec-req-bad-v', inv({ ...base, v: 2 }));
invalidRaw('exec-req-bad-no-v', inv({ type: 'exec', argv: ['true'] }));
invalidRaw('exec-req-bad-type', inv({ ...base, type: 'run' }));
invalidRaw('exec-req-bad-argv-empty', inv({ ...base, argv: [] }));
invalidRaw('exec-req-bad-argv0-empty', inv({ ...base, argv: [''] }));
invalidRaw('exec-req-bad-argv-not-array', inv({ ...base, argv: 'true' }));
invalidRaw('exec-req-bad-argv-number', inv({ ...base, argv: ['true', 1] }));
invalidRaw(
  'exec-req-bad-argv-too-many',
  inv({ ...base, argv: Array.from({ length: 4097 }, () => 'a') }),
);
invalidRaw('exec-req-bad-env-eq', inv({ ...base, env: { 'A=B': 'c' } }));
invalidRaw('exec-req-bad-env-empty-key', inv({ ...base, env: { '': 'c' } }));
invalidRaw('exec-req-bad-env-value', inv({ ...base, env: { A: 1 } }));
invalidRaw('exec-req-bad-env-null', inv({ ...base, env: null }));
invalidRaw('exec-req-bad-env-array', inv({ ...base, env: ['A=B'] }));
invalidRaw('exec-req-bad-cwd-relative', inv({ ...base, cwd: 'tmp' }));
invalidRaw('exec-req-bad-stdin', inv({ ...base, stdin: 'yes' }));
invalidRaw('exec-req-bad-timeout-negative', inv({ ...base, timeoutMs: -1 }));
invalidRaw('exec-req-bad-timeout-fraction', inv({ ...base, timeoutMs: 1.5 }));
invalidRaw('exec-req-bad-limit-null', inv({ ...base, stdoutLimit: null }));
invalidRaw('exec-req-bad-limit-string', inv({ ...base, stderrLimit: '10' }));
invalidRaw('exec-req-bad-not-object', inv(['exec']));
invalidRaw('exec-req-bad-tty-rows-0', inv({ ...base, tty: { rows: 0, cols: 80 } }));
invalidRaw('exec-req-bad-tty-cols-big', inv({ ...base, tty: { rows: 24, cols: 65536 } }));
invalidRaw('exec-req-bad-tty-no-cols', inv({ ...base, tty: { rows: 24 } }));
invalidRaw('exec-req-bad-tty-extra', inv({ ...base, tty: { rows: 24, cols: 80, xpixel: 0 } }));
invalidRaw('exec-req-bad-tty-bool', inv({ ...base, tty: true }));
invalidRaw('exec-req-bad-tty-term-empty', inv({ ...base, tty: { rows: 24, cols: 80, term: '' } }));
invalidRaw('exec-req-bad-json-truncated', '{"type":"exec","v":1,"argv":["true"]');
invalidRaw('exec-req-bad-json-trailing', '{"type":"exec","v":1,"argv":["true"]} x');
invalidRaw('exec-req-bad-json-comma', '{"type":"exec","v":1,"argv":["true"],}');
invalidRaw('exec-req-bad-json-single-quote', "{'type':'exec'}");
invalidRaw('exec-req-bad-json-control-char', '{"type":"exec","v":1,"argv":["a\tb"]}');
invalidRaw('exec-req-bad-json-bad-escape', '{"type":"exec","v":1,"argv":["\\x41"]}');
invalidRaw(
  'exec-req-bad-signal-as-first',
  inv({ type: 'signal', signal: 15 }).replace('signal",', 'signal","v":1,'),
);

// signal messages
for (const [name, sig] of [
  ['exec-signal-15', 15],
  ['exec-signal-64', 64],
]) {
  add(
    name,
    'exec_signal',
    P.encodeExecJson(P.ExecSignalSchema.parse({ type: 'signal', signal: sig })),
    {
      signal: sig,
    },
  );
}
for (const [name, json] of [
  ['exec-signal-bad-0', inv({ type: 'signal', signal: 0 })],
  ['exec-signal-bad-65', inv({ type: 'signal', signal: 65 })],
  ['exec-signal-bad-extra', inv({ type: 'signal', signal: 9, pid: 1 })],
  ['exec-signal-bad-string', inv({ type: 'signal', signal: 'TERM' })],
]) {
  must(!P.ExecSignalSchema.safeParse(JSON.parse(json)).success, name);
  add(name, 'exec_signal_invalid', P.encodeExecMessage(P.ExecKind.JSON, utf8(json)));
}

// resize messages
for (const [name, rows, cols] of [
  ['exec-resize', 50, 132],
  ['exec-resize-max', 65535, 65535],
]) {
  add(
    name,
    'exec_resize',
    P.encodeExecJson(P.ExecResizeSchema.parse({ type: 'resize', rows, cols })),
    { rows, cols },
  );
}
for (const [name, json] of [
  ['exec-resize-bad-0', inv({ type: 'resize', rows: 0, cols: 80 })],
  ['exec-resize-bad-big', inv({ type: 'resize', rows: 24, cols: 65536 })],
  ['exec-resize-bad-missing', inv({ type: 'resize', rows: 24 })],
  ['exec-resize-bad-extra', inv({ type: 'resize', rows: 24, cols: 80, xpixel: 1 })],
]) {
  must(!P.ExecResizeSchema.safeParse(JSON.parse(json)).success, name);
  add(name, 'exec_resize_invalid', P.encodeExecMessage(P.ExecKind.JSON, utf8(json)));
}

// ---- guest → host exec messages (the C side must produce these bytes) --------------
add(
  'exec-started',
  'exec_started',
  P.encodeExecJson(P.ExecStartedSchema.parse({ type: 'started', pid: 123 })),
  {
    pid: 123,
  },
);
function exitCase(name, e) {
  // Parsing puts the keys in schema order, which is the order the guest writes.
  const parsed = P.ExecExitSchema.parse(e);
  add(name, 'exec_exit', P.encodeExecJson(parsed), { exit: parsed });
}
const zero = {
  stdoutBytes: 0,
  stderrBytes: 0,
  stdoutTruncated: false,
  stderrTruncated: false,
  durationMs: 0,
};
exitCase('exec-exit-exited', {
  type: 'exit',
  status: 'exited',
  exitCode: 0,
  ...zero,
  stdoutBytes: 42,
  durationMs: 12,
});
exitCase('exec-exit-exited-42', { type: 'exit', status: 'exited', exitCode: 42, ...zero });
exitCase('exec-exit-signaled', {
  type: 'exit',
  status: 'signaled',
  exitCode: 137,
  signal: 9,
  ...zero,
});
exitCase('exec-exit-timed-out', {
  type: 'exit',
  status: 'timed_out',
  exitCode: 124,
  signal: 15,
  stdoutBytes: 10485760,
  stderrBytes: 2 ** 40,
  stdoutTruncated: true,
  stderrTruncated: true,
  durationMs: 2 ** 45,
});
for (const [code, exitCode] of [
  ['not_found', 127],
  ['not_executable', 126],
  ['bad_cwd', 125],
  ['setup_failed', 125],
  ['invalid_request', 125],
  ['bad_user', 125],
]) {
  exitCase(`exec-exit-failed-${code.replace('_', '-')}`, {
    type: 'exit',
    status: 'failed_to_start',
    exitCode,
    ...zero,
    error: { code, message: `${code}: No such file or directory` },
  });
}
exitCase('exec-exit-escapes', {
  type: 'exit',
  status: 'failed_to_start',
  exitCode: 125,
  ...zero,
  error: {
    code: 'invalid_request',
    message: 'q" b\\ s/ nl\n cr\r tab\t bs\b ff\f c1\u0001 c1f\u001f del\u007f é 😀 \u2028 end',
  },
});

// ---- fs (file transfer) ------------------------------------------------------------------
function fsExpect(r) {
  return {
    op: r.type,
    path: r.path,
    mode: r.type === 'write' ? r.mode : 0,
    uid: r.uid ?? -1,
    gid: r.gid ?? -1,
    size: r.type === 'write' ? r.size : 0,
  };
}
function fsValid(name, req) {
  const parsed = P.FsRequestSchema.parse(req);
  add(name, 'fs_request', P.encodeFsJson(parsed), { expect: fsExpect(parsed) });
}
fsValid('fs-req-read', { type: 'read', v: 1, path: '/etc/hostname' });
fsValid('fs-req-read-unicode', { type: 'read', v: 1, path: '/tmp/é 😀\n"x"' });
fsValid('fs-req-write', {
  type: 'write',
  v: 1,
  path: '/root/a.txt',
  mode: 0o4755,
  uid: 1000,
  gid: 0xfffffffe,
  size: 52428800,
});
fsValid('fs-req-write-minimal', { type: 'write', v: 1, path: '/x', mode: 0, size: 0 });
fsValid('fs-req-write-big', {
  type: 'write',
  v: 1,
  path: '/' + 'p'.repeat(P.FS_MAX_PATH - 1),
  mode: 0o7777,
  size: Number.MAX_SAFE_INTEGER,
});
function fsInvalid(name, json) {
  let ok = false;
  try {
    ok = P.FsRequestSchema.safeParse(JSON.parse(json)).success;
  } catch {
    ok = false;
  }
  must(!ok, `${name} must be invalid`);
  add(name, 'fs_request_invalid', P.encodeExecMessage(P.FsKind.JSON, utf8(json)));
}
const rd = { type: 'read', v: 1, path: '/etc/hostname' };
const wr = { type: 'write', v: 1, path: '/tmp/x', mode: 0o644, size: 3 };
fsInvalid('fs-req-bad-relative', inv({ ...rd, path: 'etc/hostname' }));
fsInvalid('fs-req-bad-empty-path', inv({ ...rd, path: '' }));
fsInvalid('fs-req-bad-nul', inv({ ...rd, path: '/a\u0000b' }));
fsInvalid('fs-req-bad-long-path', inv({ ...rd, path: '/' + 'p'.repeat(P.FS_MAX_PATH) }));
fsInvalid('fs-req-bad-read-extra', inv({ ...rd, mode: 0o644 }));
fsInvalid('fs-req-bad-v', inv({ ...rd, v: 2 }));
fsInvalid('fs-req-bad-no-v', inv({ type: 'read', path: '/x' }));
fsInvalid('fs-req-bad-type', inv({ ...rd, type: 'stat' }));
fsInvalid('fs-req-bad-no-type', inv({ v: 1, path: '/x' }));
fsInvalid('fs-req-bad-write-no-mode', inv({ type: 'write', v: 1, path: '/x', size: 1 }));
fsInvalid('fs-req-bad-write-no-size', inv({ type: 'write', v: 1, path: '/x', mode: 0o644 }));
fsInvalid('fs-req-bad-mode-big', inv({ ...wr, mode: 0o10000 }));
fsInvalid('fs-req-bad-mode-string', inv({ ...wr, mode: '644' }));
fsInvalid('fs-req-bad-uid-negative', inv({ ...wr, uid: -1 }));
fsInvalid('fs-req-bad-uid-max', inv({ ...wr, uid: 0xffffffff }));
fsInvalid('fs-req-bad-gid-null', inv({ ...wr, gid: null }));
fsInvalid('fs-req-bad-size-fraction', inv({ ...wr, size: 1.5 }));
fsInvalid('fs-req-bad-size-negative', inv({ ...wr, size: -1 }));
fsInvalid('fs-req-bad-write-extra', inv({ ...wr, append: true }));
fsInvalid('fs-req-bad-json', '{"type":"read","v":1,"path":"/x"');
add('fs-data-end', 'exec_stdin', P.encodeExecMessage(P.FsKind.DATA_TO_GUEST, Buffer.alloc(0)), {
  payloadHex: '',
});
// guest → host: the C side must produce these bytes
function fsGuest(name, kind, m, extra) {
  const parsed = P.FsGuestMessageSchema.parse(m);
  add(name, kind, P.encodeFsJson(parsed), { message: parsed, ...extra });
}
fsGuest('fs-stat', 'fs_stat', { type: 'stat', size: 52428800, mode: 0o644, uid: 0, gid: 0 });
fsGuest('fs-stat-big', 'fs_stat', {
  type: 'stat',
  size: 2 ** 40,
  mode: 0o7777,
  uid: 0xfffffffe,
  gid: 65534,
});
fsGuest('fs-done', 'fs_done', { type: 'done', bytes: 52428800 });
fsGuest('fs-done-0', 'fs_done', { type: 'done', bytes: 0 });
for (const code of P.FsErrorCodeSchema.options) {
  fsGuest(`fs-error-${code.replaceAll('_', '-')}`, 'fs_error', {
    type: 'error',
    code,
    message: `/tmp/x: ${code}`,
  });
}
fsGuest('fs-error-escapes', 'fs_error', {
  type: 'error',
  code: 'io_error',
  message: 'write /tmp/q"\\\n\t\u0001é😀: No space left on device',
});

// ---- HELLO -----------------------------------------------------------------------------
add(
  'hello-guest',
  'hello_guest',
  utf8(
    JSON.stringify(
      P.GuestHelloSchema.parse({ v: 1, init: '0.1.0', bootMs: 1429, window: P.MUX_WINDOW }),
    ),
  ),
  { init: '0.1.0', bootMs: 1429 },
);
for (const [name, json, valid] of [
  ['hello-host', inv({ v: 1, timeMs: 1763736000123 }), true],
  ['hello-host-bad-extra', inv({ v: 1, timeMs: 1, tz: 'UTC' }), false],
  ['hello-host-bad-v', inv({ v: 2, timeMs: 1 }), false],
  ['hello-host-bad-missing', inv({ v: 1 }), false],
  ['hello-host-bad-negative', inv({ v: 1, timeMs: -5 }), false],
]) {
  const ok = P.HostHelloSchema.safeParse(JSON.parse(json)).success;
  must(ok === valid, name);
  add(
    name,
    'hello_host',
    utf8(json),
    valid ? { valid, timeMs: JSON.parse(json).timeMs } : { valid },
  );
}

// ---- config disk -------------------------------------------------------------------------
function configExpect(c) {
  return {
    workspace: c.workspace,
    hostname: c.hostname,
    env: c.env ?? {},
    command: c.command
      ? {
          argv: c.command.argv,
          env: c.command.env ?? {},
          cwd: c.command.cwd ?? '/',
          powerOff: c.command.powerOff ?? false,
        }
      : null,
    network: c.network ?? null,
    prefetch: c.prefetch ?? [],
  };
}
function configCase(name, c) {
  const bytes = P.encodeConfigDisk(c);
  must(bytes.length % 4096 === 0, name);
  add(name, 'config', bytes, { expect: configExpect(P.GuestConfigSchema.parse(c)) });
}
configCase('config-minimal', {
  v: 1,
  workspace: 'run-brave-otter-4f9c',
  hostname: 'run-brave-otter-4f9c',
});
configCase('config-null-command', {
  v: 1,
  workspace: 'w',
  hostname: 'h',
  env: { K: 'V' },
  command: null,
});
configCase('config-command', {
  v: 1,
  workspace: 'w',
  hostname: 'a'.repeat(63),
  env: { K: 'V', LANG: 'C.UTF-8' },
  command: { argv: ['sh', '-c', 'echo hi'], env: { X: 'y' }, cwd: '/root', powerOff: true },
});
configCase('config-command-minimal', {
  v: 1,
  workspace: 'w',
  hostname: 'h',
  command: { argv: ['true'] },
});
configCase('config-big', {
  v: 1,
  workspace: 'w',
  hostname: 'h',
  env: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`VAR_${i}`, 'x'.repeat(i % 50)])),
});
configCase('config-network-user', {
  v: 1,
  workspace: 'w',
  hostname: 'h',
  network: {
    mode: 'user',
    address: '10.0.2.15/24',
    gateway: '10.0.2.2',
    dns: ['10.0.2.3', '192.0.2.53'],
    mtu: 65520,
  },
});
configCase('config-network-user-minimal', {
  v: 1,
  workspace: 'w',
  hostname: 'h',
  network: { mode: 'user', address: '172.16.0.2/32', gateway: '172.16.0.1', dns: [] },
});
configCase('config-network-isolated', {
  v: 1,
  workspace: 'w',
  hostname: 'h',
  network: { mode: 'isolated' },
});
configCase('config-prefetch', {
  v: 1,
  workspace: 'w',
  hostname: 'h',
  prefetch: ['true', '/usr/bin/python3', 'ünï', 'p'.repeat(4095)],
});
function rawDisk(json, { magic = P.CONFIG_MAGIC, length } = {}) {
  const j = utf8(json);
  const size = Math.ceil((12 + j.length) / 4096) * 4096;
  const b = Buffer.alloc(size);
  b.write(magic, 0, 'ascii');
  b.writeUInt32BE(length ?? j.length, 8);
  j.copy(b, 12);
  return b;
}
function badConfig(name, json, opts) {
  let ok = false;
  try {
    ok = P.GuestConfigSchema.safeParse(JSON.parse(json)).success;
  } catch {
    ok = false;
  }
  if (!opts) must(!ok, name);
  add(name, 'config_invalid', rawDisk(json, opts));
}
const cfg = { v: 1, workspace: 'w', hostname: 'h' };
badConfig('config-bad-magic', inv(cfg), { magic: 'MACFG002' });
badConfig('config-bad-length-huge', inv(cfg), { length: P.CONFIG_MAX_JSON + 1 });
badConfig('config-bad-length-past-end', inv(cfg), { length: 5000 });
badConfig('config-bad-unknown-field', inv({ ...cfg, network: true }));
badConfig(
  'config-bad-unknown-command-field',
  inv({ ...cfg, command: { argv: ['x'], user: 'root' } }),
);
badConfig('config-bad-v', inv({ ...cfg, v: 2 }));
badConfig('config-bad-no-workspace', inv({ v: 1, hostname: 'h' }));
badConfig('config-bad-empty-hostname', inv({ ...cfg, hostname: '' }));
badConfig('config-bad-long-hostname', inv({ ...cfg, hostname: 'a'.repeat(64) }));
badConfig('config-bad-env-key', inv({ ...cfg, env: { 'A=B': 'x' } }));
badConfig('config-bad-env-value', inv({ ...cfg, env: { A: true } }));
badConfig('config-bad-command-argv-empty', inv({ ...cfg, command: { argv: [] } }));
badConfig('config-bad-command-cwd', inv({ ...cfg, command: { argv: ['x'], cwd: 'rel' } }));
badConfig(
  'config-bad-command-poweroff',
  inv({ ...cfg, command: { argv: ['x'], powerOff: 'yes' } }),
);
badConfig('config-bad-json', '{"v":1,');
const net = { mode: 'user', address: '10.0.2.15/24', gateway: '10.0.2.2', dns: ['10.0.2.3'] };
badConfig('config-bad-network-mode', inv({ ...cfg, network: { mode: 'bridge' } }));
badConfig(
  'config-bad-network-isolated-extra',
  inv({ ...cfg, network: { mode: 'isolated', dns: [] } }),
);
badConfig('config-bad-network-unknown-field', inv({ ...cfg, network: { ...net, mac: 'x' } }));
badConfig(
  'config-bad-network-no-prefix',
  inv({ ...cfg, network: { ...net, address: '10.0.2.15' } }),
);
badConfig(
  'config-bad-network-prefix-33',
  inv({ ...cfg, network: { ...net, address: '10.0.2.15/33' } }),
);
badConfig(
  'config-bad-network-prefix-0',
  inv({ ...cfg, network: { ...net, address: '10.0.2.15/0' } }),
);
badConfig(
  'config-bad-network-leading-zero',
  inv({ ...cfg, network: { ...net, gateway: '10.0.2.02' } }),
);
badConfig('config-bad-network-octet', inv({ ...cfg, network: { ...net, gateway: '10.0.2.256' } }));
badConfig(
  'config-bad-network-dns-4',
  inv({ ...cfg, network: { ...net, dns: ['1.1.1.1', '1.1.1.2', '1.1.1.3', '1.1.1.4'] } }),
);
badConfig('config-bad-network-dns-name', inv({ ...cfg, network: { ...net, dns: ['localhost'] } }));
badConfig(
  'config-bad-network-no-gateway',
  inv({ ...cfg, network: { mode: 'user', address: '10.0.2.15/24', dns: [] } }),
);
badConfig('config-bad-network-mtu', inv({ ...cfg, network: { ...net, mtu: 100 } }));
badConfig('config-bad-network-not-object', inv({ ...cfg, network: 'user' }));
badConfig('config-bad-prefetch-not-array', inv({ ...cfg, prefetch: 'true' }));
badConfig('config-bad-prefetch-empty', inv({ ...cfg, prefetch: [''] }));
badConfig('config-bad-prefetch-nul', inv({ ...cfg, prefetch: ['a\0b'] }));
badConfig('config-bad-prefetch-long', inv({ ...cfg, prefetch: ['p'.repeat(4096)] }));
badConfig('config-bad-prefetch-9', inv({ ...cfg, prefetch: Array(9).fill('x') }));
badConfig('config-bad-prefetch-number', inv({ ...cfg, prefetch: [1] }));

writeFileSync(join(out, 'cases.json'), JSON.stringify(cases, null, 1) + '\n');
console.log(`wrote ${cases.length} cases to ${out}`);
