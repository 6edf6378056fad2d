/**
 * `microagent image pull|list|tag|rm|prune`
 */
import { parseArgs, UsageError, type FlagSpecs } from '../args.js';
import { table, writeJson, type Output } from '../output.js';
import {
  listImages,
  pullImage,
  removeImage,
  tagImage,
  prune as pruneAll,
  StatePaths,
} from '../../index.js';
import type { CommandSpec } from './workspace.js';
import { progressRenderer } from './image-flags.js';

const COMMON: FlagSpecs = {
  json: { type: 'boolean', help: 'Print JSON' },
  'state-dir': { type: 'string', arg: 'DIR', help: 'State directory (default ~/.microagent)' },
};
const PULL_FLAGS: FlagSpecs = {
  ...COMMON,
  platform: {
    type: 'string',
    arg: 'OS/ARCH[/VARIANT]',
    help: 'Platform to pick from an index (default: this host)',
  },
  'insecure-registry': {
    type: 'strings',
    arg: 'HOST[:PORT]',
    help: 'Allow plain HTTP to this registry (repeatable)',
  },
};

export const IMAGE_USAGE = [
  'microagent image pull REF [--platform OS/ARCH] [--insecure-registry HOST]',
  '       microagent image list',
  '       microagent image tag SRC DST',
  '       microagent image rm REF...',
  '       microagent image prune',
].join('\n');

function paths(flags: Record<string, unknown>): StatePaths {
  return new StatePaths(flags['state-dir'] as string | undefined);
}

function json(out: Output, flags: Record<string, unknown>): boolean {
  return out.json || flags.json === true;
}

async function pull(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, PULL_FLAGS, {}, IMAGE_USAGE);
  if (positionals.length !== 1)
    throw new UsageError('image pull needs exactly one REF', `Usage: ${IMAGE_USAGE}`);
  const tty = (out.stderr as NodeJS.WriteStream).isTTY === true && !json(out, flags);
  const result = await pullImage(paths(flags), positionals[0] as string, {
    ...(flags.platform ? { platform: flags.platform as string } : {}),
    ...(flags['insecure-registry']
      ? { insecureRegistries: flags['insecure-registry'] as string[] }
      : {}),
    ...(tty ? { onProgress: progressRenderer(out.stderr as NodeJS.WriteStream) } : {}),
  });
  const doc = {
    reference: result.reference,
    digest: result.resolvedDigest,
    pinnedReference: result.pinnedReference,
    platform: result.platform,
    layers: result.layers.map((l) => ({
      digest: l.digest,
      size: l.size,
      compression: l.compression,
    })),
    totalSize: result.totalSize,
    downloadedBytes: result.downloadedBytes,
  };
  if (json(out, flags)) writeJson(out, doc);
  else out.stdout.write(`${result.reference}\n${result.pinnedReference}\n`);
  return 0;
}

async function list(argv: string[], out: Output): Promise<number> {
  const { flags } = parseArgs(argv, COMMON, {}, IMAGE_USAGE);
  const images = await listImages(paths(flags));
  if (json(out, flags)) {
    writeJson(out, { images });
  } else if (images.length === 0) {
    out.stdout.write('No images. Pull one with `microagent image pull REF`.\n');
  } else {
    out.stdout.write(
      table([
        ['REFERENCE', 'DIGEST', 'PLATFORM', 'SIZE', 'PULLED'],
        ...images.map((i) => [
          i.reference,
          i.digest.slice(0, 19),
          `${i.platform.os}/${i.platform.architecture}`,
          `${(i.size / 1e6).toFixed(1)} MB`,
          i.pulledAt,
        ]),
      ]) + '\n',
    );
  }
  return 0;
}

async function tag(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, COMMON, {}, IMAGE_USAGE);
  if (positionals.length !== 2)
    throw new UsageError('image tag needs SRC and DST', `Usage: ${IMAGE_USAGE}`);
  const record = await tagImage(paths(flags), positionals[0] as string, positionals[1] as string);
  if (json(out, flags)) writeJson(out, record);
  else out.stdout.write(`${record.reference} → ${record.digest}\n`);
  return 0;
}

async function rm(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, COMMON, {}, IMAGE_USAGE);
  if (positionals.length === 0)
    throw new UsageError('image rm needs a REF', `Usage: ${IMAGE_USAGE}`);
  const removed = [];
  for (const ref of positionals) removed.push(...(await removeImage(paths(flags), ref)));
  if (json(out, flags)) writeJson(out, { removed });
  else for (const r of removed) out.stdout.write(`removed ${r.reference}\n`);
  return 0;
}

async function prune(argv: string[], out: Output): Promise<number> {
  const { flags } = parseArgs(argv, COMMON, {}, IMAGE_USAGE);
  const result = await pruneAll(
    flags['state-dir'] ? { stateDir: flags['state-dir'] as string } : {},
  );
  if (json(out, flags)) writeJson(out, result);
  else {
    out.stdout.write(
      `removed ${result.removedBlobs.length} blobs (${(result.reclaimedBytes / 1e6).toFixed(1)} MB) and ${result.removedBaselines.length} unused rootfs baselines\n`,
    );
  }
  return 0;
}

async function imageMain(argv: string[], out: Output): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'pull':
      return pull(rest, out);
    case 'list':
    case 'ls':
      return list(rest, out);
    case 'tag':
      return tag(rest, out);
    case 'rm':
    case 'delete':
      return rm(rest, out);
    case 'prune':
      return prune(rest, out);
    case undefined:
      throw new UsageError(
        'image needs a subcommand: pull, list, tag, rm or prune',
        `Usage: ${IMAGE_USAGE}`,
      );
    default:
      throw new UsageError(`unknown image subcommand "${sub}"`, `Usage: ${IMAGE_USAGE}`);
  }
}

export const IMAGE_COMMAND: CommandSpec = {
  summary: 'Pull, list, tag and remove OCI images',
  usage: IMAGE_USAGE,
  flags: PULL_FLAGS,
  main: imageMain,
};
