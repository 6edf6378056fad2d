/**
 * `microagent serve mcp [--state-dir DIR]`: the MCP server on stdin/stdout,
 * started by an MCP client (Claude Code, Codex, VS Code, Copilot CLI; see
 * docs/mcp.md). stdout carries MCP messages only; diagnostics go to stderr.
 */
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../index.js';
import { parseArgs, UsageError, type FlagSpecs } from '../args.js';
import { EXIT, type Output } from '../output.js';
import type { CommandSpec } from './workspace.js';

export const SERVE_USAGE = 'microagent serve mcp [--state-dir DIR]';

const SERVE_FLAGS: FlagSpecs = {
  'state-dir': {
    type: 'string',
    arg: 'DIR',
    help: "State directory for every tool call (default ~/.microagent); fixed for the server's life",
  },
};

const TTY_GUIDANCE = `microagent serve mcp speaks the Model Context Protocol on stdin/stdout;
an MCP client starts it, not a terminal. For example:

  claude mcp add microagent -- ${join(PACKAGE_ROOT, 'bin', 'microagent')} serve mcp

See docs/mcp.md for Codex, VS Code and Copilot CLI.
`;

/** After close, exit even if a stray handle (a socket of an abandoned call) is left. */
const EXIT_AFTER_CLOSE_MS = 2_000;

async function serveMain(argv: string[], out: Output): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'mcp') {
    throw new UsageError(
      sub === undefined ? 'serve needs a subcommand: mcp' : `unknown serve subcommand "${sub}"`,
      `Usage: ${SERVE_USAGE}`,
    );
  }
  const { flags, positionals } = parseArgs(rest, SERVE_FLAGS, {}, SERVE_USAGE);
  if (positionals.length > 0)
    throw new UsageError(`unexpected argument "${positionals[0]}"`, `Usage: ${SERVE_USAGE}`);
  if (process.stdin.isTTY === true) {
    out.stderr.write(TTY_GUIDANCE);
    return EXIT.USAGE;
  }
  // SIGTERM/SIGINT from the client: treat like stdin closing (clean shutdown).
  const stop = (): void => void process.stdin.destroy();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  // Loaded here, not at the top: the MCP SDK costs every other command ~0.25 s of start-up.
  const { serveMcpStdio } = await import('../../mcp/index.js');
  const { abandoned } = await serveMcpStdio({
    ...(flags['state-dir'] ? { stateDir: flags['state-dir'] as string } : {}),
  });
  if (abandoned > 0) {
    out.stderr.write(
      `microagent serve mcp: ${abandoned} call(s) still running at exit; their VMs end with this process\n`,
    );
  }
  // The CLI (not the library) decides when the process ends: the server is
  // closed and nothing more can arrive, so do not linger on a stray handle.
  setTimeout(() => process.exit(EXIT.OK), EXIT_AFTER_CLOSE_MS).unref();
  return EXIT.OK;
}

export const SERVE_COMMAND: CommandSpec = {
  summary: 'Serve the MCP tools on stdin/stdout (for agents)',
  usage: SERVE_USAGE,
  flags: SERVE_FLAGS,
  main: serveMain,
};
