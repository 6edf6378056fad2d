/**
 * From a spec (and command-line flags) to the options createWorkspace and
 * runCommand take. Flags win over the file: a scalar flag replaces the
 * field, a list flag (--setup, --publish) replaces the list, and map flags
 * (--env, --label, --output) override the file's entries key by key.
 */
import { MicroagentError } from '../errors.js';
import type { CreateOptions } from '../workspace/lifecycle.js';
import { parseDiskSize, parseMemory } from '../workspace/profiles.js';
import type { RunOptions } from '../workspace/run.js';
import { bestIssue, describeIssue, formatPath, SpecSchema, type Spec } from './spec.js';

/** Flag values as the CLI parses them (names as the flags). */
export interface SpecFlags {
  image?: string;
  name?: string;
  profile?: string;
  cpus?: string | number;
  memory?: string;
  diskSize?: string;
  /** KEY=VALUE */
  env?: string[];
  setup?: string[];
  /** [HOST_IP:]HOST_PORT:GUEST_PORT[/proto] */
  publish?: string[];
  /** user | isolated */
  network?: string;
  /** --allow-host-loopback: sets network.allowHostLoopback (a flag can only turn it on). */
  allowHostLoopback?: boolean;
  /** KEY=VALUE */
  label?: string[];
  /** NAME=/guest/path */
  output?: string[];
}

function keyValues(values: readonly string[], flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of values) {
    const eq = item.indexOf('=');
    if (eq <= 0) {
      throw new MicroagentError('INVALID_ARGUMENT', `--${flag} takes KEY=VALUE (got "${item}")`);
    }
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/**
 * Merges parsed CLI flags over a spec (flags win) and validates the result
 * as a spec, so a bad flag value is reported like a bad file value but
 * named by its flag. Throws INVALID_ARGUMENT.
 */
export function mergeSpecWithFlags(spec: Spec, flags: SpecFlags): Spec {
  const merged: Record<string, unknown> = { ...spec };
  if (flags.image !== undefined) merged.image = flags.image;
  if (flags.name !== undefined) merged.name = flags.name;
  if (flags.profile !== undefined) merged.profile = flags.profile;
  if (flags.cpus !== undefined) {
    const text = String(flags.cpus);
    merged.cpus = /^\d+$/.test(text) ? Number(text) : text;
  }
  if (flags.memory !== undefined) merged.memory = flags.memory;
  if (flags.diskSize !== undefined) merged.diskSize = flags.diskSize;
  if (flags.env !== undefined) merged.env = { ...spec.env, ...keyValues(flags.env, 'env') };
  if (flags.label !== undefined)
    merged.labels = { ...spec.labels, ...keyValues(flags.label, 'label') };
  if (flags.output !== undefined) {
    merged.outputs = { ...spec.outputs, ...keyValues(flags.output, 'output') };
  }
  if (flags.setup !== undefined) merged.setup = flags.setup;
  if (
    flags.network !== undefined ||
    flags.publish !== undefined ||
    flags.allowHostLoopback !== undefined
  ) {
    merged.network = {
      ...spec.network,
      ...(flags.network !== undefined ? { mode: flags.network } : {}),
      ...(flags.publish !== undefined ? { publish: flags.publish } : {}),
      ...(flags.allowHostLoopback !== undefined
        ? { allowHostLoopback: flags.allowHostLoopback }
        : {}),
    };
  }
  const parsed = SpecSchema.safeParse(merged);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const issue = first ? bestIssue(first) : undefined;
    const field = String(issue?.path[0] ?? '');
    const flag = FLAG_OF[field] ?? field;
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `--${flag}: ${issue ? describeIssue(issue) : 'invalid value'}${issue && issue.path.length > 1 ? ` (${formatPath(issue.path)})` : ''}`,
      { data: { flag, issues: parsed.error.issues } },
    );
  }
  const { disks: _d, volumes: _v, ports: _p, ...result } = parsed.data;
  return result;
}

const FLAG_OF: Record<string, string> = {
  labels: 'label',
  outputs: 'output',
  network: 'network',
  diskSize: 'disk-size',
};

function resources(spec: Spec): Pick<CreateOptions, 'profile' | 'cpus' | 'memoryMiB' | 'diskMiB'> {
  return {
    ...(spec.profile !== undefined ? { profile: spec.profile } : {}),
    ...(spec.cpus !== undefined ? { cpus: spec.cpus } : {}),
    ...(spec.memory !== undefined
      ? { memoryMiB: typeof spec.memory === 'number' ? spec.memory : parseMemory(spec.memory) }
      : {}),
    ...(spec.diskSize !== undefined
      ? {
          diskMiB: typeof spec.diskSize === 'number' ? spec.diskSize : parseDiskSize(spec.diskSize),
        }
      : {}),
  };
}

/**
 * Options for createWorkspace. `overrides` (e.g. stateDir, accel,
 * imageOptions) are applied last. The spec's `command` is not part of
 * create (a workspace has no entrypoint yet); use specToRunOptions for it.
 */
export function specToCreateOptions(
  spec: Spec,
  overrides: Partial<CreateOptions> = {},
): CreateOptions {
  const name = overrides.name ?? spec.name;
  if (name === undefined) {
    throw new MicroagentError(
      'SPEC_INVALID',
      'create needs a workspace name: set name: in the spec or pass NAME',
      {
        data: { path: 'name' },
      },
    );
  }
  return {
    name,
    ...(spec.image !== undefined ? { image: spec.image } : {}),
    ...resources(spec),
    ...(spec.env ? { env: spec.env } : {}),
    ...(spec.labels ? { labels: spec.labels } : {}),
    ...(spec.setup && spec.setup.length > 0 ? { setup: spec.setup } : {}),
    ...(spec.outputs ? { outputs: spec.outputs } : {}),
    ...(spec.network ? { network: spec.network } : {}),
    ...overrides,
  };
}

/** argv for the spec's command: a list as is, a string through `sh -c`. */
export function commandArgv(command: Spec['command']): string[] {
  if (command === undefined) return [];
  return typeof command === 'string' ? ['/bin/sh', '-c', command] : [...command];
}

/**
 * Options for runCommand. A command in overrides.argv (the CLI's trailing
 * arguments) replaces the spec's. Setup commands run first, in the same
 * guest, through `sh -c` (`set -e`: a failing one stops the run), then the
 * command is exec'd with its argv unchanged. `outputs` do not apply to run.
 */
export function specToRunOptions(spec: Spec, overrides: Partial<RunOptions> = {}): RunOptions {
  const command =
    overrides.argv !== undefined && overrides.argv.length > 0
      ? overrides.argv
      : commandArgv(spec.command);
  const setup = spec.setup ?? [];
  const argv =
    setup.length > 0 && command.length > 0
      ? ['/bin/sh', '-c', `set -e\n${setup.join('\n')}\nexec "$@"`, 'sh', ...command]
      : command;
  const { argv: _argv, ...rest } = overrides;
  return {
    argv,
    ...(spec.image !== undefined ? { image: spec.image } : {}),
    ...(spec.name !== undefined ? { name: spec.name } : {}),
    ...resources(spec),
    ...(spec.env ? { env: spec.env } : {}),
    ...(spec.labels ? { labels: spec.labels } : {}),
    ...(spec.network ? { network: spec.network } : {}),
    ...rest,
  };
}
