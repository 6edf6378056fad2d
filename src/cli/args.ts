/**
 * A small declarative argument parser. Each command declares its flags; the
 * parser accepts `--flag value`, `--flag=value`, `-f value`, repeatable
 * flags and `--`, and reports mistakes as UsageError (exit 2) with a hint.
 */
import { MicroagentError } from '../errors.js';

export type FlagType = 'boolean' | 'string' | 'strings';

export interface FlagSpec {
  type: FlagType;
  short?: string;
  /** Placeholder shown in help, e.g. "REF". */
  arg?: string;
  help: string;
}

export type FlagSpecs = Record<string, FlagSpec>;

export interface ParseOptions {
  /**
   * Stop treating arguments as flags once this many positionals have been
   * seen: everything after is positional (a guest command's own flags).
   * `run` uses 1 (the command starts at the first positional), `exec` 2.
   */
  stopAfterPositionals?: number;
}

export interface Parsed {
  flags: Record<string, boolean | string | string[] | undefined>;
  positionals: string[];
  /** Arguments after a literal `--` (undefined when there was none). */
  rest: string[] | undefined;
}

export class UsageError extends MicroagentError {
  override readonly name = 'UsageError';
  constructor(message: string, hint?: string) {
    super('USAGE', message, hint ? { remediation: hint } : {});
  }
}

export function parseArgs(
  argv: readonly string[],
  specs: FlagSpecs,
  options: ParseOptions = {},
  usage = '',
): Parsed {
  const flags: Parsed['flags'] = {};
  const positionals: string[] = [];
  let rest: string[] | undefined;
  const byShort = new Map<string, string>();
  for (const [name, spec] of Object.entries(specs)) {
    if (spec.short) byShort.set(spec.short, name);
  }
  const hint = usage ? `Usage: ${usage}` : undefined;

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      rest = argv.slice(i + 1);
      break;
    }
    if (
      options.stopAfterPositionals !== undefined &&
      positionals.length >= options.stopAfterPositionals
    ) {
      positionals.push(arg);
      continue;
    }
    if (arg.startsWith('-') && arg !== '-') {
      let name: string | undefined;
      let inline: string | undefined;
      if (arg.startsWith('--')) {
        const eq = arg.indexOf('=');
        name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
        inline = eq === -1 ? undefined : arg.slice(eq + 1);
        if (!(name in specs)) {
          throw new UsageError(`unknown flag --${name}${suggest(name, Object.keys(specs))}`, hint);
        }
      } else {
        const short = arg.slice(1, 2);
        name = byShort.get(short);
        if (name === undefined) throw new UsageError(`unknown flag ${arg}`, hint);
        if (arg.length > 2) inline = arg.slice(2).replace(/^=/, '');
      }
      const spec = specs[name] as FlagSpec;
      if (spec.type === 'boolean') {
        if (inline !== undefined) {
          if (inline !== 'true' && inline !== 'false') {
            throw new UsageError(`--${name} takes no value (got "${inline}")`, hint);
          }
          flags[name] = inline === 'true';
        } else {
          flags[name] = true;
        }
        continue;
      }
      let value = inline;
      if (value === undefined) {
        const next = argv[i + 1];
        if (next === undefined) {
          throw new UsageError(`--${name} needs a value${spec.arg ? ` (${spec.arg})` : ''}`, hint);
        }
        value = next;
        i++;
      }
      if (spec.type === 'strings') {
        const list = (flags[name] as string[] | undefined) ?? [];
        list.push(value);
        flags[name] = list;
      } else {
        if (flags[name] !== undefined) throw new UsageError(`--${name} given twice`, hint);
        flags[name] = value;
      }
      continue;
    }
    positionals.push(arg);
  }
  return { flags, positionals, rest };
}

/** " (did you mean --x?)" when a known name is within edit distance 2. */
export function suggest(name: string, known: readonly string[], prefix = '--'): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const d = editDistance(name, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  if (best === undefined) {
    const byPrefix = known.filter((k) => name.length >= 3 && k.startsWith(name));
    if (byPrefix.length === 1) best = byPrefix[0];
  }
  return best === undefined ? '' : ` (did you mean ${prefix}${best}?)`;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0] as number;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j] as number;
      dp[j] = Math.min(
        (dp[j] as number) + 1,
        (dp[j - 1] as number) + 1,
        prev + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      prev = tmp;
    }
  }
  return dp[b.length] as number;
}

/**
 * Parses a duration: "90" (seconds), "1500ms", "30s", "5m", "1h".
 * Returns milliseconds.
 */
export function parseDuration(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) {
    throw new UsageError(`--${flag} must be a duration such as 30s, 5m or 1500ms (got "${text}")`);
  }
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const factor = unit === 'ms' ? 1 : unit === 's' ? 1000 : unit === 'm' ? 60_000 : 3_600_000;
  const ms = Math.round(n * factor);
  if (ms <= 0) throw new UsageError(`--${flag} must be greater than zero`);
  return ms;
}

/** Parses KEY=VALUE pairs (for --env / --label). */
export function parseKeyValues(values: readonly string[], flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of values) {
    const eq = item.indexOf('=');
    if (eq <= 0) {
      throw new UsageError(`--${flag} takes KEY=VALUE (got "${item}")`);
    }
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

export function parsePositiveInt(text: string, flag: string, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > max) {
    throw new UsageError(`--${flag} must be a whole number from 1 to ${max} (got "${text}")`);
  }
  return Number(text);
}
