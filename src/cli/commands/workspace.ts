/**
 * Persistent-workspace commands: create, start, exec, status, list, ps,
 * halt, stop, kill, pause, resume, delete, wait, logs, events, result.
 */
import {
  CPUS,
  execDocument,
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
  waitWorkspace,
  parseDiskSize,
  parseMemory,
  specToCreateOptions,
  type WorkspaceRecord,
  followEvents,
  followLogs,
  listWorkspaceSummaries,
  readEvents,
  readLogs,
  workspaceStatus,
  type WorkspaceStatus,
} from '../../index.js';
import {
  parseArgs,
  parseDuration,
  parseKeyValues,
  parsePositiveInt,
  UsageError,
  type FlagSpecs,
} from '../args.js';
import { paint, table, writeJson, type Output } from '../output.js';
import { IMAGE_FLAGS, imageOptionsFrom } from './image-flags.js';
import { FILE_FLAG, specFromFlags } from './spec-file.js';
import { NETWORK_FLAGS, networkOptionsFrom, networkSummary } from './network.js';

export interface CommandSpec {
  summary: string;
  usage: string;
  flags: FlagSpecs;
  main: (argv: string[], out: Output) => Promise<number>;
}

const STATE_DIR: FlagSpecs = {
  json: { type: 'boolean', help: 'Print JSON' },
  'state-dir': { type: 'string', arg: 'DIR', help: 'State directory (default ~/.microagent)' },
};

function stateDir(flags: Record<string, unknown>): { stateDir?: string } {
  return flags['state-dir'] ? { stateDir: flags['state-dir'] as string } : {};
}

function json(out: Output, flags: Record<string, unknown>): boolean {
  return out.json || flags.json === true;
}

function oneName(positionals: string[], usage: string): string {
  if (positionals.length === 0)
    throw new UsageError('missing the workspace NAME', `Usage: ${usage}`);
  if (positionals.length > 1)
    throw new UsageError(`unexpected argument "${positionals[1]}"`, `Usage: ${usage}`);
  return positionals[0] as string;
}

const mib = (b: number): string => `${Math.round(b / (1024 * 1024))} MiB`;

/** "1024 MiB (guest: 20 MiB used, 950 MiB free; host: 3 MiB)". */
function diskSummary(d: WorkspaceStatus['disk']): string {
  const guest = d.guest
    ? `guest: ${mib(d.guest.usedBytes)} used, ${mib(d.guest.availableBytes)} free; `
    : '';
  return `${mib(d.sizeBytes)} (${guest}host: ${mib(d.hostBytes)})`;
}

function colourState(out: Output, state: string): string {
  const code =
    state === 'running'
      ? 32
      : state === 'failed' || state === 'corrupt'
        ? 31
        : state === 'paused'
          ? 33
          : 0;
  return code ? paint(out.stdout, code, state) : state;
}

function recordResult(
  out: Output,
  flags: Record<string, unknown>,
  record: WorkspaceRecord,
  verb: string,
): number {
  if (json(out, flags))
    writeJson(out, {
      name: record.name,
      state: record.state,
      ...(record.stateDetail ? { stateDetail: record.stateDetail } : {}),
    });
  else out.stdout.write(`${record.name} ${verb} (${colourState(out, record.state)})\n`);
  return 0;
}

const CREATE_USAGE =
  'microagent create NAME [--image REF] [--profile P|--cpus N|--memory SIZE] [-e K=V] [--setup CMD] [--output NAME=PATH] [--label K=V]';
const CREATE_FLAGS: FlagSpecs = {
  ...STATE_DIR,
  image: { type: 'string', arg: 'REF', help: 'Image (default: the embedded default image)' },
  profile: { type: 'string', arg: 'NAME', help: 'tiny, small (default), medium, large' },
  cpus: { type: 'string', arg: 'N', help: 'Virtual CPUs (overrides the profile)' },
  memory: { type: 'string', arg: 'SIZE', help: 'Memory, e.g. 512M or 2G (overrides the profile)' },
  'disk-size': {
    type: 'string',
    arg: 'SIZE',
    help: "Root disk size, e.g. 4G, pinned (default: the profile's, never below the image's)",
  },
  env: {
    type: 'strings',
    short: 'e',
    arg: 'KEY=VALUE',
    help: 'Environment for every command in the workspace',
  },
  setup: { type: 'strings', arg: 'CMD', help: 'Shell command run once at create (repeatable)' },
  output: { type: 'strings', arg: 'NAME=PATH', help: 'Declare an output file (see artifacts)' },
  label: { type: 'strings', arg: 'KEY=VALUE', help: 'Caller label recorded with the workspace' },
  accel: { type: 'string', arg: 'auto|kvm|tcg', help: 'Accelerator for the setup boot' },
  ...FILE_FLAG,
  ...IMAGE_FLAGS,
  ...NETWORK_FLAGS,
};

async function createMain(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, CREATE_FLAGS, {}, CREATE_USAGE);
  const spec = await specFromFlags(flags);
  if (spec) {
    if (positionals.length > 1)
      throw new UsageError(`unexpected argument "${positionals[1]}"`, `Usage: ${CREATE_USAGE}`);
    const record = await createWorkspace(
      specToCreateOptions(spec, {
        ...(positionals[0] !== undefined ? { name: positionals[0] } : {}),
        ...stateDir(flags),
        ...(flags.accel ? { accel: accelFlag(flags.accel as string) } : {}),
        imageOptions: imageOptionsFrom(
          flags,
          (out.stderr as NodeJS.WriteStream).isTTY && !json(out, flags) ? out.stderr : undefined,
        ),
        ...(json(out, flags)
          ? {}
          : { onSetupOutput: (_s: string, c: Buffer) => out.stderr.write(c) }),
      }),
    );
    return recordResult(out, flags, record, 'created');
  }
  const name = oneName(positionals, CREATE_USAGE);
  const record = await createWorkspace({
    name,
    ...stateDir(flags),
    ...(flags.image ? { image: flags.image as string } : {}),
    ...(flags.profile ? { profile: flags.profile as string } : {}),
    ...(flags.cpus ? { cpus: parsePositiveInt(flags.cpus as string, 'cpus', CPUS.max) } : {}),
    ...(flags.memory ? { memoryMiB: parseMemory(flags.memory as string) } : {}),
    ...(flags['disk-size'] ? { diskMiB: parseDiskSize(flags['disk-size'] as string) } : {}),
    ...(flags.env ? { env: parseKeyValues(flags.env as string[], 'env') } : {}),
    ...(flags.label ? { labels: parseKeyValues(flags.label as string[], 'label') } : {}),
    ...(flags.output ? { outputs: parseKeyValues(flags.output as string[], 'output') } : {}),
    ...(flags.setup ? { setup: flags.setup as string[] } : {}),
    ...(flags.accel ? { accel: accelFlag(flags.accel as string) } : {}),
    ...networkOptionsFrom(flags),
    imageOptions: imageOptionsFrom(
      flags,
      (out.stderr as NodeJS.WriteStream).isTTY && !json(out, flags) ? out.stderr : undefined,
    ),
    ...(json(out, flags) ? {} : { onSetupOutput: (_s, c) => out.stderr.write(c) }),
  });
  return recordResult(out, flags, record, 'created');
}

function accelFlag(value: string): 'auto' | 'kvm' | 'tcg' {
  if (value !== 'auto' && value !== 'kvm' && value !== 'tcg') {
    throw new UsageError(`--accel must be auto, kvm or tcg (got "${value}")`);
  }
  return value;
}

const START_USAGE = 'microagent start NAME [--wait] [--boot-timeout DURATION]';
const START_FLAGS: FlagSpecs = {
  ...STATE_DIR,
  wait: { type: 'boolean', help: 'After boot, wait until the workspace stops' },
  accel: { type: 'string', arg: 'auto|kvm|tcg', help: 'Accelerator (default auto)' },
  'boot-timeout': {
    type: 'string',
    arg: 'DURATION',
    help: 'Give up when not ready in time (default 60s)',
  },
};

async function startMain(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, START_FLAGS, {}, START_USAGE);
  const name = oneName(positionals, START_USAGE);
  const record = await startWorkspace({
    name,
    ...stateDir(flags),
    ...(flags.accel ? { accel: accelFlag(flags.accel as string) } : {}),
    ...(flags['boot-timeout']
      ? { bootTimeoutMs: parseDuration(flags['boot-timeout'] as string, 'boot-timeout') }
      : {}),
  });
  if (flags.wait !== true) return recordResult(out, flags, record, 'started');
  if (!json(out, flags)) out.stderr.write(`${name} started; waiting for it to stop\n`);
  const final = await waitWorkspace({ name, ...stateDir(flags) });
  recordResult(out, flags, final, 'stopped');
  return final.state === 'failed' ? 1 : 0;
}

const EXEC_USAGE =
  'microagent exec NAME [--stream] [--stdin] [-e K=V] [--cwd PATH] [--user USER] [--timeout DURATION] -- ARGV...';
const EXEC_FLAGS: FlagSpecs = {
  ...STATE_DIR,
  stream: { type: 'boolean', help: 'Stream stdout/stderr as they come (default: print when done)' },
  stdin: { type: 'boolean', short: 'i', help: "Pass this process's stdin to the command" },
  env: { type: 'strings', short: 'e', arg: 'KEY=VALUE', help: 'Environment variable (repeatable)' },
  cwd: { type: 'string', arg: 'PATH', help: 'Working directory in the guest' },
  user: {
    type: 'string',
    arg: 'USER',
    help: "Run as USER[:GROUP] (name or id; default: the image's User, else root)",
  },
  timeout: { type: 'string', arg: 'DURATION', help: 'Kill the command after this long; exit 124' },
};

async function execMain(argv: string[], out: Output): Promise<number> {
  const parsed = parseArgs(argv, EXEC_FLAGS, { stopAfterPositionals: 2 }, EXEC_USAGE);
  const { flags } = parsed;
  let command = parsed.rest;
  let positionals = parsed.positionals;
  if (command === undefined) {
    // `exec NAME CMD ARGS` without `--`: everything after NAME is the command.
    command = positionals.slice(1);
    positionals = positionals.slice(0, 1);
  }
  const name = oneName(positionals, EXEC_USAGE);
  if (command.length === 0)
    throw new UsageError('missing the command to run', `Usage: ${EXEC_USAGE}`);
  const asJson = json(out, flags);
  const stream = flags.stream === true && !asJson;
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const exit = await execWorkspace({
      name,
      ...stateDir(flags),
      argv: command,
      ...(flags.env ? { env: parseKeyValues(flags.env as string[], 'env') } : {}),
      ...(flags.cwd ? { cwd: flags.cwd as string } : {}),
      ...(flags.user ? { user: flags.user as string } : {}),
      ...(flags.timeout ? { timeoutMs: parseDuration(flags.timeout as string, 'timeout') } : {}),
      ...(flags.stdin === true ? { stdin: process.stdin } : {}),
      onStdout: stream ? (c) => void out.stdout.write(c) : (c) => void stdout.push(c),
      onStderr: stream ? (c) => void out.stderr.write(c) : (c) => void stderr.push(c),
      signal: abort.signal,
    });
    if (asJson) {
      writeJson(out, execDocument(name, exit, Buffer.concat(stdout), Buffer.concat(stderr)));
    } else if (!stream) {
      out.stdout.write(Buffer.concat(stdout));
      out.stderr.write(Buffer.concat(stderr));
    }
    if (!asJson && exit.error) out.stderr.write(`microagent: ${exit.error.message}\n`);
    return exit.exitCode;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

const STATUS_USAGE = 'microagent status NAME';
async function statusMain(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, STATE_DIR, {}, STATUS_USAGE);
  const status = await workspaceStatus({
    name: oneName(positionals, STATUS_USAGE),
    ...stateDir(flags),
  });
  if (json(out, flags)) {
    writeJson(out, status);
    return 0;
  }
  const r = status.readiness;
  const yes = (s: { ready: boolean }): string => (s.ready ? 'yes' : 'no');
  out.stdout.write(
    table([
      ['name', status.name],
      [
        'state',
        colourState(out, status.state) + (status.stateDetail ? ` (${status.stateDetail})` : ''),
      ],
      ['image', `${status.image.ref} (${status.image.key.slice(0, 12)})`],
      ['kernel', status.kernel.version],
      [
        'resources',
        `${status.resources.profile}: ${status.resources.cpus} CPU, ${status.resources.memoryMiB} MiB`,
      ],
      ['disk', diskSummary(status.disk)],
      [
        'network',
        networkSummary(status.network) +
          (status.vm?.network?.down !== undefined ? `; DOWN: ${status.vm.network.down}` : ''),
      ],
      ...(status.vm ? [['vm', `pid ${status.vm.qemuPid ?? '?'} (${status.vm.accel})`]] : []),
      [
        'ready',
        `guest ${yes(r.guestReady)}, exec ${yes(r.execReady)}, shell ${yes(r.shellReady)}, result ${yes(r.resultReady)}`,
      ],
      [
        'verified',
        status.verification.ok
          ? 'yes'
          : `NO: ${status.verification.divergence.map((d) => d.artifact).join(', ')}`,
      ],
      [
        'labels',
        Object.entries(status.identity.labels)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ') || '-',
      ],
    ]) + '\n',
  );
  return 0;
}

const LIST_USAGE = 'microagent list';
function listCommand(liveOnly: boolean): CommandSpec['main'] {
  return async (argv, out) => {
    const { flags } = parseArgs(argv, STATE_DIR, {}, liveOnly ? 'microagent ps' : LIST_USAGE);
    const rows = await listWorkspaceSummaries({ ...stateDir(flags), liveOnly });
    if (json(out, flags)) {
      writeJson(out, { workspaces: rows });
    } else if (rows.length === 0) {
      out.stdout.write('No workspaces.\n');
    } else {
      out.stdout.write(
        table([
          ['NAME', 'STATE', 'PROFILE', 'IMAGE', 'UPDATED'],
          ...rows.map((w) =>
            w.state === 'corrupt'
              ? [w.name, colourState(out, w.state), '-', '-', `${w.error.code}: ${w.error.message}`]
              : [w.name, colourState(out, w.state), w.profile, w.image, w.updatedAt],
          ),
        ]) + '\n',
      );
    }
    return 0;
  };
}

function simple(
  verb: string,
  done: string,
  op: (o: { name: string; stateDir?: string }) => Promise<WorkspaceRecord>,
): CommandSpec['main'] {
  const usage = `microagent ${verb} NAME`;
  return async (argv, out) => {
    const { flags, positionals } = parseArgs(argv, STATE_DIR, {}, usage);
    const record = await op({ name: oneName(positionals, usage), ...stateDir(flags) });
    return recordResult(out, flags, record, done);
  };
}

const DELETE_USAGE = 'microagent delete NAME...';
async function deleteMain(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, STATE_DIR, {}, DELETE_USAGE);
  if (positionals.length === 0)
    throw new UsageError('missing the workspace NAME', `Usage: ${DELETE_USAGE}`);
  const deleted: string[] = [];
  for (const name of positionals) {
    await deleteWorkspace({ name, ...stateDir(flags) });
    deleted.push(name);
    if (!json(out, flags)) out.stdout.write(`${name} deleted\n`);
  }
  if (json(out, flags)) writeJson(out, { deleted });
  return 0;
}

const WAIT_USAGE = 'microagent wait NAME [--timeout DURATION]';
const WAIT_FLAGS: FlagSpecs = {
  ...STATE_DIR,
  timeout: { type: 'string', arg: 'DURATION', help: 'Give up after this long (exit 75)' },
};
async function waitMain(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, WAIT_FLAGS, {}, WAIT_USAGE);
  const record = await waitWorkspace({
    name: oneName(positionals, WAIT_USAGE),
    ...stateDir(flags),
    ...(flags.timeout ? { timeoutMs: parseDuration(flags.timeout as string, 'timeout') } : {}),
  });
  if (json(out, flags))
    writeJson(out, { name: record.name, state: record.state, timedOut: record.timedOut === true });
  else
    out.stdout.write(
      `${record.name} ${colourState(out, record.state)}${record.timedOut ? ' (timed out waiting)' : ''}\n`,
    );
  if (record.timedOut) return 75;
  return record.state === 'failed' ? 1 : 0;
}

const FOLLOW: FlagSpecs = {
  ...STATE_DIR,
  follow: { type: 'boolean', short: 'f', help: 'Keep printing as it grows' },
};

async function logsMain(argv: string[], out: Output): Promise<number> {
  const usage = 'microagent logs NAME [--follow]';
  const { flags, positionals } = parseArgs(argv, FOLLOW, {}, usage);
  const name = oneName(positionals, usage);
  if (flags.follow === true) {
    if (json(out, flags)) throw new UsageError('--follow cannot be combined with --json');
    const abort = new AbortController();
    process.once('SIGINT', () => abort.abort());
    await followLogs({
      name,
      ...stateDir(flags),
      onData: (c) => out.stdout.write(c),
      signal: abort.signal,
    });
    return 0;
  }
  const logs = await readLogs({ name, ...stateDir(flags) });
  if (json(out, flags)) writeJson(out, { logs: logs.toString('utf8') });
  else out.stdout.write(logs);
  return 0;
}

async function eventsMain(argv: string[], out: Output): Promise<number> {
  const usage = 'microagent events NAME [--follow]';
  const { flags, positionals } = parseArgs(argv, FOLLOW, {}, usage);
  const name = oneName(positionals, usage);
  const line = (e: { at: string; state: string; detail?: string }): string =>
    `${e.at}  ${e.state.padEnd(8)}  ${e.detail ?? ''}`.trimEnd() + '\n';
  if (flags.follow === true) {
    if (json(out, flags)) throw new UsageError('--follow cannot be combined with --json');
    const abort = new AbortController();
    process.once('SIGINT', () => abort.abort());
    await followEvents({
      name,
      ...stateDir(flags),
      onEvent: (e) => out.stdout.write(line(e)),
      signal: abort.signal,
    });
    return 0;
  }
  const events = await readEvents({ name, ...stateDir(flags) });
  if (json(out, flags)) writeJson(out, { events });
  else for (const e of events) out.stdout.write(line(e));
  return 0;
}

async function resultMain(argv: string[], out: Output): Promise<number> {
  const usage = 'microagent result NAME';
  const { flags, positionals } = parseArgs(argv, STATE_DIR, {}, usage);
  const result = await readWorkspaceResult({
    name: oneName(positionals, usage),
    ...stateDir(flags),
  });
  writeJson(out, result);
  return 0;
}

export const WORKSPACE_COMMANDS: Record<string, CommandSpec> = {
  create: {
    summary: 'Create a persistent workspace (prepared, not running)',
    usage: CREATE_USAGE,
    flags: CREATE_FLAGS,
    main: createMain,
  },
  start: {
    summary: 'Boot a workspace from its disk',
    usage: START_USAGE,
    flags: START_FLAGS,
    main: startMain,
  },
  exec: {
    summary: 'Run a command in a running workspace',
    usage: EXEC_USAGE,
    flags: EXEC_FLAGS,
    main: execMain,
  },
  status: {
    summary: 'Show one workspace: state, readiness, verification',
    usage: STATUS_USAGE,
    flags: STATE_DIR,
    main: statusMain,
  },
  list: {
    summary: 'List workspaces',
    usage: LIST_USAGE,
    flags: STATE_DIR,
    main: listCommand(false),
  },
  ps: {
    summary: 'List live workspaces',
    usage: 'microagent ps',
    flags: STATE_DIR,
    main: listCommand(true),
  },
  halt: {
    summary: 'Power off cleanly, keeping the disk',
    usage: 'microagent halt NAME',
    flags: STATE_DIR,
    main: simple('halt', 'halted', haltWorkspace),
  },
  stop: {
    summary: 'Ask the guest to stop (5 s, no escalation)',
    usage: 'microagent stop NAME',
    flags: STATE_DIR,
    main: simple('stop', 'stopped', stopWorkspace),
  },
  kill: {
    summary: 'Hard stop of the VM',
    usage: 'microagent kill NAME',
    flags: STATE_DIR,
    main: simple('kill', 'killed', killWorkspace),
  },
  pause: {
    summary: 'Freeze the vCPUs',
    usage: 'microagent pause NAME',
    flags: STATE_DIR,
    main: simple('pause', 'paused', pauseWorkspace),
  },
  resume: {
    summary: 'Thaw a paused workspace',
    usage: 'microagent resume NAME',
    flags: STATE_DIR,
    main: simple('resume', 'resumed', resumeWorkspace),
  },
  delete: {
    summary: 'Remove workspaces that are not running',
    usage: DELETE_USAGE,
    flags: STATE_DIR,
    main: deleteMain,
  },
  wait: {
    summary: 'Wait until a workspace stops',
    usage: WAIT_USAGE,
    flags: WAIT_FLAGS,
    main: waitMain,
  },
  logs: {
    summary: 'Serial console of the current or last boot',
    usage: 'microagent logs NAME [--follow]',
    flags: FOLLOW,
    main: logsMain,
  },
  events: {
    summary: 'State changes of a workspace',
    usage: 'microagent events NAME [--follow]',
    flags: FOLLOW,
    main: eventsMain,
  },
  result: {
    summary: 'The recorded result of the last run',
    usage: 'microagent result NAME',
    flags: STATE_DIR,
    main: resultMain,
  },
};
