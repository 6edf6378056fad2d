/**
 * The durable record of one workspace (workspace.json) and its event log
 * (events.jsonl). Records are written atomically; a record of an unknown
 * version is refused, never rewritten.
 */
import { appendFile, readFile } from 'node:fs/promises';
import { z } from 'zod';
import { MicroagentError } from '../errors.js';
import type { WorkspacePaths } from '../paths.js';
import { writeJsonAtomic } from '../util/fs.js';
import { NetworkSettingsSchema } from './network.js';

export const WORKSPACE_STATES = [
  'prepared',
  'starting',
  'running',
  'paused',
  'stopping',
  'halted',
  'stopped',
  'failed',
] as const;
export const WorkspaceStateSchema = z.enum(WORKSPACE_STATES);
export type WorkspaceState = z.infer<typeof WorkspaceStateSchema>;

export const IdentitySchema = z
  .object({
    requestId: z.string().min(1),
    runtimeId: z.string().min(1),
    role: z.string().min(1),
    backend: z.string().min(1),
    labels: z.record(z.string(), z.string()),
  })
  .strict();
export type Identity = z.infer<typeof IdentitySchema>;

/** The identity of a new workspace; callers' labels are recorded, never judged. */
export function newIdentity(name: string, labels: Record<string, string> = {}): Identity {
  return {
    requestId: `req-${Date.now().toString(36)}-${process.pid}`,
    runtimeId: name,
    role: 'workload',
    backend: 'qemu',
    labels,
  };
}

export const WorkspaceRecordSchema = z
  .object({
    v: z.literal(1),
    name: z.string(),
    createdAt: z.string(),
    updatedAt: z.string(),
    state: WorkspaceStateSchema,
    stateDetail: z.string().optional(),
    ephemeral: z.boolean(),
    identity: IdentitySchema,
    image: z
      .object({
        ref: z.string(),
        /** Canonical reference and manifest digest (OCI images). */
        reference: z.string().optional(),
        digest: z.string().optional(),
        key: z.string(),
        baseline: z.string(),
        initSha256: z.string(),
        /** The image config's defaults: entrypoint, cmd, env, workingDir, user. */
        defaults: z
          .object({
            entrypoint: z.array(z.string()).optional(),
            cmd: z.array(z.string()).optional(),
            env: z.record(z.string(), z.string()),
            workingDir: z.string().optional(),
            user: z.string().optional(),
          })
          .strict()
          .optional(),
      })
      .strict(),
    kernel: z
      .object({
        id: z.string(),
        version: z.string(),
        kernelPath: z.string(),
        initramfsPath: z.string(),
        kernelSha256: z.string(),
        initramfsSha256: z.string(),
      })
      .strict(),
    resources: z
      .object({
        profile: z.string(),
        cpus: z.number().int(),
        memoryMiB: z.number().int(),
        /** The root disk's size (absent in older records: the image's size). */
        diskMiB: z.number().int().positive().optional(),
        /** --disk-size pinned it. */
        diskPinned: z.boolean().optional(),
      })
      .strict(),
    env: z.record(z.string(), z.string()),
    /** Shell commands run once, in a setup boot at create. */
    setup: z.array(z.string()).optional(),
    /** Declared output files: name → absolute guest path (`artifacts`). */
    outputs: z.record(z.string(), z.string()).optional(),
    /** Network mode and published ports (absent in older records: user mode, no ports). */
    network: NetworkSettingsSchema.optional(),
  })
  .strict();
export type WorkspaceRecord = z.infer<typeof WorkspaceRecordSchema>;

export async function writeRecord(ws: WorkspacePaths, record: WorkspaceRecord): Promise<void> {
  await writeJsonAtomic(ws.record, WorkspaceRecordSchema.parse(record));
}

export async function readRecord(ws: WorkspacePaths, name: string): Promise<WorkspaceRecord> {
  let text: string;
  try {
    text = await readFile(ws.record, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new MicroagentError('WORKSPACE_NOT_FOUND', `workspace ${name} not found`, {
        data: { name },
      });
    }
    throw err;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new MicroagentError('STATE_CORRUPT', `${ws.record} is not valid JSON`, { cause: err });
  }
  const parsed = WorkspaceRecordSchema.safeParse(value);
  if (!parsed.success) {
    throw new MicroagentError(
      'STATE_CORRUPT',
      `${ws.record} does not match the workspace record format: ${parsed.error.issues[0]?.message ?? ''}`,
      { remediation: 'It may come from a newer microagent; upgrade, or delete the workspace.' },
    );
  }
  return parsed.data;
}

export interface WorkspaceEvent {
  at: string;
  state: WorkspaceState;
  detail?: string;
  identity: Identity;
}

/** Appends one JSON line to the workspace's event log. */
export async function appendEvent(ws: WorkspacePaths, event: WorkspaceEvent): Promise<void> {
  await appendFile(ws.events, JSON.stringify(event) + '\n', { mode: 0o600 });
}
