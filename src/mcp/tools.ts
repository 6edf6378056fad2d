/**
 * The MCP tools: one thin entry per library operation. Each has a strict zod
 * input schema whose fields are described (the model reads them), the MCP
 * hints (readOnly / destructive / idempotent / openWorld), and a handler that
 * calls the library and returns plain JSON. Handlers throw typed errors; the
 * server turns them into the error envelope.
 */
import {
  execDocument,
  runDocument,
  MicroagentError,
  copyIn,
  copyOut,
  getArtifact,
  listArtifacts,
  listImages,
  pullImage,
  type PullEvent,
  listKernels,
  readDefaultKernelId,
  verifyKernel,
  doctor,
  StatePaths,
  loadSpec,
  specToCreateOptions,
  createWorkspaceRecord as createWorkspace,
  deleteWorkspace,
  execWorkspace,
  haltWorkspace,
  killWorkspace,
  pauseWorkspace,
  readWorkspaceResult,
  resumeWorkspace,
  startWorkspace,
  stopWorkspace,
  type CreateOptions,
  generateRunName,
  type NetworkOptions,
  PROFILES,
  CpusSchema,
  DiskMiBSchema,
  MemoryMiBSchema,
  type WorkspaceRecord,
  runCommand,
  listWorkspaceSummaries,
  readEvents,
  readLogs,
  workspaceStatus,
} from '../index.js';
import { Readable } from 'node:stream';
import { resolve } from 'node:path';
import { z } from 'zod';
import type { ToolAnnotations } from '@modelcontextprotocol/sdk/types.js';
import { describeHost } from './describe.js';

/** What a handler gets besides its arguments. */
export interface ToolContext {
  stateDir: string;
  /** Aborted when the client cancels the call or the server shuts down. */
  signal: AbortSignal;
  /** Reports progress (sent only when the client asked for it with a progressToken). */
  progress: (message: string, progress?: number, total?: number) => void;
}

export interface ToolDef<S extends z.ZodRawShape = z.ZodRawShape> {
  name: string;
  title: string;
  description: string;
  shape: S;
  annotations: ToolAnnotations;
  /** Mutating tools take `idempotency_key`. */
  mutating: boolean;
  handler: (args: z.output<z.ZodObject<S>>, ctx: ToolContext) => Promise<unknown>;
}

function tool<S extends z.ZodRawShape>(def: ToolDef<S>): ToolDef {
  return def as unknown as ToolDef;
}

/** Default cap on each of stdout/stderr returned by run and exec (model context is precious). */
export const DEFAULT_OUTPUT_LIMIT = 1024 * 1024;
export const MAX_OUTPUT_LIMIT = 16 * 1024 * 1024;

// ---- shared argument schemas -------------------------------------------------------

const name = z
  .string()
  .min(1)
  .max(63)
  .describe('Workspace name (1-63 letters, digits, ".", "_" or "-"; a letter or digit first)');
const image = z
  .string()
  .min(1)
  .describe(
    'OCI image reference, e.g. "alpine:3.20" or "ghcr.io/org/img@sha256:..."; "default" is the embedded busybox image',
  );
const command = z
  .union([z.array(z.string()).min(1), z.string().min(1)])
  .describe('The command: an argv array (run as is, no shell) or a string (run with /bin/sh -c)');
const env = z.record(z.string()).describe('Environment variables, {"KEY": "value"}');
const labels = z
  .record(z.string())
  .describe('Caller labels recorded with the workspace, {"key": "value"}');
const profile = z
  .enum(Object.keys(PROFILES) as [keyof typeof PROFILES, ...(keyof typeof PROFILES)[]])
  .describe(
    `Resource profile: ${Object.entries(PROFILES)
      .map(([n, p]) => `${n} (${p.cpus} CPU, ${p.memoryMiB} MiB)`)
      .join(', ')}; default small`,
  );
const cpus = CpusSchema.describe('Virtual CPUs (overrides the profile)');
const memoryMib = MemoryMiBSchema.describe('Memory in MiB (overrides the profile)');
const diskMib = DiskMiBSchema.describe(
  "Root disk size in MiB, pinned (default: the profile's, never smaller than the image)",
);
const timeoutMs = z
  .number()
  .int()
  .positive()
  .describe('Kill the command after this many milliseconds (status timed_out)');
const bootTimeoutMs = z
  .number()
  .int()
  .positive()
  .max(600_000)
  .describe('Give up when the guest is not ready after this many milliseconds (default 60000)');
const stdin = z.string().describe("Text fed to the command's stdin (UTF-8)");
const outputLimit = z
  .number()
  .int()
  .min(0)
  .max(MAX_OUTPUT_LIMIT)
  .describe(
    `Cap in bytes on each of stdout and stderr returned (default ${DEFAULT_OUTPUT_LIMIT}); the rest is dropped and flagged truncated`,
  );
const guestPath = z
  .string()
  .startsWith('/', 'must be an absolute guest path')
  .describe('Absolute path in the guest');
const hostPath = z
  .string()
  .min(1)
  .describe('Path on the host (relative paths resolve against the server working directory)');

const network = z
  .object({
    mode: z
      .enum(['user', 'isolated'])
      .optional()
      .describe('user (default): outbound NAT through the host; isolated: no network at all'),
    publish: z
      .array(z.string())
      .optional()
      .describe(
        'Host ports forwarded into the guest, "[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]" each, e.g. "8080:80" (host side binds 127.0.0.1 unless HOST_IP is given)',
      ),
    allow_host_loopback: z
      .boolean()
      .optional()
      .describe("Let the guest reach services on the host's loopback (off by default: a risk)"),
  })
  .strict()
  .describe('Network of the workspace (default: user mode, no published ports)');

function networkOptions(n: z.output<typeof network> | undefined): { network?: NetworkOptions } {
  if (n === undefined) return {};
  return {
    network: {
      ...(n.mode !== undefined ? { mode: n.mode } : {}),
      ...(n.publish !== undefined ? { publish: n.publish } : {}),
      ...(n.allow_host_loopback !== undefined ? { allowHostLoopback: n.allow_host_loopback } : {}),
    },
  };
}

function argvOf(cmd: string | string[]): string[] {
  return typeof cmd === 'string' ? ['/bin/sh', '-c', cmd] : cmd;
}

function recordSummary(record: WorkspaceRecord): Record<string, unknown> {
  return {
    name: record.name,
    state: record.state,
    ...(record.stateDetail ? { stateDetail: record.stateDetail } : {}),
    image: record.image.ref,
    resources: record.resources,
    ...(record.outputs ? { outputs: record.outputs } : {}),
    updatedAt: record.updatedAt,
  };
}

/** Pull progress as bytes done of bytes known, throttled to ~10 reports a second. */
function pullProgress(ctx: ToolContext): (e: PullEvent) => void {
  const blobs = new Map<string, { done: number; total: number }>();
  let last = 0;
  return (e) => {
    if (e.type === 'resolved') {
      ctx.progress(`resolved ${e.reference} (${e.layers} layers, ${e.totalSize} bytes)`);
      return;
    }
    if (e.type !== 'blob') return;
    blobs.set(e.digest, { done: e.done, total: e.total });
    const now = Date.now();
    if (now - last < 100 && e.done !== e.total) return;
    last = now;
    let done = 0;
    let total = 0;
    for (const b of blobs.values()) {
      done += b.done;
      total += b.total;
    }
    ctx.progress(`pulling ${e.digest.slice(7, 19)}`, done, total);
  };
}

// ---- the tools ---------------------------------------------------------------------

const READ_ONLY: ToolAnnotations = {
  readOnlyHint: true,
  destructiveHint: false,
  idempotentHint: true,
  openWorldHint: false,
};

export const TOOLS: ToolDef[] = [
  tool({
    name: 'run',
    title: 'Run a command in a throwaway microVM',
    description:
      'Boots a fresh workspace on an image, runs one command in it, returns its exit status and output, and deletes the workspace (keep: true keeps it halted). A non-zero exit of the command is a result, not a tool error. Sends progress notifications while the image is pulled and the VM boots.',
    shape: {
      command,
      image: image.optional(),
      env: env.optional(),
      cwd: z
        .string()
        .optional()
        .describe('Working directory in the guest (default: the image WorkingDir, else /)'),
      stdin: stdin.optional(),
      timeout_ms: timeoutMs.optional(),
      keep: z
        .boolean()
        .optional()
        .describe('Keep the workspace (halted) afterwards instead of deleting it'),
      name: name.optional().describe('Workspace name (default: run-<adjective>-<animal>-<hex>)'),
      profile: profile.optional(),
      cpus: cpus.optional(),
      memory_mib: memoryMib.optional(),
      disk_mib: diskMib.optional(),
      labels: labels.optional(),
      network: network.optional(),
      boot_timeout_ms: bootTimeoutMs.optional(),
      output_limit_bytes: outputLimit.optional(),
    },
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: false,
      openWorldHint: true,
    },
    mutating: true,
    handler: async (a, ctx) => {
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      const limit = a.output_limit_bytes ?? DEFAULT_OUTPUT_LIMIT;
      const result = await runCommand({
        stateDir: ctx.stateDir,
        argv: argvOf(a.command),
        name: a.name ?? generateRunName(),
        ...(a.image !== undefined ? { image: a.image } : {}),
        ...(a.env ? { env: a.env } : {}),
        ...(a.cwd !== undefined ? { cwd: a.cwd } : {}),
        ...(a.stdin !== undefined ? { stdin: Readable.from([Buffer.from(a.stdin)]) } : {}),
        ...(a.timeout_ms !== undefined ? { timeoutMs: a.timeout_ms } : {}),
        keep: a.keep === true,
        ...(a.profile !== undefined ? { profile: a.profile } : {}),
        ...(a.cpus !== undefined ? { cpus: a.cpus } : {}),
        ...(a.memory_mib !== undefined ? { memoryMiB: a.memory_mib } : {}),
        ...(a.disk_mib !== undefined ? { diskMiB: a.disk_mib } : {}),
        ...(a.labels ? { labels: a.labels } : {}),
        ...networkOptions(a.network),
        ...(a.boot_timeout_ms !== undefined ? { bootTimeoutMs: a.boot_timeout_ms } : {}),
        stdoutLimit: limit,
        stderrLimit: limit,
        imageOptions: { onPull: pullProgress(ctx) },
        onStdout: (c) => void stdout.push(c),
        onStderr: (c) => void stderr.push(c),
        onProgress: (e) => {
          if (e.phase === 'prepare') ctx.progress(`preparing ${e.detail}`);
          else if (e.phase === 'boot') ctx.progress(`booting ${e.workspace} (${e.accel})`);
          else if (e.phase === 'ready')
            ctx.progress(`${e.workspace} ready in ${e.bootMs} ms; running the command`);
          else ctx.progress(`tearing down ${e.workspace}`);
        },
        signal: ctx.signal,
      });
      return runDocument(result, Buffer.concat(stdout), Buffer.concat(stderr));
    },
  }),

  tool({
    name: 'create',
    title: 'Create a persistent workspace',
    description:
      'Creates a named workspace (state prepared, not running) with its own disk on an image. With setup commands, boots it once to run them and halts it. Arguments given here override the fields of the spec file when both are given.',
    shape: {
      name: name.optional().describe('Workspace name; required unless the spec file sets name:'),
      file: z
        .string()
        .optional()
        .describe(
          'Host path of a microagent.yaml spec (docs/spec.md); the other arguments override its fields',
        ),
      image: image.optional(),
      profile: profile.optional(),
      cpus: cpus.optional(),
      memory_mib: memoryMib.optional(),
      disk_mib: diskMib.optional(),
      env: env.optional().describe('Environment for every command in the workspace'),
      labels: labels.optional(),
      setup: z
        .array(z.string().min(1))
        .optional()
        .describe(
          'Shell commands run once at create, in order (/bin/sh -c); a failure removes the workspace',
        ),
      outputs: z
        .record(guestPath)
        .optional()
        .describe(
          'Declared output files, {"name": "/absolute/guest/path"} (see the artifacts tool)',
        ),
      network: network.optional(),
      boot_timeout_ms: bootTimeoutMs.optional(),
    },
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: false,
      openWorldHint: true,
    },
    mutating: true,
    handler: async (a, ctx) => {
      let base: Partial<CreateOptions> = {};
      if (a.file !== undefined) {
        const spec = await loadSpec(resolve(a.file));
        base = specToCreateOptions(spec, a.name !== undefined ? { name: a.name } : {});
      }
      const workspace = a.name ?? base.name;
      if (workspace === undefined) {
        throw new MicroagentError(
          'INVALID_ARGUMENT',
          'create needs a name (or a spec file that sets name:)',
        );
      }
      ctx.progress(`creating ${workspace}`);
      const record = await createWorkspace({
        ...base,
        stateDir: ctx.stateDir,
        name: workspace,
        ...(a.image !== undefined ? { image: a.image } : {}),
        ...(a.profile !== undefined ? { profile: a.profile } : {}),
        ...(a.cpus !== undefined ? { cpus: a.cpus } : {}),
        ...(a.memory_mib !== undefined ? { memoryMiB: a.memory_mib } : {}),
        ...(a.disk_mib !== undefined ? { diskMiB: a.disk_mib } : {}),
        ...(a.env ? { env: { ...base.env, ...a.env } } : {}),
        ...(a.labels ? { labels: { ...base.labels, ...a.labels } } : {}),
        ...(a.setup ? { setup: a.setup } : {}),
        ...(a.outputs ? { outputs: { ...base.outputs, ...a.outputs } } : {}),
        ...(a.network
          ? { network: { ...base.network, ...networkOptions(a.network).network } }
          : {}),
        ...(a.boot_timeout_ms !== undefined ? { bootTimeoutMs: a.boot_timeout_ms } : {}),
        imageOptions: { onPull: pullProgress(ctx) },
      });
      return recordSummary(record);
    },
  }),

  tool({
    name: 'start',
    title: 'Boot a workspace',
    description:
      'Boots a prepared, halted, stopped or failed workspace from its disk and waits until commands can run in it. Refuses (VERIFICATION_FAILED) when its kernel, init or image changed since create. Sends progress notifications.',
    shape: { name, boot_timeout_ms: bootTimeoutMs.optional() },
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: false,
      openWorldHint: false,
    },
    mutating: true,
    handler: async (a, ctx) => {
      ctx.progress(`booting ${a.name}`);
      const record = await startWorkspace({
        stateDir: ctx.stateDir,
        name: a.name,
        ...(a.boot_timeout_ms !== undefined ? { bootTimeoutMs: a.boot_timeout_ms } : {}),
      });
      ctx.progress(`${a.name} is ${record.state}`);
      return recordSummary(record);
    },
  }),

  tool({
    name: 'status',
    title: 'One workspace in depth',
    description:
      'State, image, kernel, resources, VM process, readiness probes (guest, exec, shell, result) and the verification of a workspace.',
    shape: { name },
    annotations: READ_ONLY,
    mutating: false,
    handler: (a, ctx) => workspaceStatus({ stateDir: ctx.stateDir, name: a.name }),
  }),

  tool({
    name: 'list',
    title: 'List workspaces',
    description:
      'Every workspace in the state directory (or only live ones), with state, profile and image.',
    shape: {
      live_only: z
        .boolean()
        .optional()
        .describe('Only workspaces with a VM (starting, running, paused, stopping)'),
    },
    annotations: READ_ONLY,
    mutating: false,
    handler: async (a, ctx) => ({
      workspaces: await listWorkspaceSummaries({
        stateDir: ctx.stateDir,
        liveOnly: a.live_only === true,
      }),
    }),
  }),

  tool({
    name: 'exec',
    title: 'Run a command in a running workspace',
    description:
      'Runs one command in a running workspace and returns its exit status, stdout and stderr. A non-zero exit is a result, not a tool error. Cancelling the call signals the command.',
    shape: {
      name,
      command,
      env: env.optional(),
      cwd: z
        .string()
        .optional()
        .describe('Working directory in the guest (default: the image WorkingDir, else /)'),
      stdin: stdin.optional(),
      timeout_ms: timeoutMs.optional(),
      output_limit_bytes: outputLimit.optional(),
    },
    annotations: {
      readOnlyHint: false,
      destructiveHint: true,
      idempotentHint: false,
      openWorldHint: false,
    },
    mutating: true,
    handler: async (a, ctx) => {
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      const limit = a.output_limit_bytes ?? DEFAULT_OUTPUT_LIMIT;
      const exit = await execWorkspace({
        stateDir: ctx.stateDir,
        name: a.name,
        argv: argvOf(a.command),
        ...(a.env ? { env: a.env } : {}),
        ...(a.cwd !== undefined ? { cwd: a.cwd } : {}),
        ...(a.timeout_ms !== undefined ? { timeoutMs: a.timeout_ms } : {}),
        ...(a.stdin !== undefined ? { stdin: Readable.from([Buffer.from(a.stdin)]) } : {}),
        stdoutLimit: limit,
        stderrLimit: limit,
        onStdout: (c) => void stdout.push(c),
        onStderr: (c) => void stderr.push(c),
        signal: ctx.signal,
      });
      return execDocument(a.name, exit, Buffer.concat(stdout), Buffer.concat(stderr));
    },
  }),

  tool({
    name: 'cp',
    title: 'Copy a file into or out of a workspace',
    description:
      'Copies one regular file between the host and a workspace (running: through the guest agent; halted/stopped/prepared: through its disk image): direction "in" writes host_path to guest_path (the guest parent directory must exist; the file is replaced atomically), "out" writes guest_path to host_path.',
    shape: {
      name,
      direction: z.enum(['in', 'out']).describe('"in": host → guest; "out": guest → host'),
      host_path: hostPath,
      guest_path: guestPath,
      mode: z
        .number()
        .int()
        .min(0)
        .max(0o7777)
        .optional()
        .describe(
          'For "in": permission bits of the guest file, e.g. 493 (0755); default: the host file\'s',
        ),
    },
    annotations: {
      readOnlyHint: false,
      destructiveHint: true,
      idempotentHint: true,
      openWorldHint: false,
    },
    mutating: true,
    handler: async (a, ctx) => {
      // A running workspace goes through the guest agent, a stopped one
      // through its disk image (src/workspace/files.ts).
      const host = resolve(a.host_path);
      const location = { name: a.name, path: a.guest_path };
      return a.direction === 'in'
        ? copyIn({
            stateDir: ctx.stateDir,
            hostPath: host,
            to: location,
            ...(a.mode !== undefined ? { mode: a.mode } : {}),
          })
        : copyOut({ stateDir: ctx.stateDir, from: location, hostPath: host });
    },
  }),

  tool({
    name: 'artifacts',
    title: 'Declared outputs of a workspace',
    description:
      'Without artifact: lists the outputs the workspace declared at create (name → guest path). With artifact and host_path: copies that output out of the running workspace to host_path.',
    shape: {
      name,
      artifact: z.string().min(1).optional().describe('Name of a declared output to copy out'),
      host_path: hostPath
        .optional()
        .describe('Where to write the artifact on the host (required with artifact)'),
    },
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: true,
      openWorldHint: false,
    },
    mutating: false,
    handler: async (a, ctx) => {
      const artifacts = await listArtifacts({ stateDir: ctx.stateDir, name: a.name });
      if (a.artifact === undefined) return { workspace: a.name, artifacts };
      if (a.host_path === undefined && artifacts.some((x) => x.name === a.artifact)) {
        throw new MicroagentError('INVALID_ARGUMENT', 'host_path: is required with artifact', {
          data: { field: 'host_path' },
        });
      }
      // getArtifact refuses an undeclared output (ARTIFACT_NOT_FOUND).
      return getArtifact({
        stateDir: ctx.stateDir,
        name: a.name,
        artifact: a.artifact,
        hostPath: resolve(a.host_path ?? '.'),
      });
    },
  }),

  tool({
    name: 'halt',
    title: 'Power a workspace off cleanly',
    description:
      'Asks the guest to power off (disk kept); a guest that does not stop within 15 s is killed and marked failed.',
    shape: { name },
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: true,
      openWorldHint: false,
    },
    mutating: true,
    handler: async (a, ctx) =>
      recordSummary(await haltWorkspace({ stateDir: ctx.stateDir, name: a.name })),
  }),

  tool({
    name: 'stop',
    title: 'Ask a workspace to stop',
    description:
      'Asks the guest to stop and gives it 5 s; when it does not, the workspace is marked failed and left for kill (STOP_TIMEOUT). Prefer halt.',
    shape: { name },
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: true,
      openWorldHint: false,
    },
    mutating: true,
    handler: async (a, ctx) =>
      recordSummary(await stopWorkspace({ stateDir: ctx.stateDir, name: a.name })),
  }),

  tool({
    name: 'kill',
    title: 'Hard-stop a workspace',
    description:
      'Kills the VM at once (like pulling the plug); unsynced guest writes may be lost. The disk is kept.',
    shape: { name },
    annotations: {
      readOnlyHint: false,
      destructiveHint: true,
      idempotentHint: true,
      openWorldHint: false,
    },
    mutating: true,
    handler: async (a, ctx) =>
      recordSummary(await killWorkspace({ stateDir: ctx.stateDir, name: a.name })),
  }),

  tool({
    name: 'pause',
    title: 'Freeze a workspace',
    description: 'Freezes the vCPUs of a running workspace; its memory stays. resume thaws it.',
    shape: { name },
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: true,
      openWorldHint: false,
    },
    mutating: true,
    handler: async (a, ctx) =>
      recordSummary(await pauseWorkspace({ stateDir: ctx.stateDir, name: a.name })),
  }),

  tool({
    name: 'resume',
    title: 'Thaw a paused workspace',
    description: 'Resumes the vCPUs of a paused workspace.',
    shape: { name },
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: true,
      openWorldHint: false,
    },
    mutating: true,
    handler: async (a, ctx) =>
      recordSummary(await resumeWorkspace({ stateDir: ctx.stateDir, name: a.name })),
  }),

  tool({
    name: 'delete',
    title: 'Delete a workspace',
    description:
      'Removes a workspace that is not running: its disk, record and logs. Halt or kill a running one first.',
    shape: { name },
    annotations: {
      readOnlyHint: false,
      destructiveHint: true,
      idempotentHint: true,
      openWorldHint: false,
    },
    mutating: true,
    handler: (a, ctx) => deleteWorkspace({ stateDir: ctx.stateDir, name: a.name }),
  }),

  tool({
    name: 'logs',
    title: 'Serial console of a workspace',
    description:
      'The serial console output of the current or last boot (kernel and init messages), as text; the tail when it is long.',
    shape: {
      name,
      tail_lines: z
        .number()
        .int()
        .positive()
        .max(100_000)
        .optional()
        .describe('Only the last N lines'),
      max_bytes: z
        .number()
        .int()
        .positive()
        .max(MAX_OUTPUT_LIMIT)
        .optional()
        .describe(`Cap on the bytes returned, from the end (default ${256 * 1024})`),
    },
    annotations: READ_ONLY,
    mutating: false,
    handler: async (a, ctx) => {
      const buf = await readLogs({ stateDir: ctx.stateDir, name: a.name });
      const max = a.max_bytes ?? 256 * 1024;
      let text = buf.subarray(Math.max(0, buf.length - max)).toString('utf8');
      if (a.tail_lines !== undefined)
        text = text
          .split('\n')
          .slice(-(a.tail_lines + 1))
          .join('\n');
      return { workspace: a.name, bytes: buf.length, truncated: buf.length > max, logs: text };
    },
  }),

  tool({
    name: 'events',
    title: 'State changes of a workspace',
    description:
      'The workspace event log (state, time, detail), oldest first. Page with after_index: pass next_after_index from the previous answer.',
    shape: {
      name,
      after_index: z
        .number()
        .int()
        .min(-1)
        .optional()
        .describe('Only events after this index (0-based); default: from the start'),
      limit: z
        .number()
        .int()
        .positive()
        .max(10_000)
        .optional()
        .describe('At most this many events (default 1000)'),
    },
    annotations: READ_ONLY,
    mutating: false,
    handler: async (a, ctx) => {
      const all = await readEvents({ stateDir: ctx.stateDir, name: a.name });
      const from = (a.after_index ?? -1) + 1;
      const events = all
        .slice(from, from + (a.limit ?? 1000))
        .map((e, i) => ({ index: from + i, ...e }));
      return {
        workspace: a.name,
        events,
        next_after_index: from + events.length - 1,
        total: all.length,
      };
    },
  }),

  tool({
    name: 'result',
    title: 'Recorded result of a workspace',
    description:
      'The structured result recorded by the last finished run of a kept workspace (run with keep: true): exit status, argv, completion time.',
    shape: { name },
    annotations: READ_ONLY,
    mutating: false,
    handler: (a, ctx) => readWorkspaceResult({ stateDir: ctx.stateDir, name: a.name }),
  }),

  tool({
    name: 'image_pull',
    title: 'Pull an OCI image',
    description:
      'Pulls an image from its registry into the local cache (by tag or digest) and records it. Sends byte progress notifications.',
    shape: {
      reference: image.describe('Image reference to pull, e.g. "alpine:3.20"'),
      platform: z
        .string()
        .optional()
        .describe('os/arch[/variant] to pick from an index (default: this host)'),
      insecure_registries: z
        .array(z.string())
        .optional()
        .describe('Registry hosts that may be reached over plain HTTP'),
    },
    annotations: {
      readOnlyHint: false,
      destructiveHint: false,
      idempotentHint: true,
      openWorldHint: true,
    },
    mutating: true,
    handler: async (a, ctx) => {
      const r = await pullImage(new StatePaths(ctx.stateDir), a.reference, {
        ...(a.platform !== undefined ? { platform: a.platform } : {}),
        ...(a.insecure_registries ? { insecureRegistries: a.insecure_registries } : {}),
        onProgress: pullProgress(ctx),
        signal: ctx.signal,
      });
      return {
        reference: r.reference,
        digest: r.resolvedDigest,
        pinnedReference: r.pinnedReference,
        platform: r.platform,
        layers: r.layers.map((l) => ({
          digest: l.digest,
          size: l.size,
          compression: l.compression,
        })),
        totalSize: r.totalSize,
        downloadedBytes: r.downloadedBytes,
      };
    },
  }),

  tool({
    name: 'image_list',
    title: 'List pulled images',
    description: 'Images in the local cache: reference, digest, platform, size, pull time.',
    shape: {},
    annotations: READ_ONLY,
    mutating: false,
    handler: async (_a, ctx) => ({ images: await listImages(new StatePaths(ctx.stateDir)) }),
  }),

  tool({
    name: 'kernel_status',
    title: 'Installed guest kernels',
    description:
      'Lists the installed guest kernels and re-verifies each against its manifest (SHA-256 of every file).',
    shape: { id: z.string().optional().describe('Only this kernel id') },
    annotations: READ_ONLY,
    mutating: false,
    handler: async (a, ctx) => {
      const paths = new StatePaths(ctx.stateDir);
      const kernels = (await listKernels(paths)).filter((k) => a.id === undefined || k.id === a.id);
      if (a.id !== undefined && kernels.length === 0) {
        throw new MicroagentError('KERNEL_NOT_INSTALLED', `kernel ${a.id} is not installed`, {
          data: { id: a.id },
        });
      }
      const verified = await Promise.all(
        kernels.map(async (k) => {
          if (k.error) return { ...k, verification: { ok: false, error: k.error } };
          try {
            const v = await verifyKernel(paths, k.id);
            return {
              ...k,
              verification: {
                ok: v.ok,
                divergence: v.divergence,
                ...(v.initCurrent !== undefined ? { initCurrent: v.initCurrent } : {}),
              },
            };
          } catch (err) {
            return { ...k, verification: { ok: false, error: (err as Error).message } };
          }
        }),
      );
      return { default: (await readDefaultKernelId(paths)) ?? null, kernels: verified };
    },
  }),

  tool({
    name: 'doctor',
    title: 'Can this host boot workspaces',
    description:
      'Checks QEMU, the accelerator (KVM or TCG), e2fsprogs, the guest init and the kernel; each check is ok, warn or fail with a remediation.',
    shape: {},
    annotations: READ_ONLY,
    mutating: false,
    handler: (_a, ctx) => doctor({ stateDir: ctx.stateDir }),
  }),

  tool({
    name: 'describe',
    title: 'Capabilities of this server',
    description:
      'What this host and build can do: backends, accelerator, versions (microagent, QEMU, kernel), resource profiles and limits, and the tool list with their hints.',
    shape: {},
    annotations: READ_ONLY,
    mutating: false,
    handler: (_a, ctx) => describeHost(ctx.stateDir, TOOLS),
  }),
];
