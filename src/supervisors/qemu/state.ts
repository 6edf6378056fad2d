/**
 * On-disk and on-socket formats shared by the QEMU supervisor and its
 * per-workspace monitor: the runtime folder layout, monitor-config.json
 * (supervisor → monitor), monitor.json (the monitor's live state) and the
 * ctl.sock request/response lines. docs/supervisor-protocol.md describes them.
 */
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { MAX_WAIT_MS } from '../../limits.js';
import {
  AccelSchema,
  IdentitySchema,
  NetBackendSchema,
  OwnerSchema,
  SerializedErrorSchema,
  VmStatusSchema,
  type VmStatus,
} from '../../vmkit/schema.js';
export { OwnerSchema, type Owner } from '../../vmkit/schema.js';
export {
  ExitReasonSchema,
  VmStateSchema,
  type ExitReason,
  type VmState,
} from '../../vmkit/schema.js';

/** Files in a workspace's runtime folder (same names as WorkspacePaths). */
export function runtimeFiles(runtimeDir: string) {
  const f = (name: string): string => join(runtimeDir, name);
  return {
    dir: runtimeDir,
    muxSocket: f('mux.sock'),
    agentSocket: f('agent.sock'),
    controlSocket: f('ctl.sock'),
    qmpSocket: f('qmp.sock'),
    serialLog: f('serial.log'),
    qemuLog: f('qemu.log'),
    qemuPid: f('qemu.pid'),
    /** QEMU's NIC socket (it listens; netstack connects, again after a restart). */
    netSocket: f('net.sock'),
    netLog: f('net.log'),
    monitorLog: f('monitor.log'),
    monitorState: f('monitor.json'),
    monitorConfig: f('monitor-config.json'),
  };
}
export type RuntimeFiles = ReturnType<typeof runtimeFiles>;

/** Every socket of a runtime folder: checked for length before a start, removed after. */
export function runtimeSockets(files: RuntimeFiles): string[] {
  return [
    files.muxSocket,
    files.agentSocket,
    files.controlSocket,
    files.qmpSocket,
    files.netSocket,
  ];
}

export const MonitorConfigSchema = z
  .object({
    v: z.literal(1),
    identity: IdentitySchema,
    runtimeDir: z.string().startsWith('/'),
    workspaceDir: z.string().startsWith('/'),
    /** The VMM exec helper (PR_SET_PDEATHSIG) QEMU is started through. */
    vmmExec: z.string().startsWith('/'),
    /** Full QEMU argv; argv[0] is an absolute path (vmm-exec does not search PATH). */
    qemuArgv: z.array(z.string()).min(1),
    /**
     * netstack's argv (argv[0] absolute), started through vmmExec right
     * after QEMU; it connects to QEMU's NIC socket (runtimeFiles().netSocket)
     * and is started again if it dies while the VM runs (netstack.ts).
     */
    netstackArgv: z.array(z.string()).min(1).optional(),
    /** The user-mode network stack, reported in monitor.json. */
    networkBackend: NetBackendSchema.optional(),
    /** Whether qemuArgv has a QMP socket at runtimeFiles().qmpSocket. */
    qmp: z.boolean(),
    accel: AccelSchema,
    accelReason: z.string(),
    bootTimeoutMs: z.number().int().positive(),
    /** Unix epoch ms at which the VM is killed (reason `deadline`). */
    deadlineAt: z.number().int().positive().optional(),
    owner: OwnerSchema.optional(),
    removeOnOwnerExit: z.boolean(),
  })
  .strict()
  .refine(
    (c) => !c.removeOnOwnerExit || resolve(dirname(c.runtimeDir)) === resolve(c.workspaceDir),
    {
      message: 'removeOnOwnerExit needs workspaceDir to be the parent of runtimeDir',
    },
  );
export type MonitorConfig = z.infer<typeof MonitorConfigSchema>;

/** monitor.json is the backend-neutral VM status (src/vmkit/schema.ts). */
export const MonitorStateSchema = VmStatusSchema;
export type MonitorState = VmStatus;

// ---- ctl.sock: one JSON line in, one JSON line out per connection ----------------

export const CtlRequestSchema = z.discriminatedUnion('cmd', [
  z.object({ cmd: z.literal('status') }).strict(),
  z
    .object({ cmd: z.literal('stop'), graceMs: z.number().int().nonnegative().max(MAX_WAIT_MS) })
    .strict(),
  z.object({ cmd: z.literal('kill') }).strict(),
  z
    .object({ cmd: z.literal('wait'), timeoutMs: z.number().int().nonnegative().optional() })
    .strict(),
  z.object({ cmd: z.literal('pause') }).strict(),
  z.object({ cmd: z.literal('resume') }).strict(),
  z.object({ cmd: z.literal('ping') }).strict(),
]);
export type CtlRequest = z.infer<typeof CtlRequestSchema>;

export const CtlResponseSchema = z.union([
  z
    .object({
      ok: z.literal(true),
      state: MonitorStateSchema,
      /** stop/wait: the VM had not exited when the time ran out. */
      timedOut: z.boolean().optional(),
      /** ping: channel round trip in µs. */
      rttUs: z.number().int().nonnegative().optional(),
    })
    .strict(),
  z.object({ ok: z.literal(false), error: SerializedErrorSchema }).strict(),
]);
export type CtlResponse = z.infer<typeof CtlResponseSchema>;
