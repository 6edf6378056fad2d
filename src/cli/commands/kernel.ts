/**
 * `microagent kernel install|list|verify`
 */
import { parseArgs, UsageError, type FlagSpecs } from '../args.js';
import { table, writeJson, type Output } from '../output.js';
import { installKernel, listKernels, verifyKernel, StatePaths } from '../../index.js';

export const KERNEL_USAGE = [
  'microagent kernel install [--file PATH --sha256 HEX | --url URL --sha256 HEX] [--force]',
  '       microagent kernel list',
  '       microagent kernel verify [ID]',
].join('\n');

const COMMON: FlagSpecs = {
  json: { type: 'boolean', help: 'Print JSON' },
  'state-dir': { type: 'string', arg: 'DIR', help: 'State directory (default ~/.microagent)' },
};
const INSTALL_FLAGS: FlagSpecs = {
  ...COMMON,
  file: { type: 'string', arg: 'PATH', help: 'Install a kernel image from a local file' },
  url: { type: 'string', arg: 'URL', help: 'Download a kernel image (https, or http on loopback)' },
  sha256: { type: 'string', arg: 'HEX', help: 'Required SHA-256 of --file / --url' },
  force: { type: 'boolean', help: 'Reinstall even when already installed' },
};

export async function kernelMain(argv: string[], out: Output): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'install':
      return install(rest, out);
    case 'list':
    case 'ls':
      return list(rest, out);
    case 'verify':
      return verify(rest, out);
    case undefined:
      throw new UsageError(
        'kernel needs a subcommand: install, list or verify',
        `Usage: ${KERNEL_USAGE}`,
      );
    default:
      throw new UsageError(`unknown kernel subcommand "${sub}"`, `Usage: ${KERNEL_USAGE}`);
  }
}

function statePaths(flags: Record<string, unknown>): StatePaths {
  return new StatePaths(flags['state-dir'] as string | undefined);
}

async function install(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, INSTALL_FLAGS, {}, KERNEL_USAGE);
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const file = flags.file as string | undefined;
  const url = flags.url as string | undefined;
  const sha256 = flags.sha256 as string | undefined;
  if (file && url) throw new UsageError('use either --file or --url, not both');
  if ((file || url) && !sha256) {
    throw new UsageError(
      `--${file ? 'file' : 'url'} needs --sha256 HEX`,
      'Custom kernels are only installed with a known SHA-256 (run `sha256sum FILE`).',
    );
  }
  if (sha256 && !/^[0-9a-f]{64}$/i.test(sha256)) {
    throw new UsageError('--sha256 must be 64 hexadecimal characters');
  }
  if (sha256 && !file && !url) throw new UsageError('--sha256 goes with --file or --url');
  const source = file
    ? { kind: 'file' as const, path: file, sha256: (sha256 as string).toLowerCase() }
    : url
      ? { kind: 'url' as const, url, sha256: (sha256 as string).toLowerCase() }
      : { kind: 'apt' as const };
  const kernel = await installKernel(statePaths(flags), source, { force: flags.force === true });
  if (out.json || flags.json) {
    writeJson(out, {
      id: kernel.id,
      installed: kernel.installed,
      isDefault: kernel.isDefault,
      manifest: kernel.manifest,
    });
  } else {
    const verb = kernel.installed ? 'installed' : 'already installed:';
    out.stdout.write(`${verb} kernel ${kernel.id} (${kernel.manifest.version})\n`);
  }
  return 0;
}

async function list(argv: string[], out: Output): Promise<number> {
  const { flags } = parseArgs(argv, COMMON, {}, KERNEL_USAGE);
  const kernels = await listKernels(statePaths(flags));
  if (out.json || flags.json) {
    writeJson(out, { kernels });
  } else if (kernels.length === 0) {
    out.stdout.write(
      'No kernels installed. The default one is installed on first use, or run `microagent kernel install`.\n',
    );
  } else {
    const rows = [['ID', 'VERSION', 'SOURCE', 'DEFAULT']];
    for (const k of kernels) rows.push([k.id, k.version, k.source.kind, k.isDefault ? 'yes' : '']);
    out.stdout.write(table(rows) + '\n');
  }
  return 0;
}

async function verify(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, COMMON, {}, KERNEL_USAGE);
  const result = await verifyKernel(statePaths(flags), positionals[0]);
  if (out.json || flags.json) {
    writeJson(out, result);
  } else {
    for (const f of result.files) {
      out.stdout.write(`${f.ok ? 'ok  ' : 'FAIL'}  ${f.name}  ${f.actual ?? 'missing'}\n`);
    }
    out.stdout.write(
      result.ok
        ? `kernel ${result.id} verified\n`
        : `kernel ${result.id} does NOT match its manifest\n`,
    );
  }
  return result.ok ? 0 : 1;
}
