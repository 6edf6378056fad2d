/**
 * `rootfs build IMAGE -o FILE`: an image's bootable ext4 root file system as
 * a standalone file (for other tools or another host). Mutable references
 * are refused unless allowed: only a digest pins what gets built.
 */
import { resolve } from 'node:path';
import { MicroagentError } from '../errors.js';
import { isMutable, pullImage, type PullEvent } from '../oci/index.js';
import { StatePaths } from '../paths.js';
import { buildRootfs, type RootfsBuildResult } from '../rootfs/build.js';

export interface RootfsBuildOptions {
  stateDir?: string;
  image: string;
  output: string;
  allowMutable?: boolean;
  allowGuestSetuid?: boolean;
  sizeBytes?: number;
  platform?: string;
  insecureRegistries?: string[];
  onPull?: (event: PullEvent) => void;
}

export async function buildImageRootfs(
  options: RootfsBuildOptions,
): Promise<RootfsBuildResult & { reference: string; digest: string }> {
  if (isMutable(options.image) && !options.allowMutable) {
    throw new MicroagentError(
      'MUTABLE_REFERENCE',
      `refusing to build from the mutable reference ${options.image}`,
      {
        remediation:
          'Pin the image by digest (NAME@sha256:…; `microagent image pull` prints it), or pass --allow-mutable.',
        data: { image: options.image },
      },
    );
  }
  const paths = new StatePaths(options.stateDir);
  const pulled = await pullImage(paths, options.image, {
    ...(options.platform ? { platform: options.platform } : {}),
    ...(options.insecureRegistries ? { insecureRegistries: options.insecureRegistries } : {}),
    ...(options.onPull ? { onProgress: options.onPull } : {}),
  });
  const result = await buildRootfs(
    paths,
    {
      layers: pulled.layers.map((l) => ({
        path: l.path,
        mediaType: l.mediaType,
        digest: l.digest,
      })),
      imageDigest: pulled.resolvedDigest,
      ...(options.allowGuestSetuid ? { allowGuestSetuid: true } : {}),
      ...(options.sizeBytes ? { sizeBytes: options.sizeBytes } : {}),
    },
    { outPath: resolve(options.output) },
  );
  return { ...result, reference: pulled.reference, digest: pulled.resolvedDigest };
}
