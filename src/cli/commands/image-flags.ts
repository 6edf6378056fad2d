/**
 * The image flags of run, create and rootfs build, and the pull progress
 * display, apart from `image` itself so that those commands do not load
 * the registry client on every start-up.
 */
import type { FlagSpecs } from '../args.js';
import { type PullEvent, type ResolveImageOptions, parseMemory } from '../../index.js';

/** Flags shared by run, create and rootfs build for resolving an image. */
export const IMAGE_FLAGS: FlagSpecs = {
  platform: {
    type: 'string',
    arg: 'OS/ARCH[/VARIANT]',
    help: 'Platform to pick from an image index (default: this host)',
  },
  'insecure-registry': {
    type: 'strings',
    arg: 'HOST[:PORT]',
    help: 'Allow plain HTTP to this registry (repeatable)',
  },
  'allow-guest-setuid': {
    type: 'boolean',
    help: 'Keep setuid/setgid bits from the image (stripped by default)',
  },
  size: {
    type: 'string',
    arg: 'SIZE',
    help: 'Pin the root file system size, e.g. 2G (default: content + headroom)',
  },
};

export function imageOptionsFrom(
  f: Record<string, unknown>,
  progress?: NodeJS.WritableStream,
): ResolveImageOptions {
  return {
    ...(f.platform ? { platform: f.platform as string } : {}),
    ...(f['insecure-registry'] ? { insecureRegistries: f['insecure-registry'] as string[] } : {}),
    ...(f['allow-guest-setuid'] === true ? { allowGuestSetuid: true } : {}),
    ...(f.size ? { sizeBytes: parseMemory(f.size as string) * 1024 * 1024 } : {}),
    ...(progress ? { onPull: progressRenderer(progress as NodeJS.WriteStream) } : {}),
  };
}

/** Per-layer progress bars, redrawn in place on a TTY (stderr only). */
export function progressRenderer(stream: NodeJS.WriteStream): (e: PullEvent) => void {
  const layers = new Map<string, { done: number; total: number; cached: boolean }>();
  let drawn = 0;
  let last = 0;
  const draw = (force: boolean): void => {
    const now = Date.now();
    if (!force && now - last < 100) return;
    last = now;
    if (drawn > 0) stream.write(`\x1b[${drawn}A`);
    const width = 30;
    for (const [digest, l] of layers) {
      const frac = l.total > 0 ? Math.min(1, l.done / l.total) : 1;
      const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, ' ');
      const mb = (n: number): string => (n / 1e6).toFixed(1);
      const label = l.cached ? 'cached' : `${mb(l.done)}/${mb(l.total)} MB`;
      stream.write(`\x1b[2K${digest.slice(7, 19)} [${bar}] ${label}\n`);
    }
    drawn = layers.size;
  };
  return (e) => {
    if (e.type === 'blob' && e.kind === 'layer') {
      layers.set(e.digest, { done: e.done, total: e.total, cached: e.cached });
      draw(e.done === e.total);
    } else if (e.type === 'resolved') {
      stream.write(`${e.reference} → ${e.digest.slice(0, 19)}… (${e.layers} layers)\n`);
    } else if (e.type === 'done') {
      draw(true);
    }
  };
}
