/**
 * Builds OCI images with the real umoci in a local OCI layout, and reads
 * their layers back as blob paths (what the registry client hands over).
 */
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../src/proc/spawn.js';
import type { LayerRef } from '../../src/rootfs/build.js';

export const UMOCI = ['/usr/bin/umoci', '/usr/sbin/umoci'].find((p) => existsSync(p));

export async function umoci(args: string[]): Promise<string> {
  const r = await run([UMOCI ?? 'umoci', ...args], { providedBy: 'umoci', timeoutMs: 120_000 });
  return r.stdout.toString('utf8');
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** The manifest digest and layer blobs of layout:tag, lowest layer first. */
export async function layoutImage(
  layout: string,
  tag: string,
): Promise<{ manifestDigest: string; layers: LayerRef[] }> {
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as {
    manifests: Descriptor[];
  };
  const desc = index.manifests.find(
    (m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag,
  );
  if (!desc) throw new Error(`no ${tag} in ${layout}`);
  const manifest = JSON.parse(await readFile(blobPath(layout, desc.digest), 'utf8')) as {
    layers: Descriptor[];
  };
  return {
    manifestDigest: desc.digest,
    layers: manifest.layers.map((l) => ({
      path: blobPath(layout, l.digest),
      mediaType: l.mediaType,
      digest: l.digest,
    })),
  };
}

export function blobPath(layout: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  return join(layout, 'blobs', alg!, hex!);
}
