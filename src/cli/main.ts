#!/usr/bin/env node
/**
 * The microagent CLI: parses arguments, calls the library, renders results.
 * It holds no logic of its own.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suggest, UsageError, type FlagSpecs } from './args.js';
import { EXIT, reportError, writeJson, type Output } from './output.js';
import { PACKAGE_ROOT } from '../paths.js';
import { runMain, RUN_FLAGS, RUN_USAGE } from './commands/run.js';
import { kernelMain, KERNEL_USAGE } from './commands/kernel.js';
import { doctorMain, DOCTOR_FLAGS, DOCTOR_USAGE } from './commands/doctor.js';
import { ALIASES, WORKSPACE_COMMANDS } from './commands/workspace.js';
import { IMAGE_COMMAND } from './commands/image.js';
import { NETWORK_COMMAND } from './commands/network.js';
import { FILE_COMMANDS } from './commands/files.js';
import { ROOTFS_COMMAND } from './commands/rootfs.js';
import { SERVE_COMMAND } from './commands/serve.js';

interface Command {
  summary: string;
  usage: string;
  flags?: FlagSpecs;
  main: (argv: string[], out: Output) => Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  run: {
    summary: 'Boot a workspace, run one command in it, tear it down',
    usage: RUN_USAGE,
    flags: RUN_FLAGS,
    main: runMain,
  },
  ...WORKSPACE_COMMANDS,
  ...FILE_COMMANDS,
  image: IMAGE_COMMAND,
  network: NETWORK_COMMAND,
  rootfs: ROOTFS_COMMAND,
  serve: SERVE_COMMAND,
  kernel: {
    summary: 'Install, list and verify guest kernels',
    usage: KERNEL_USAGE,
    main: kernelMain,
  },
  doctor: {
    summary: 'Check that this host can boot workspaces',
    usage: DOCTOR_USAGE,
    flags: DOCTOR_FLAGS,
    main: doctorMain,
  },
  version: {
    summary: 'Print the version',
    usage: 'microagent version',
    main: async (_argv, out) => {
      if (out.json) writeJson(out, { version: version() });
      else out.stdout.write(`microagent ${version()}\n`);
      return EXIT.OK;
    },
  },
  help: {
    summary: 'Show help for a command',
    usage: 'microagent help [COMMAND]',
    main: async (argv, out) => {
      if (out.json) writeJson(out, { help: helpText(argv[0]) });
      else out.stdout.write(helpText(argv[0]));
      return EXIT.OK;
    },
  },
};

function version(): string {
  const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

export function helpText(command?: string): string {
  if (command !== undefined) {
    const cmd = COMMANDS[ALIASES[command] ?? command];
    if (!cmd)
      throw new UsageError(
        `unknown command "${command}"${suggest(command, Object.keys(COMMANDS), '')}`,
      );
    let text = `${cmd.summary}\n\nUsage: ${cmd.usage}\n`;
    if (cmd.flags) {
      text += '\nFlags:\n';
      for (const [name, spec] of Object.entries(cmd.flags)) {
        const left = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.arg ? ` ${spec.arg}` : ''}`;
        text += `  ${left.padEnd(34)} ${spec.help}\n`;
      }
    }
    return text;
  }
  let text =
    'microagent: run AI-agent workspaces in Linux microVMs\n\nUsage: microagent COMMAND [flags]\n\nCommands:\n';
  for (const [name, cmd] of Object.entries(COMMANDS)) {
    text += `  ${name.padEnd(10)} ${cmd.summary}\n`;
  }
  text += '\nRun `microagent help COMMAND` for the flags of a command.\n';
  return text;
}

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
        out.stdout.write(helpText());
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
      out.stderr.write(helpText());
      return EXIT.USAGE;
    }
    const command = COMMANDS[name];
    if (!command) {
      throw new UsageError(
        `unknown command "${name}"${suggest(name, Object.keys(COMMANDS), '')}`,
        'Run `microagent help` for the list of commands.',
      );
    }
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
        out.stdout.write(helpText(name));
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

const code = await main(process.argv.slice(2));
process.exitCode = code;
