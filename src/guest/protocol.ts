/**
 * The single source of the guest protocols' constants and message shapes on
 * the host side (docs/protocol.md). The C init mirrors these; its tests read
 * the golden fixtures generated from this module (test/fixtures/protocol/).
 */
import { z } from 'zod';

export const PROTOCOL_VERSION = 1;

/** Name of the virtio-serial port that carries the mux. */
export const MUX_PORT_NAME = 'org.microagent.mux';
/** virtio-blk serials the guest init looks for. */
export const ROOT_DISK_SERIAL = 'ma-root';
export const CONFIG_DISK_SERIAL = 'ma-config';

// ---- mux -------------------------------------------------------------------

export const MUX_HEADER_SIZE = 12;
export const MUX_MAX_PAYLOAD = 65536;
export const MUX_MAX_DATA = 32768;
export const MUX_WINDOW = 524288;
/**
 * The window of a guest whose HELLO does not state one: inits built before
 * the window grew (persistent workspaces keep the init they were made with).
 */
export const LEGACY_MUX_WINDOW = 131072;
export const MUX_MAX_STREAMS = 64;
export const MUX_MAX_RESET_REASON = 1024;
/** Resolvers a guest network may name (config.network.dns). */
export const NET_MAX_DNS = 3;

export const FrameType = {
  HELLO: 1,
  OPEN: 2,
  OPEN_OK: 3,
  RESET: 4,
  DATA: 5,
  EOF: 6,
  CREDIT: 7,
  POWEROFF: 8,
  PING: 9,
  PONG: 10,
  RESULT: 11,
} as const;
export type FrameTypeName = keyof typeof FrameType;
export type FrameTypeValue = (typeof FrameType)[FrameTypeName];

export interface Frame {
  stream: number;
  type: FrameTypeValue;
  payload: Buffer;
}

export function encodeFrame(stream: number, type: FrameTypeValue, payload?: Uint8Array): Buffer {
  const body = payload ?? new Uint8Array(0);
  if (body.length > MUX_MAX_PAYLOAD) throw new RangeError(`mux payload too large: ${body.length}`);
  const out = Buffer.allocUnsafe(MUX_HEADER_SIZE + body.length);
  out.writeUInt32BE(stream >>> 0, 0);
  out.writeUInt8(type, 4);
  out.writeUInt8(0, 5);
  out.writeUInt16BE(0, 6);
  out.writeUInt32BE(body.length, 8);
  out.set(body, MUX_HEADER_SIZE);
  return out;
}

export function u32(value: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(value >>> 0, 0);
  return b;
}

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

const FRAME_TYPES = new Set<number>(Object.values(FrameType));

/**
 * Incremental decoder for the mux byte stream. push() bytes as they arrive;
 * it returns the complete frames and throws ProtocolError on a malformed
 * header (fatal for the channel).
 */
export class FrameDecoder {
  private buffer: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const frames: Frame[] = [];
    let offset = 0;
    while (this.buffer.length - offset >= MUX_HEADER_SIZE) {
      const stream = this.buffer.readUInt32BE(offset);
      const type = this.buffer.readUInt8(offset + 4);
      const flags = this.buffer.readUInt8(offset + 5);
      const reserved = this.buffer.readUInt16BE(offset + 6);
      const length = this.buffer.readUInt32BE(offset + 8);
      if (!FRAME_TYPES.has(type)) throw new ProtocolError(`unknown mux frame type ${type}`);
      if (flags !== 0 || reserved !== 0) throw new ProtocolError('non-zero mux flags');
      if (length > MUX_MAX_PAYLOAD) throw new ProtocolError(`mux frame too long: ${length}`);
      if (this.buffer.length - offset < MUX_HEADER_SIZE + length) break;
      const start = offset + MUX_HEADER_SIZE;
      // Copy: the frame may outlive this buffer (queued for a slow client).
      const payload = Buffer.from(this.buffer.subarray(start, start + length));
      frames.push({ stream, type: type as FrameTypeValue, payload });
      offset = start + length;
    }
    this.buffer = this.buffer.subarray(offset);
    return frames;
  }
}

export const GuestHelloSchema = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    init: z.string(),
    bootMs: z.number().int().nonnegative(),
    /** Credit the guest grants per stream (absent: LEGACY_MUX_WINDOW). */
    window: z
      .number()
      .int()
      .min(4096)
      .max(64 * 1024 * 1024)
      .optional(),
  })
  .strict();
export type GuestHello = z.infer<typeof GuestHelloSchema>;

export const HostHelloSchema = z
  .object({ v: z.literal(PROTOCOL_VERSION), timeMs: z.number().int().nonnegative() })
  .strict();
export type HostHello = z.infer<typeof HostHelloSchema>;

export const PowerOffSchema = z.object({ reason: z.string() }).strict();

// ---- services ----------------------------------------------------------------

export const GuestPort = { EXEC: 1, FS: 2 } as const;

// ---- exec ----------------------------------------------------------------------

export const EXEC_HEADER_SIZE = 5;
export const EXEC_MAX_MESSAGE = 1024 * 1024;

export const ExecKind = { JSON: 1, STDIN: 2, STDOUT: 3, STDERR: 4 } as const;
export type ExecKindValue = (typeof ExecKind)[keyof typeof ExecKind];

export function encodeExecMessage(kind: ExecKindValue, payload: Uint8Array): Buffer {
  if (payload.length > EXEC_MAX_MESSAGE) throw new RangeError('exec message too large');
  const out = Buffer.allocUnsafe(EXEC_HEADER_SIZE + payload.length);
  out.writeUInt8(kind, 0);
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, EXEC_HEADER_SIZE);
  return out;
}

export function encodeExecJson(message: ExecHostMessage | ExecGuestMessage): Buffer {
  return encodeExecMessage(ExecKind.JSON, Buffer.from(JSON.stringify(message), 'utf8'));
}

export interface ExecMessage {
  kind: ExecKindValue;
  payload: Buffer;
}

/**
 * Incremental decoder for the message stream of a service (exec, fs: the
 * same framing). Kinds outside 1..maxKind are a ProtocolError.
 */
export class ExecDecoder {
  private buffer: Buffer = Buffer.alloc(0);

  constructor(private readonly maxKind: number = ExecKind.STDERR) {}

  push(chunk: Buffer): ExecMessage[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const out: ExecMessage[] = [];
    let offset = 0;
    while (this.buffer.length - offset >= EXEC_HEADER_SIZE) {
      const kind = this.buffer.readUInt8(offset);
      const length = this.buffer.readUInt32BE(offset + 1);
      if (kind < 1 || kind > this.maxKind) throw new ProtocolError(`unknown message kind ${kind}`);
      if (length > EXEC_MAX_MESSAGE) throw new ProtocolError(`exec message too long: ${length}`);
      if (this.buffer.length - offset < EXEC_HEADER_SIZE + length) break;
      const start = offset + EXEC_HEADER_SIZE;
      out.push({
        kind: kind as ExecKindValue,
        payload: Buffer.from(this.buffer.subarray(start, start + length)),
      });
      offset = start + length;
    }
    this.buffer = this.buffer.subarray(offset);
    return out;
  }
}

const EnvSchema = z
  .record(z.string(), z.string())
  .refine((env) => Object.keys(env).every((k) => k.length > 0 && !k.includes('=')), {
    message: 'environment names must be non-empty and must not contain "="',
  });

const WinsizeField = z.number().int().min(1).max(65535);

/** A pseudo-terminal for the program (docs/protocol.md §3 "TTY"). */
export const ExecTtySchema = z
  .object({
    rows: WinsizeField,
    cols: WinsizeField,
    /** TERM for the program; default xterm-256color (an env TERM wins over the default). */
    term: z.string().min(1).optional(),
  })
  .strict();
export type ExecTty = z.infer<typeof ExecTtySchema>;

/**
 * The user to run as, an OCI config `User`: `name`, `uid`, `name:group`,
 * `uid:gid`, `name:gid` or `uid:group`, resolved in the guest against its
 * /etc/passwd and /etc/group (docs/protocol.md §3 "User").
 */
export const ExecUserSchema = z.string().regex(/^[^:\0]+(:[^:\0]+)?$/, {
  message: 'user must be USER or USER:GROUP (both non-empty, without ":" or NUL)',
});

export const ExecRequestSchema = z
  .object({
    type: z.literal('exec'),
    v: z.literal(PROTOCOL_VERSION),
    argv: z
      .array(z.string())
      .min(1)
      .max(4096)
      .refine((a) => (a[0] ?? '').length > 0, { message: 'argv[0] must not be empty' }),
    env: EnvSchema.optional(),
    cwd: z.string().startsWith('/').optional(),
    stdin: z.boolean().optional(),
    timeoutMs: z.number().int().nonnegative().optional(),
    stdoutLimit: z.number().int().nonnegative().optional(),
    stderrLimit: z.number().int().nonnegative().optional(),
    tty: ExecTtySchema.optional(),
    user: ExecUserSchema.optional(),
  })
  .strict();
export type ExecRequest = z.infer<typeof ExecRequestSchema>;

export const ExecSignalSchema = z
  .object({ type: z.literal('signal'), signal: z.number().int().min(1).max(64) })
  .strict();

/** New terminal size (TIOCSWINSZ; the foreground group gets SIGWINCH). Ignored without a tty. */
export const ExecResizeSchema = z
  .object({ type: z.literal('resize'), rows: WinsizeField, cols: WinsizeField })
  .strict();

export type ExecHostMessage =
  ExecRequest | z.infer<typeof ExecSignalSchema> | z.infer<typeof ExecResizeSchema>;

export const ExecStartedSchema = z
  .object({ type: z.literal('started'), pid: z.number().int().positive() })
  .strict();

export const ExecStatusSchema = z.enum(['exited', 'signaled', 'timed_out', 'failed_to_start']);
export type ExecStatus = z.infer<typeof ExecStatusSchema>;

export const ExecErrorCodeSchema = z.enum([
  'not_found',
  'not_executable',
  'bad_cwd',
  'setup_failed',
  'invalid_request',
  'bad_user',
]);

export const ExecExitSchema = z
  .object({
    type: z.literal('exit'),
    status: ExecStatusSchema,
    exitCode: z.number().int().min(0).max(255),
    signal: z.number().int().min(1).max(64).optional(),
    stdoutBytes: z.number().int().nonnegative(),
    stderrBytes: z.number().int().nonnegative(),
    stdoutTruncated: z.boolean(),
    stderrTruncated: z.boolean(),
    durationMs: z.number().int().nonnegative(),
    error: z.object({ code: ExecErrorCodeSchema, message: z.string() }).strict().optional(),
  })
  .strict();
export type ExecExit = z.infer<typeof ExecExitSchema>;

export const ExecGuestMessageSchema = z.discriminatedUnion('type', [
  ExecStartedSchema,
  ExecExitSchema,
]);
export type ExecGuestMessage = z.infer<typeof ExecGuestMessageSchema>;

// ---- fs (file transfer, guest port 2) ---------------------------------------------

/** Message kinds on an fs stream (same header as exec). */
export const FsKind = { JSON: 1, DATA_TO_GUEST: 2, DATA_TO_HOST: 3 } as const;
export type FsKindValue = (typeof FsKind)[keyof typeof FsKind];

export const FS_MAX_PATH = 4095;
/** uid/gid 2^32-1 means "no change" to chown(2); it is not a valid id. */
const IdField = z.number().int().min(0).max(0xfffffffe);

const GuestPathField = z
  .string()
  .startsWith('/')
  .refine((p) => !p.includes('\0'), { message: 'guest paths must not contain NUL' })
  .refine((p) => Buffer.byteLength(p, 'utf8') <= FS_MAX_PATH, {
    message: `guest paths are at most ${FS_MAX_PATH} bytes`,
  });

export const FsReadRequestSchema = z
  .object({ type: z.literal('read'), v: z.literal(PROTOCOL_VERSION), path: GuestPathField })
  .strict();

export const FsWriteRequestSchema = z
  .object({
    type: z.literal('write'),
    v: z.literal(PROTOCOL_VERSION),
    path: GuestPathField,
    /** Permission bits (including set-id and sticky), applied exactly (no umask). */
    mode: z.number().int().min(0).max(0o7777),
    uid: IdField.optional(),
    gid: IdField.optional(),
    /** Exactly this many data bytes follow, then a zero-length data message. */
    size: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  })
  .strict();

export const FsRequestSchema = z.discriminatedUnion('type', [
  FsReadRequestSchema,
  FsWriteRequestSchema,
]);
export type FsRequest = z.infer<typeof FsRequestSchema>;

export const FsStatSchema = z
  .object({
    type: z.literal('stat'),
    size: z.number().int().nonnegative(),
    mode: z.number().int().min(0).max(0o7777),
    uid: z.number().int().nonnegative(),
    gid: z.number().int().nonnegative(),
  })
  .strict();
export type FsStat = z.infer<typeof FsStatSchema>;

export const FsDoneSchema = z
  .object({ type: z.literal('done'), bytes: z.number().int().nonnegative() })
  .strict();

export const FsErrorCodeSchema = z.enum([
  'not_found',
  'is_directory',
  'not_regular',
  'permission_denied',
  'io_error',
  'invalid_request',
]);
export type FsErrorCode = z.infer<typeof FsErrorCodeSchema>;

export const FsErrorSchema = z
  .object({ type: z.literal('error'), code: FsErrorCodeSchema, message: z.string() })
  .strict();

export const FsGuestMessageSchema = z.discriminatedUnion('type', [
  FsStatSchema,
  FsDoneSchema,
  FsErrorSchema,
]);
export type FsGuestMessage = z.infer<typeof FsGuestMessageSchema>;

export function encodeFsJson(message: FsRequest | FsGuestMessage): Buffer {
  return encodeExecMessage(FsKind.JSON, Buffer.from(JSON.stringify(message), 'utf8'));
}

// ---- config disk ------------------------------------------------------------------

export const CONFIG_MAGIC = 'MACFG001';
export const CONFIG_MAX_JSON = 1024 * 1024;

export const BootCommandSchema = z
  .object({
    argv: z.array(z.string()).min(1),
    env: EnvSchema.optional(),
    cwd: z.string().startsWith('/').optional(),
    powerOff: z.boolean().optional(),
  })
  .strict();

/** A dotted-quad IPv4 address (each part 0..255, no leading zeros). */
export const IPV4_PATTERN =
  /^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$/;
const Ipv4Schema = z.string().regex(IPV4_PATTERN, 'must be a dotted-quad IPv4 address');

/**
 * The guest's network (docs/protocol.md §4). `user`: PID 1 configures the
 * first non-loopback interface statically (no DHCP client needed in the
 * image) and writes /etc/resolv.conf. `isolated`: there is no NIC; PID 1
 * only brings up `lo`. Absent: only `lo` (configs from before networking).
 */
export const GuestNetworkSchema = z.discriminatedUnion('mode', [
  z
    .object({
      mode: z.literal('user'),
      /** Address and prefix length, e.g. 10.0.2.15/24. */
      address: z.string().refine((s) => {
        const [ip, len, ...more] = s.split('/');
        return (
          more.length === 0 &&
          ip !== undefined &&
          IPV4_PATTERN.test(ip) &&
          len !== undefined &&
          /^(?:[1-9]|[12][0-9]|3[0-2])$/.test(len)
        );
      }, 'must be an IPv4 address with a prefix length 1..32, e.g. 10.0.2.15/24'),
      gateway: Ipv4Schema,
      /** Resolvers for /etc/resolv.conf (at most 3: the libc limit). */
      dns: z.array(Ipv4Schema).max(NET_MAX_DNS),
      /** Interface MTU; absent = the driver's default (1500). */
      mtu: z.number().int().min(576).max(65520).optional(),
    })
    .strict(),
  z.object({ mode: z.literal('isolated') }).strict(),
]);
export type GuestNetwork = z.infer<typeof GuestNetworkSchema>;

/** At most this many config.prefetch entries (guest/init/prefetch.h). */
export const PREFETCH_MAX = 8;
/** The longest config.prefetch entry, in bytes (guest/init/prefetch.h). */
export const PREFETCH_MAX_NAME = 4095;
/** One config.prefetch entry: what the guest init accepts. */
export const PrefetchEntrySchema = z
  .string()
  .min(1)
  .refine((s) => !s.includes('\0') && Buffer.byteLength(s, 'utf8') <= PREFETCH_MAX_NAME, {
    message: `must be at most ${PREFETCH_MAX_NAME} bytes without NUL`,
  });

export const GuestConfigSchema = z
  .object({
    v: z.literal(PROTOCOL_VERSION),
    workspace: z.string().min(1),
    hostname: z.string().min(1).max(63),
    env: EnvSchema.optional(),
    command: BootCommandSchema.nullable().optional(),
    network: GuestNetworkSchema.optional(),
    /**
     * What the first command will run (a name looked up on PATH, or an
     * absolute path): the guest reads it, and its ELF interpreter, into the
     * page cache while the host handshake goes on. A hint only: a missing
     * file is skipped.
     */
    prefetch: z.array(PrefetchEntrySchema).max(PREFETCH_MAX).optional(),
  })
  .strict();
export type GuestConfig = z.infer<typeof GuestConfigSchema>;

/** The bytes of a config disk image for this config (docs/protocol.md §4). */
export function encodeConfigDisk(config: GuestConfig): Buffer {
  const json = Buffer.from(JSON.stringify(GuestConfigSchema.parse(config)), 'utf8');
  if (json.length > CONFIG_MAX_JSON) throw new RangeError('guest config too large');
  const size = Math.ceil((12 + json.length) / 4096) * 4096;
  const out = Buffer.alloc(size);
  out.write(CONFIG_MAGIC, 0, 'ascii');
  out.writeUInt32BE(json.length, 8);
  json.copy(out, 12);
  return out;
}
