#!/usr/bin/env node
/**
 * The microagent CLI: parses arguments, calls the library, renders results.
 * It holds no logic of its own.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suggest, UsageError, type FlagSpecs } from './args.js';
import { EXIT, reportError, type Output } from './output.js';
import { PACKAGE_ROOT } from '../paths.js';
import { runMain, RUN_FLAGS, RUN_USAGE } from './commands/run.js';
import { kernelMain, KERNEL_USAGE } from './commands/kernel.js';
import { doctorMain, DOCTOR_FLAGS, DOCTOR_USAGE } from './commands/doctor.js';
import { ALIASES, WORKSPACE_COMMANDS } from './commands/workspace.js';
import { IMAGE_COMMAND } from './commands/image.js';

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
  image: IMAGE_COMMAND,
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
      out.stdout.write(`microagent ${version()}\n`);
      return EXIT.OK;
    },
  },
  help: {
    summary: 'Show help for a command',
    usage: 'microagent help [COMMAND]',
    main: async (argv, out) => {
      out.stdout.write(helpText(argv[0]));
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
    // Global flags before the command.
    let i = 0;
    while (i < argv.length && (argv[i] ?? '').startsWith('-')) {
      const flag = argv[i] as string;
      if (flag === '--json') out.json = true;
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
    const rest = argv.slice(i + 1);
    // --help anywhere before `--` prints help and never runs the command
    // (for run, only before the guest command starts).
    const dashdash = rest.indexOf('--');
    const scan = dashdash === -1 ? rest : rest.slice(0, dashdash);
    // For run and exec, a --help that belongs to the guest command is not ours.
    const guestArgvAt = name === 'run' ? 1 : name === 'exec' ? 2 : undefined;
    if (
      guestArgvAt === undefined
        ? scan.some(isHelp)
        : helpBeforeCommand(scan, command.flags ?? {}, guestArgvAt)
    ) {
      out.stdout.write(helpText(name));
      return EXIT.OK;
    }
    if (rest.includes('--json') && (dashdash === -1 || rest.indexOf('--json') < dashdash)) {
      out.json = true;
    }
    return await command.main(rest, out);
  } catch (err) {
    return reportError(out, err);
  }
}

function isHelp(a: string): boolean {
  return a === '--help' || a === '-h';
}

/** For run: a help flag counts only among the flags before the guest command. */
function helpBeforeCommand(args: string[], flags: FlagSpecs, positionalsBefore: number): boolean {
  let seen = 0;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (isHelp(a)) return true;
    if (!a.startsWith('-')) {
      if (++seen >= positionalsBefore) return false;
      continue;
    }
    const spec = a.startsWith('--') && !a.includes('=') ? flags[a.slice(2)] : undefined;
    if (spec && spec.type !== 'boolean') i++; // skip the flag's value
  }
  return false;
}

const code = await main(process.argv.slice(2));
process.exitCode = code;
