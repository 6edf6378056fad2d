/**
 * `microagent rootfs build IMAGE -o FILE`
 */
import { parseArgs, UsageError, type FlagSpecs } from '../args.js';
import { writeJson, type Output } from '../output.js';
import { buildImageRootfs, parseMemory } from '../../index.js';
import { IMAGE_FLAGS, progressRenderer } from './image-flags.js';
import type { CommandSpec } from './workspace.js';

const USAGE =
  'microagent rootfs build IMAGE -o FILE [--allow-mutable] [--allow-guest-setuid] [--size SIZE]';
const FLAGS: FlagSpecs = {
  json: { type: 'boolean', help: 'Print JSON' },
  'state-dir': { type: 'string', arg: 'DIR', help: 'State directory (default ~/.microagent)' },
  output: { type: 'string', short: 'o', arg: 'FILE', help: 'Where to write the ext4 image' },
  'allow-mutable': { type: 'boolean', help: 'Accept a tag (mutable) instead of a digest' },
  ...IMAGE_FLAGS,
};

async function rootfsMain(argv: string[], out: Output): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'build') {
    throw new UsageError(
      sub === undefined ? 'rootfs needs a subcommand: build' : `unknown rootfs subcommand "${sub}"`,
      `Usage: ${USAGE}`,
    );
  }
  const { flags, positionals } = parseArgs(rest, FLAGS, {}, USAGE);
  if (positionals.length !== 1)
    throw new UsageError('rootfs build needs exactly one IMAGE', `Usage: ${USAGE}`);
  if (!flags.output) throw new UsageError('rootfs build needs -o FILE', `Usage: ${USAGE}`);
  const json = out.json || flags.json === true;
  const tty = (out.stderr as NodeJS.WriteStream).isTTY === true && !json;
  const result = await buildImageRootfs({
    image: positionals[0] as string,
    output: flags.output as string,
    ...(flags['state-dir'] ? { stateDir: flags['state-dir'] as string } : {}),
    ...(flags['allow-mutable'] === true ? { allowMutable: true } : {}),
    ...(flags['allow-guest-setuid'] === true ? { allowGuestSetuid: true } : {}),
    ...(flags.size ? { sizeBytes: parseMemory(flags.size as string) * 1024 * 1024 } : {}),
    ...(flags.platform ? { platform: flags.platform as string } : {}),
    ...(flags['insecure-registry']
      ? { insecureRegistries: flags['insecure-registry'] as string[] }
      : {}),
    ...(tty ? { onPull: progressRenderer(out.stderr as NodeJS.WriteStream) } : {}),
  });
  if (json) writeJson(out, result);
  else out.stdout.write(`${result.path}\n`);
  return 0;
}

export const ROOTFS_COMMAND: CommandSpec = {
  summary: 'Build an image into a standalone ext4 root file system',
  usage: USAGE,
  flags: FLAGS,
  main: rootfsMain,
};
