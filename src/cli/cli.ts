/**
 * The microagent CLI: parses arguments, calls the library, renders results.
 * It holds no logic of its own. Its entries are main.ts (the ES modules in
 * dist) and snapshot.ts (the start-up snapshot bin/microagent prefers).
 */
import { suggest, UsageError, type FlagSpecs } from './args.js';
import { EXIT, reportError, type Output } from './output.js';
import { ALIASES, COMMANDS, helpText, version } from './registry.js';

/** How long the CLI lingers after its command for handles left open. */
const EXIT_GRACE_MS = 2000;

export async function main(argv: string[]): Promise<number> {
  const out: Output = { json: false, stdout: process.stdout, stderr: process.stderr };
  try {
    let mode = modeFromEnv();
    // Global flags before the command.
    let i = 0;
    while (i < argv.length && (argv[i] ?? '').startsWith('-')) {
      const flag = argv[i] as string;
      const taken = takeMode(argv, i);
      if (taken) {
        mode = taken.mode;
        i += taken.consumed;
        continue;
      }
      if (flag === '--json') mode = 'ax';
      else if (flag === '--help' || flag === '-h') {
        out.stdout.write(await helpText());
        return EXIT.OK;
      } else if (flag === '--version' || flag === '-v') {
        out.stdout.write(`microagent ${version()}\n`);
        return EXIT.OK;
      } else {
        throw new UsageError(`unknown global flag ${flag}`, 'Run `microagent help`.');
      }
      i++;
    }
    out.json = mode === 'ax';
    const typed = argv[i];
    const name = typed !== undefined ? (ALIASES[typed] ?? typed) : undefined;
    if (name === undefined) {
      out.stderr.write(await helpText());
      return EXIT.USAGE;
    }
    const load = COMMANDS[name];
    if (!load) {
      throw new UsageError(
        `unknown command "${name}"${suggest(name, Object.keys(COMMANDS), '')}`,
        'Run `microagent help` for the list of commands.',
      );
    }
    const command = await load();
    let rest = argv.slice(i + 1);
    // Only the arguments before the guest command (run, exec) or before `--`
    // are microagent's: --help, --json and --mode there are ours.
    const guestArgvAt = name === 'run' ? 1 : name === 'exec' ? 2 : undefined;
    let ours = ownArgCount(rest, command.flags ?? {}, guestArgvAt);
    for (let k = 0; k < ours; k++) {
      const taken = takeMode(rest, k);
      if (taken) {
        mode = taken.mode;
        rest = [...rest.slice(0, k), ...rest.slice(k + taken.consumed)];
        ours -= taken.consumed;
        k--;
        continue;
      }
      const a = rest[k] as string;
      if (isHelp(a)) {
        out.stdout.write(await helpText(name));
        return EXIT.OK;
      }
      if (a === '--json') mode = 'ax';
    }
    out.json = mode === 'ax';
    return await command.main(rest, out);
  } catch (err) {
    return reportError(out, err);
  }
}

type Mode = 'ax' | 'ux';

function modeFromEnv(): Mode {
  const env = process.env.MICROAGENT_MODE;
  if (env === undefined || env === '') return 'ux';
  if (env === 'ax' || env === 'ux') return env;
  throw new UsageError(`MICROAGENT_MODE must be ax or ux (got "${env}")`);
}

/** `--mode ax|ux` or `--mode=ax|ux` at args[i]. */
function takeMode(args: string[], i: number): { mode: Mode; consumed: number } | undefined {
  const a = args[i] as string;
  let value: string | undefined;
  let consumed = 1;
  if (a === '--mode') {
    value = args[i + 1];
    consumed = 2;
  } else if (a.startsWith('--mode=')) {
    value = a.slice('--mode='.length);
  } else {
    return undefined;
  }
  if (value !== 'ax' && value !== 'ux') {
    throw new UsageError(`--mode must be ax or ux (got "${value ?? ''}")`);
  }
  return { mode: value, consumed };
}

/**
 * How many leading arguments are microagent's own: up to `--`, and for run
 * and exec up to where the guest command starts (after `positionalsBefore`
 * positionals, skipping the values of flags that take one).
 */
function ownArgCount(args: string[], flags: FlagSpecs, positionalsBefore?: number): number {
  let seen = 0;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (a === '--') return i;
    if (!a.startsWith('-') || a === '-') {
      if (positionalsBefore !== undefined && ++seen >= positionalsBefore) return i;
      continue;
    }
    const spec = a.startsWith('--') && !a.includes('=') ? flags[a.slice(2)] : undefined;
    if (spec && spec.type !== 'boolean') i++; // skip the flag's value
    if (a === '--mode') i++;
  }
  return args.length;
}

function isHelp(a: string): boolean {
  return a === '--help' || a === '-h';
}

/** Runs the command in argv and sets the process's exit code. */
export async function runCli(argv: string[]): Promise<void> {
  const code = await main(argv);
  process.exitCode = code;
  // The command is done and its output written (stdout and stderr are
  // synchronous on Linux). Something left open by mistake (a child process
  // or socket of a run's in-process monitor) must not keep the CLI from
  // exiting.
  setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
}
