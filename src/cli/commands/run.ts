/**
 * `microagent run [--image REF] [--] CMD [ARGS...]`
 */
import {
  CPUS,
  runDocument,
  runCommand,
  type RunResult,
  specToRunOptions,
  parseDiskSize,
  parseMemory,
} from '../../index.js';
import {
  parseArgs,
  parseDuration,
  parseKeyValues,
  parsePositiveInt,
  UsageError,
  type FlagSpecs,
} from '../args.js';
import { paint, writeJson, type Output } from '../output.js';
import { IMAGE_FLAGS, imageOptionsFrom } from './image-flags.js';
import { FILE_FLAG, specFromFlags } from './spec-file.js';
import { NETWORK_FLAGS, networkOptionsFrom } from './network.js';

export const RUN_USAGE =
  'microagent run [flags] [--image REF] [--] CMD [ARGS...]  |  microagent run [flags] IMAGE [CMD [ARGS...]]';

export const RUN_FLAGS: FlagSpecs = {
  image: {
    type: 'string',
    arg: 'REF',
    help: 'Image to boot (default: the embedded default image)',
  },
  env: {
    type: 'strings',
    short: 'e',
    arg: 'KEY=VALUE',
    help: 'Environment variable for the command (repeatable)',
  },
  cwd: { type: 'string', arg: 'PATH', help: 'Working directory in the guest (default /)' },
  user: {
    type: 'string',
    arg: 'USER',
    help: "Run as USER[:GROUP] (name or id; default: the image's User, else root)",
  },
  timeout: {
    type: 'string',
    arg: 'DURATION',
    help: 'Kill the command after this long (e.g. 30s, 5m); exit 124',
  },
  keep: { type: 'boolean', help: 'Keep the workspace (halted) after the command' },
  name: {
    type: 'string',
    arg: 'NAME',
    help: 'Workspace name (default: run-<adjective>-<animal>-<hex>)',
  },
  cpus: { type: 'string', arg: 'N', help: 'Virtual CPUs (overrides the profile)' },
  memory: { type: 'string', arg: 'SIZE', help: 'Memory, e.g. 512M or 2G (overrides the profile)' },
  'disk-size': {
    type: 'string',
    arg: 'SIZE',
    help: "Root disk size, e.g. 4G, pinned (default: the profile's, never below the image's)",
  },
  profile: {
    type: 'string',
    arg: 'NAME',
    help: 'Resource profile: tiny, small (default), medium, large',
  },
  label: {
    type: 'strings',
    arg: 'KEY=VALUE',
    help: 'Caller label recorded with the workspace (repeatable)',
  },
  stdin: { type: 'boolean', short: 'i', help: "Pass this process's stdin to the command" },
  accel: {
    type: 'string',
    arg: 'auto|kvm|tcg',
    help: 'Accelerator (default auto; env MICROAGENT_ACCEL)',
  },
  'boot-timeout': {
    type: 'string',
    arg: 'DURATION',
    help: 'Give up when the guest is not ready after this long (default 60s)',
  },
  ...IMAGE_FLAGS,
  ...FILE_FLAG,
  ...NETWORK_FLAGS,
  json: { type: 'boolean', help: 'Print one JSON document with the result, stdout and stderr' },
  'state-dir': { type: 'string', arg: 'DIR', help: 'State directory (default ~/.microagent)' },
};

/** Cap on each stream collected for --json output. */
const JSON_OUTPUT_LIMIT = 16 * 1024 * 1024;

/**
 * Whether the first positional of `run` is an image reference rather than a
 * command: it has a registry, tag or digest (`/`, `:` or `@`) and is not a
 * path. A bare short name like `ubuntu` is taken as a command; use
 * `--image ubuntu` or `run ubuntu -- CMD` for it.
 */
export function looksLikeImage(arg: string | undefined): boolean {
  if (arg === undefined || arg.startsWith('/') || arg.startsWith('.')) return false;
  return /[/:@]/.test(arg);
}

export async function runMain(argv: string[], out: Output): Promise<number> {
  const parsed = parseArgs(argv, RUN_FLAGS, { stopAfterPositionals: 1 }, RUN_USAGE);
  const f = parsed.flags;
  // `run -- CMD`, `run [--image REF] CMD ARGS`, `run IMAGE -- CMD`.
  let image = f.image as string | undefined;
  let command: string[];
  if (parsed.rest !== undefined) {
    if (parsed.positionals.length > 1) {
      throw new UsageError('only one image may come before --', `Usage: ${RUN_USAGE}`);
    }
    if (parsed.positionals.length === 1) {
      if (image !== undefined) throw new UsageError('image given twice (--image and before --)');
      image = parsed.positionals[0];
    }
    command = parsed.rest;
  } else if (image === undefined && looksLikeImage(parsed.positionals[0])) {
    // `run IMAGE [CMD ARGS...]`, as with docker run.
    image = parsed.positionals[0];
    command = parsed.positionals.slice(1);
  } else {
    command = parsed.positionals;
  }
  if (command.length === 0 && image === undefined && f.file === undefined) {
    throw new UsageError('missing the command to run', `Usage: ${RUN_USAGE}`);
  }
  const json = out.json || f.json === true;
  const accel = ((f.accel as string | undefined) ?? process.env.MICROAGENT_ACCEL ?? 'auto') as
    'auto' | 'kvm' | 'tcg';
  if (accel !== 'auto' && accel !== 'kvm' && accel !== 'tcg') {
    throw new UsageError(`--accel must be auto, kvm or tcg (got "${accel}")`);
  }

  const stdoutChunks: Buffer[] = [];
  const stderrChunks: Buffer[] = [];
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const progress = !json && (out.stderr as NodeJS.WriteStream).isTTY === true;
  let result: RunResult;
  try {
    const spec = await specFromFlags(f, image);
    const common = {
      ...(f.cwd ? { cwd: f.cwd as string } : {}),
      ...(f.user ? { user: f.user as string } : {}),
      ...(f.timeout ? { timeoutMs: parseDuration(f.timeout as string, 'timeout') } : {}),
      ...(f['boot-timeout']
        ? { bootTimeoutMs: parseDuration(f['boot-timeout'] as string, 'boot-timeout') }
        : {}),
      keep: f.keep === true,
      ...(f['state-dir'] ? { stateDir: f['state-dir'] as string } : {}),
      accel,
      imageOptions: imageOptionsFrom(f, progress ? out.stderr : undefined),
      ...(f.stdin === true ? { stdin: process.stdin } : {}),
      ...(json ? { stdoutLimit: JSON_OUTPUT_LIMIT, stderrLimit: JSON_OUTPUT_LIMIT } : {}),
      onStdout: json
        ? (c: Buffer) => void stdoutChunks.push(c)
        : (c: Buffer) => void out.stdout.write(c),
      onStderr: json
        ? (c: Buffer) => void stderrChunks.push(c)
        : (c: Buffer) => void out.stderr.write(c),
      signal: abort.signal,
    };
    if (spec) {
      // The image (flag or before --) is merged into the spec above; what
      // is left on the command line is the command.
      const fromSpec = specToRunOptions(spec, { argv: command, ...common });
      if (fromSpec.argv.length === 0 && fromSpec.image === undefined) {
        throw new UsageError('the spec has no command and none was given', `Usage: ${RUN_USAGE}`);
      }
      result = await runCommand(fromSpec);
    } else
      result = await runCommand({
        argv: command,
        ...(image !== undefined ? { image } : {}),
        ...(f.env ? { env: parseKeyValues(f.env as string[], 'env') } : {}),
        ...(f.label ? { labels: parseKeyValues(f.label as string[], 'label') } : {}),
        ...(f.cwd ? { cwd: f.cwd as string } : {}),
        ...(f.user ? { user: f.user as string } : {}),
        ...(f.timeout ? { timeoutMs: parseDuration(f.timeout as string, 'timeout') } : {}),
        ...(f['boot-timeout']
          ? { bootTimeoutMs: parseDuration(f['boot-timeout'] as string, 'boot-timeout') }
          : {}),
        keep: f.keep === true,
        ...(f.name ? { name: f.name as string } : {}),
        ...(f.profile ? { profile: f.profile as string } : {}),
        ...(f.cpus ? { cpus: parsePositiveInt(f.cpus as string, 'cpus', CPUS.max) } : {}),
        ...(f.memory ? { memoryMiB: parseMemory(f.memory as string) } : {}),
        ...(f['disk-size'] ? { diskMiB: parseDiskSize(f['disk-size'] as string) } : {}),
        ...(f['state-dir'] ? { stateDir: f['state-dir'] as string } : {}),
        accel,
        ...networkOptionsFrom(f),
        imageOptions: imageOptionsFrom(f, progress ? out.stderr : undefined),
        ...(f.stdin === true ? { stdin: process.stdin } : {}),
        ...(json ? { stdoutLimit: JSON_OUTPUT_LIMIT, stderrLimit: JSON_OUTPUT_LIMIT } : {}),
        onStdout: json ? (c) => stdoutChunks.push(c) : (c) => out.stdout.write(c),
        onStderr: json ? (c) => stderrChunks.push(c) : (c) => out.stderr.write(c),
        signal: abort.signal,
        onProgress: progress
          ? (e) => {
              if (e.phase === 'boot') {
                out.stderr.write(paint(out.stderr, 2, `booting ${e.workspace} (${e.accel})\n`));
              }
            }
          : undefined,
      });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  if (json) {
    writeJson(out, runDocument(result, Buffer.concat(stdoutChunks), Buffer.concat(stderrChunks)));
  } else {
    if (result.error) out.stderr.write(`microagent: ${result.error.message}\n`);
    if (result.status === 'timed_out') out.stderr.write('microagent: command timed out\n');
    if (result.stdoutTruncated) out.stderr.write('microagent: stdout truncated\n');
    if (result.kept) out.stderr.write(`microagent: kept workspace ${result.workspace}\n`);
  }
  return result.exitCode;
}
