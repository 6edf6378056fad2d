/**
 * The backend-neutral supervisor contract (docs/supervisor-protocol.md): the
 * one JSON request a supervisor executable reads on stdin and the one JSON
 * response it writes on stdout. Every backend (qemu today) speaks this.
 * Unknown fields are rejected everywhere.
 */
import { z } from 'zod';
import { CpusSchema, MAX_WAIT_MS } from '../limits.js';

export const SUPERVISOR_PROTOCOL_VERSION = 1;

// Only backends that have code: a Firecracker supervisor joins when it exists.
export const BackendSchema = z.enum(['qemu']);
export type Backend = z.infer<typeof BackendSchema>;

/** Who asked, carried in every request and stored with the VM (ARCHITECTURE D7). */
export const IdentitySchema = z
  .object({
    requestId: z.string().min(1).max(200),
    runtimeId: z.string().min(1).max(200),
    role: z.string().min(1).max(100),
    backend: BackendSchema,
    labels: z.record(z.string(), z.string()).optional(),
  })
  .strict();
export type Identity = z.infer<typeof IdentitySchema>;

export const AccelSchema = z.enum(['kvm', 'tcg']);
export const AccelRequestSchema = z.enum(['auto', 'kvm', 'tcg']);

export const OwnerSchema = z
  .object({
    pid: z.number().int().positive(),
    /** /proc/<pid>/stat field 22 (start time in clock ticks): pid + this = one process. */
    startTime: z.number().int().nonnegative(),
  })
  .strict();
export type Owner = z.infer<typeof OwnerSchema>;

export const VmStateSchema = z.enum([
  'starting',
  'booting',
  'ready',
  'paused',
  'stopping',
  'exited',
]);
export type VmState = z.infer<typeof VmStateSchema>;

export const ExitReasonSchema = z.enum([
  'poweroff', // the guest powered off (ACPI S5)
  'guest_panic_or_reset', // the guest reset: a kernel panic (panic=-1), reboot or triple fault
  'killed', // a `kill` request or a signal to the monitor
  'boot_timeout', // no guest HELLO within bootTimeoutMs
  'deadline', // the run deadline passed
  'owner_exit', // the owner process went away
  'guest_protocol', // the guest broke the mux protocol
  'vmm_start_failed', // the VMM exited (or never answered its API) before it started
  'vmm_error', // the VMM exited with a non-zero code on its own
  'monitor_error', // the monitor hit a bug and killed the VM
  'monitor_lost', // (supervisor) the monitor died; the VM is gone with it
]);
export type ExitReason = z.infer<typeof ExitReasonSchema>;

/** The live status of one VM; for qemu this is exactly <run>/monitor.json. */
/**
 * A user-mode network stack: `netstack` (build/netstack, a process of its
 * own on libslirp) or `slirp` (QEMU's built-in copy, for comparison).
 */
export const NetBackendSchema = z.enum(['netstack', 'slirp']);
export type NetBackend = z.infer<typeof NetBackendSchema>;

export const VmStatusSchema = z
  .object({
    v: z.literal(1),
    runtimeId: z.string(),
    monitorPid: z.number().int().positive(),
    /**
     * The monitor's start time (/proc/PID/stat field 22, clock ticks after
     * boot): with the pid it names the process even when the pid is reused.
     */
    monitorStartTime: z.number().int().nonnegative().optional(),
    qemuPid: z.number().int().positive().optional(),
    state: VmStateSchema,
    accel: AccelSchema,
    accelReason: z.string(),
    /** Unix epoch ms: monitor start, VMM answering its API, guest HELLO. */
    startedAt: z.number().int(),
    qemuStartedAt: z.number().int().optional(),
    readyAt: z.number().int().optional(),
    /** How often a stalled boot was restarted before the guest was ready (absent: never). */
    bootRestarts: z.number().int().positive().optional(),
    guest: z
      .object({ init: z.string(), bootMs: z.number().int().nonnegative() })
      .strict()
      .optional(),
    /** The user-mode network stack the monitor runs for this VM, if any. */
    network: z
      .object({
        backend: NetBackendSchema,
        /** The netstack process's pid while it runs (slirp runs inside QEMU). */
        pid: z.number().int().positive().optional(),
        /** How often the stack was restarted after it died while the VM ran. */
        restarts: z.number().int().positive().optional(),
        /**
         * Set when the guest has no network while its VM runs: why the stack
         * ended and was not restarted. The VM and exec go on.
         */
        down: z.string().optional(),
      })
      .strict()
      .optional(),
    exit: z
      .object({
        code: z.number().int().nullable(),
        signal: z.string().nullable(),
        reason: ExitReasonSchema,
        /** One sentence on what happened (e.g. QEMU's own error). */
        detail: z.string().optional(),
        at: z.number().int(),
      })
      .strict()
      .optional(),
  })
  .strict();
export type VmStatus = z.infer<typeof VmStatusSchema>;

export const SerializedErrorSchema = z
  .object({
    code: z.string(),
    kind: z.enum([
      'usage',
      'not_found',
      'conflict',
      'unsupported',
      'policy_denied',
      'resource_exhausted',
      'transient',
      'permanent',
    ]),
    message: z.string(),
    remediation: z.string(),
    retryable: z.boolean(),
    data: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

// ---- requests ------------------------------------------------------------------

const absPath = z.string().min(1).startsWith('/', { message: 'must be an absolute path' });

export const DiskSchema = z
  .object({
    path: absPath,
    format: z.enum(['raw', 'qcow2']),
    readOnly: z.boolean(),
    /** virtio-blk serial: how the guest finds the disk (ma-root, ma-config). */
    serial: z.string().regex(/^[A-Za-z0-9._-]{1,20}$/),
  })
  .strict();
export type Disk = z.infer<typeof DiskSchema>;

const ipv4 = z
  .string()
  .regex(
    /^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$/,
    'must be a dotted-quad IPv4 address',
  );
const port = z.number().int().min(1).max(65535);

/** One published port: host address:port → guest port (TCP). */
export const PortForwardSchema = z
  .object({ protocol: z.literal('tcp'), hostAddress: ipv4, hostPort: port, guestPort: port })
  .strict();
export type PortForward = z.infer<typeof PortForwardSchema>;

/**
 * The VM's network. Absent or `isolated`: no NIC at all. `user`: one
 * virtio-net NIC behind a user-mode stack: `netstack` (the default: the
 * project's libslirp helper, outside QEMU, behind the guest-frame filter),
 * or QEMU's built-in `slirp`, only where reaching the host's loopback is
 * allowed, since it cannot stop that. The guest-side addresses must match the guest's config
 * disk: the supervisor configures the stack with them.
 */
export const VmNetworkSchema = z.discriminatedUnion('mode', [
  z.object({ mode: z.literal('isolated') }).strict(),
  z
    .object({
      mode: z.literal('user'),
      backend: NetBackendSchema.default('netstack'),
      /** The guest's address; the stack assumes a /24 around it. */
      guestAddress: ipv4,
      gateway: ipv4,
      /** Where the guest sends DNS; the stack forwards it to the host's resolvers. */
      dns: ipv4,
      mtu: z.number().int().min(576).max(65520).optional(),
      forwards: z.array(PortForwardSchema).max(256),
      /** Map the gateway address to the host's loopback (off: the guest cannot reach it). */
      allowHostLoopback: z.boolean(),
    })
    .strict(),
]);
export type VmNetwork = z.infer<typeof VmNetworkSchema>;
export type VmNetworkInput = z.input<typeof VmNetworkSchema>;

export const StartConfigSchema = z
  .object({
    runtimeDir: absPath,
    workspaceDir: absPath,
    kernel: z
      .object({
        path: absPath,
        initramfs: absPath.optional(),
        /** Extra kernel arguments after the backend's base ones. */
        cmdline: z.array(z.string().min(1).regex(/^\S+$/)).optional(),
      })
      .strict(),
    disks: z.array(DiskSchema).max(16),
    cpus: CpusSchema,
    memoryMiB: z
      .number()
      .int()
      .min(64)
      .max(1024 * 1024),
    accel: AccelRequestSchema.default('auto'),
    /** VMM binary; default: found on PATH. */
    qemuBinary: z.string().min(1).optional(),
    /** Kill the VM if the guest has not said HELLO by then (reason boot_timeout). */
    bootTimeoutMs: z.number().int().positive().max(MAX_WAIT_MS),
    /** Kill the VM this long after start (reason deadline). */
    deadlineMs: z.number().int().positive().optional(),
    /** Kill the VM when this process is gone (reason owner_exit). */
    owner: OwnerSchema.optional(),
    /** With owner: also delete workspaceDir (must be runtimeDir's parent) after the VM is gone. */
    removeOnOwnerExit: z.boolean().default(false),
    /** Absent: no NIC (as `isolated`). */
    network: VmNetworkSchema.optional(),
  })
  .strict();
export type StartConfig = z.infer<typeof StartConfigSchema>;
export type StartConfigInput = z.input<typeof StartConfigSchema>;

const base = {
  v: z.literal(SUPERVISOR_PROTOCOL_VERSION),
  identity: IdentitySchema,
};

export const SupervisorRequestSchema = z.discriminatedUnion('command', [
  z.object({ ...base, command: z.literal('start'), config: StartConfigSchema }).strict(),
  z
    .object({
      ...base,
      command: z.literal('stop'),
      runtimeDir: absPath,
      /** How long to wait for the guest to power off; then answer timedOut (no escalation). */
      graceMs: z.number().int().nonnegative().max(MAX_WAIT_MS).default(10_000),
    })
    .strict(),
  z.object({ ...base, command: z.literal('kill'), runtimeDir: absPath }).strict(),
  z.object({ ...base, command: z.literal('status'), runtimeDir: absPath }).strict(),
  z.object({ ...base, command: z.literal('pause'), runtimeDir: absPath }).strict(),
  z.object({ ...base, command: z.literal('resume'), runtimeDir: absPath }).strict(),
  z
    .object({
      ...base,
      command: z.literal('wait'),
      runtimeDir: absPath,
      timeoutMs: z.number().int().nonnegative().max(86_400_000).optional(),
    })
    .strict(),
]);
export type SupervisorRequest = z.infer<typeof SupervisorRequestSchema>;
export type SupervisorRequestInput = z.input<typeof SupervisorRequestSchema>;
export type SupervisorCommand = SupervisorRequest['command'];

// ---- responses ----------------------------------------------------------------

export const StartResultSchema = z
  .object({
    ok: z.literal(true),
    command: z.literal('start'),
    runtimeDir: z.string(),
    monitorPid: z.number().int().positive(),
    qemuPid: z.number().int().positive(),
    accel: AccelSchema,
    accelReason: z.string(),
    tscKhz: z.number().int().positive().optional(),
    status: VmStatusSchema,
  })
  .strict();
export type StartResult = z.infer<typeof StartResultSchema>;

export const StatusResultSchema = z
  .object({
    ok: z.literal(true),
    command: z.enum(['stop', 'kill', 'status', 'pause', 'resume', 'wait']),
    /** null: this runtime folder has never been started. */
    status: VmStatusSchema.nullable(),
    /** stop/wait: the VM was still running when the time ran out. */
    timedOut: z.boolean().optional(),
    /** status: the monitor was gone and the status was reconciled from monitor.json. */
    reconciled: z.boolean().optional(),
  })
  .strict();
export type StatusResult = z.infer<typeof StatusResultSchema>;

export const ErrorResultSchema = z
  .object({ ok: z.literal(false), error: SerializedErrorSchema })
  .strict();

export const SupervisorResponseSchema = z.union([
  StartResultSchema,
  StatusResultSchema,
  ErrorResultSchema,
]);
export type SupervisorResponse = z.infer<typeof SupervisorResponseSchema>;

/** Exit codes of a supervisor executable. */
export const SupervisorExit = {
  OK: 0,
  /** The command ran and failed: the response is {ok:false}. */
  FAILED: 1,
  /** The request could not be read or validated: the response is {ok:false}. */
  BAD_REQUEST: 2,
} as const;
