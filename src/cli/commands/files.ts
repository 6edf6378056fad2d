/**
 * `microagent connect NAME`, `cp SRC DST`, `artifacts NAME`, `artifacts get`.
 */
import { resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { parseArgs, UsageError, type FlagSpecs } from '../args.js';
import { table, writeJson, type Output } from '../output.js';
import {
  connectWorkspace,
  copyIn,
  copyOut,
  getArtifact,
  listArtifacts,
  parseGuestLocation,
} from '../../index.js';
import type { CommandSpec } from './workspace.js';

const COMMON: FlagSpecs = {
  json: { type: 'boolean', help: 'Print JSON' },
  'state-dir': { type: 'string', arg: 'DIR', help: 'State directory (default ~/.microagent)' },
};

function stateDir(flags: Record<string, unknown>): { stateDir?: string } {
  return flags['state-dir'] ? { stateDir: flags['state-dir'] as string } : {};
}

/** Ctrl-] ends a connect session (as with telnet and the reference CLI). */
const DETACH_KEY = 0x1d;

const CONNECT_USAGE = 'microagent connect NAME [--shell PROGRAM]';
const CONNECT_FLAGS: FlagSpecs = {
  'state-dir': COMMON['state-dir'] as FlagSpecs[string],
  shell: { type: 'string', arg: 'PROGRAM', help: 'Program to run instead of /bin/sh -l' },
};

async function connectMain(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, CONNECT_FLAGS, {}, CONNECT_USAGE);
  if (positionals.length !== 1)
    throw new UsageError('connect needs exactly one NAME', `Usage: ${CONNECT_USAGE}`);
  const stdin = process.stdin;
  const stdout = out.stdout as NodeJS.WriteStream;
  const interactive = stdin.isTTY === true;
  const size = (): { rows: number; cols: number } => ({
    rows: stdout.rows || 24,
    cols: stdout.columns || 80,
  });
  const input = new PassThrough();
  let detached = false;
  let hangUp = (): void => {};
  const onData = (chunk: Buffer): void => {
    const at = interactive ? chunk.indexOf(DETACH_KEY) : -1;
    if (at !== -1) {
      if (at > 0) input.write(chunk.subarray(0, at));
      detached = true;
      hangUp();
      return;
    }
    input.write(chunk);
  };
  const handle = await connectWorkspace({
    name: positionals[0] as string,
    ...stateDir(flags),
    ...(flags.shell ? { argv: [flags.shell as string] } : {}),
    ...size(),
    ...(process.env.TERM ? { term: process.env.TERM } : {}),
    stdin: input,
    onOutput: (c) => void out.stdout.write(c),
  });
  // Detaching ends the session: the shell gets SIGHUP, then SIGKILL.
  hangUp = (): void => {
    handle.kill(1);
    setTimeout(() => handle.kill(9), 1000).unref();
  };
  if (interactive) {
    stdin.setRawMode(true);
    out.stderr.write('[connected; Ctrl-] to detach]\r\n');
  }
  const onResize = (): void => {
    const s = size();
    handle.resize(s.rows, s.cols);
  };
  stdout.on('resize', onResize);
  stdin.on('data', onData);
  stdin.on('end', () => input.end());
  stdin.resume();
  try {
    const exit = await handle.exit;
    return detached ? 0 : exit.exitCode;
  } finally {
    stdout.off('resize', onResize);
    stdin.off('data', onData);
    if (interactive) stdin.setRawMode(false);
    stdin.pause();
    if (detached) out.stderr.write('\r\n[detached]\r\n');
  }
}

const CP_USAGE = 'microagent cp SRC DST   (one side is NAME:/guest/path)';
const CP_FLAGS: FlagSpecs = {
  ...COMMON,
  mode: {
    type: 'string',
    arg: 'OCTAL',
    help: 'Mode of the file written into the guest (default: the source mode)',
  },
};

async function cpMain(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, CP_FLAGS, {}, CP_USAGE);
  if (positionals.length !== 2) throw new UsageError('cp needs SRC and DST', `Usage: ${CP_USAGE}`);
  const [src, dst] = positionals as [string, string];
  const from = parseGuestLocation(src);
  const to = parseGuestLocation(dst);
  if ((from === undefined) === (to === undefined)) {
    throw new UsageError(
      'exactly one of SRC and DST must be NAME:/guest/path',
      `Usage: ${CP_USAGE}`,
    );
  }
  let mode: number | undefined;
  if (flags.mode !== undefined) {
    if (!/^[0-7]{3,4}$/.test(flags.mode as string))
      throw new UsageError('--mode must be octal, e.g. 644 or 0755');
    mode = parseInt(flags.mode as string, 8);
  }
  const result = to
    ? await copyIn({
        ...stateDir(flags),
        hostPath: resolve(src),
        to,
        ...(mode !== undefined ? { mode } : {}),
      })
    : await copyOut({
        ...stateDir(flags),
        from: from as NonNullable<typeof from>,
        hostPath: resolve(dst),
      });
  if (out.json || flags.json === true) writeJson(out, result);
  else
    out.stderr.write(
      `${result.bytes} bytes ${result.direction === 'in' ? 'to' : 'from'} ${result.workspace}:${result.guestPath} (via ${result.via})\n`,
    );
  return 0;
}

const ARTIFACTS_USAGE = 'microagent artifacts NAME  |  microagent artifacts get NAME OUTPUT [DEST]';
async function artifactsMain(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, COMMON, {}, ARTIFACTS_USAGE);
  const json = out.json || flags.json === true;
  if (positionals[0] === 'get') {
    const [, name, artifact, dest] = positionals;
    if (!name || !artifact || positionals.length > 4) {
      throw new UsageError('artifacts get needs NAME and OUTPUT', `Usage: ${ARTIFACTS_USAGE}`);
    }
    const result = await getArtifact({
      ...stateDir(flags),
      name,
      artifact,
      hostPath: resolve(dest ?? artifact),
    });
    if (json) writeJson(out, result);
    else out.stderr.write(`${result.bytes} bytes → ${result.hostPath}\n`);
    return 0;
  }
  if (positionals.length !== 1)
    throw new UsageError('artifacts needs NAME', `Usage: ${ARTIFACTS_USAGE}`);
  const list = await listArtifacts({ ...stateDir(flags), name: positionals[0] as string });
  if (json) writeJson(out, { artifacts: list });
  else if (list.length === 0)
    out.stdout.write('No declared outputs (declare them with create --output NAME=/path).\n');
  else out.stdout.write(table([['NAME', 'PATH'], ...list.map((a) => [a.name, a.path])]) + '\n');
  return 0;
}

export const FILE_COMMANDS: Record<string, CommandSpec> = {
  connect: {
    summary: 'Interactive shell in a running workspace (Ctrl-] detaches)',
    usage: CONNECT_USAGE,
    flags: CONNECT_FLAGS,
    main: connectMain,
  },
  cp: {
    summary: 'Copy a file between the host and a workspace',
    usage: CP_USAGE,
    flags: CP_FLAGS,
    main: cpMain,
  },
  artifacts: {
    summary: 'List or fetch declared output files',
    usage: ARTIFACTS_USAGE,
    flags: COMMON,
    main: artifactsMain,
  },
};
