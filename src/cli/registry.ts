/**
 * The CLI's commands: their loaders, aliases and help text.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suggest, UsageError, type FlagSpecs } from './args.js';
import { EXIT, writeJson, type Output } from './output.js';
import { PACKAGE_ROOT } from '../paths.js';

export interface Command {
  summary: string;
  usage: string;
  flags?: FlagSpecs;
  main: (argv: string[], out: Output) => Promise<number>;
}

/**
 * Every command, in the order `help` lists them, loaded on use: a start-up
 * loads only the modules of the command it runs (66 for `run` instead of
 * every command's, ~170).
 */
export const COMMANDS: Record<string, () => Promise<Command>> = {
  run: async () => {
    const m = await import('./commands/run.js');
    return {
      summary: 'Boot a workspace, run one command in it, tear it down',
      usage: m.RUN_USAGE,
      flags: m.RUN_FLAGS,
      main: m.runMain,
    };
  },
  ...fromTable(
    () => import('./commands/workspace.js').then((m) => m.WORKSPACE_COMMANDS),
    ['create', 'start', 'exec', 'status', 'list', 'ps', 'halt', 'stop', 'kill', 'pause', 'resume'],
    ['delete', 'wait', 'logs', 'events', 'result'],
  ),
  ...fromTable(
    () => import('./commands/files.js').then((m) => m.FILE_COMMANDS),
    ['connect', 'cp', 'artifacts'],
  ),
  image: async () => (await import('./commands/image.js')).IMAGE_COMMAND,
  network: async () => (await import('./commands/network.js')).NETWORK_COMMAND,
  rootfs: async () => (await import('./commands/rootfs.js')).ROOTFS_COMMAND,
  serve: async () => (await import('./commands/serve.js')).SERVE_COMMAND,
  kernel: async () => {
    const m = await import('./commands/kernel.js');
    return {
      summary: 'Install, list and verify guest kernels',
      usage: m.KERNEL_USAGE,
      main: m.kernelMain,
    };
  },
  doctor: async () => {
    const m = await import('./commands/doctor.js');
    return {
      summary: 'Check that this host can boot workspaces',
      usage: m.DOCTOR_USAGE,
      flags: m.DOCTOR_FLAGS,
      main: m.doctorMain,
    };
  },
  version: async () => ({
    summary: 'Print the version',
    usage: 'microagent version',
    main: async (_argv, out) => {
      if (out.json) writeJson(out, { version: version() });
      else out.stdout.write(`microagent ${version()}\n`);
      return EXIT.OK;
    },
  }),
  help: async () => ({
    summary: 'Show help for a command',
    usage: 'microagent help [COMMAND]',
    main: async (argv, out) => {
      const text = await helpText(argv[0]);
      if (out.json) writeJson(out, { help: text });
      else out.stdout.write(text);
      return EXIT.OK;
    },
  }),
};

export const ALIASES: Record<string, string> = { inspect: 'status', ls: 'list', rm: 'delete' };

/** Loaders for the named commands of one module's table. */
function fromTable(
  load: () => Promise<Record<string, Command>>,
  ...names: string[][]
): Record<string, () => Promise<Command>> {
  const out: Record<string, () => Promise<Command>> = {};
  for (const name of names.flat()) {
    out[name] = async () => {
      const command = (await load())[name];
      if (!command) throw new Error(`internal: no command ${name} in its module`);
      return command;
    };
  }
  return out;
}

export function version(): string {
  const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

export async function helpText(command?: string): Promise<string> {
  if (command !== undefined) {
    const load = COMMANDS[ALIASES[command] ?? command];
    if (!load)
      throw new UsageError(
        `unknown command "${command}"${suggest(command, Object.keys(COMMANDS), '')}`,
      );
    const cmd = await load();
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
  for (const [name, load] of Object.entries(COMMANDS)) {
    text += `  ${name.padEnd(10)} ${(await load()).summary}\n`;
  }
  text += '\nRun `microagent help COMMAND` for the flags of a command.\n';
  return text;
}
