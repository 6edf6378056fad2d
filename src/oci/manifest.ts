/**
 * OCI / Docker schema 2 manifest formats, media types and platform
 * selection. Registry documents are parsed leniently (passthrough): other
 * tools add fields we do not use, and the digest already vouches for them.
 */
import { z } from 'zod';
import { MicroagentError } from '../errors.js';

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

/** The Accept header for manifests: indexes first, then single manifests, OCI and Docker. */
export const MANIFEST_ACCEPT = [
  MEDIA.ociIndex,
  MEDIA.dockerList,
  MEDIA.ociManifest,
  MEDIA.dockerManifest,
].join(', ');

export type Compression = 'gzip' | 'zstd' | 'none';

const LAYER_TYPES: Record<string, Compression> = {
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.v1.tar': 'none',
};

/** Layers a registry may refuse to serve (Windows base layers and the like). */
const FOREIGN_TYPES = new Set([
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
]);

export const PlatformSchema = z.object({
  os: z.string(),
  architecture: z.string(),
  variant: z.string().optional(),
});
export type Platform = z.infer<typeof PlatformSchema>;

const DescriptorSchema = z
  .object({
    mediaType: z.string(),
    digest: z.string(),
    size: z.number().int().nonnegative(),
    urls: z.array(z.string()).optional(),
    annotations: z.record(z.string()).optional(),
    platform: PlatformSchema.passthrough().optional(),
  })
  .passthrough();
export type Descriptor = z.infer<typeof DescriptorSchema>;

export const IndexSchema = z
  .object({
    schemaVersion: z.literal(2),
    mediaType: z.string().optional(),
    manifests: z.array(DescriptorSchema),
  })
  .passthrough();
export type ImageIndex = z.infer<typeof IndexSchema>;

export const ManifestSchema = z
  .object({
    schemaVersion: z.literal(2),
    mediaType: z.string().optional(),
    config: DescriptorSchema,
    layers: z.array(DescriptorSchema),
  })
  .passthrough();
export type ImageManifest = z.infer<typeof ManifestSchema>;

/** The parts of the OCI image config a runtime uses (all optional in the spec). */
export const ImageConfigSchema = z
  .object({
    architecture: z.string().optional(),
    os: z.string().optional(),
    variant: z.string().optional(),
    created: z.string().optional(),
    author: z.string().optional(),
    config: z
      .object({
        User: z.string().optional(),
        ExposedPorts: z.record(z.unknown()).nullable().optional(),
        Env: z.array(z.string()).nullable().optional(),
        Entrypoint: z.array(z.string()).nullable().optional(),
        Cmd: z.array(z.string()).nullable().optional(),
        Volumes: z.record(z.unknown()).nullable().optional(),
        WorkingDir: z.string().optional(),
        Labels: z.record(z.string()).nullable().optional(),
        StopSignal: z.string().optional(),
      })
      .passthrough()
      .nullable()
      .optional(),
    rootfs: z
      .object({ type: z.string(), diff_ids: z.array(z.string()) })
      .passthrough()
      .optional(),
  })
  .passthrough();
export type ImageConfig = z.infer<typeof ImageConfigSchema>;

export interface LayerInfo {
  digest: string;
  mediaType: string;
  size: number;
  compression: Compression;
}

export type ParsedManifest =
  | { kind: 'index'; mediaType: string; index: ImageIndex }
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest };

/**
 * Parses manifest bytes by media type (the Content-Type, else the body's
 * own mediaType). Throws UNSUPPORTED_MEDIA_TYPE naming the type.
 */
export function parseManifest(
  bytes: Buffer,
  contentType: string | undefined,
  what: string,
): ParsedManifest {
  let body: unknown;
  try {
    body = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new MicroagentError('REGISTRY_ERROR', `the manifest of ${what} is not JSON`, {
      cause: err,
    });
  }
  const declared = (body as { mediaType?: unknown } | null)?.mediaType;
  const header = contentType?.split(';')[0]?.trim();
  let mediaType =
    typeof declared === 'string' && declared !== ''
      ? declared
      : header && header !== 'application/json' && header !== 'text/plain'
        ? header
        : undefined;
  if (mediaType === undefined) {
    // An OCI document may omit mediaType: tell an index from a manifest by shape.
    const b = body as Record<string, unknown>;
    if (Array.isArray(b.manifests)) mediaType = MEDIA.ociIndex;
    else if (b.config !== undefined) mediaType = MEDIA.ociManifest;
    else mediaType = '(none)';
  }
  if (mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList) {
    const index = parseOr(IndexSchema, body, what, mediaType);
    return { kind: 'index', mediaType, index };
  }
  if (mediaType === MEDIA.ociManifest || mediaType === MEDIA.dockerManifest) {
    const manifest = parseOr(ManifestSchema, body, what, mediaType);
    const configType = manifest.config.mediaType;
    if (configType !== MEDIA.ociConfig && configType !== MEDIA.dockerConfig) {
      throw unsupported(
        `${what} is not a container image: its config has media type ${configType} (an OCI artifact?)`,
        configType,
      );
    }
    return { kind: 'manifest', mediaType, manifest };
  }
  throw unsupported(
    `${what} has manifest media type ${mediaType}, which microagent cannot pull` +
      (mediaType.includes('manifest.v1')
        ? ' (Docker schema 1 is deprecated; re-push the image)'
        : ''),
    mediaType,
  );
}

function parseOr<T>(schema: z.ZodType<T>, body: unknown, what: string, mediaType: string): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    throw new MicroagentError(
      'REGISTRY_ERROR',
      `the ${mediaType} document of ${what} is malformed: ${parsed.error.issues
        .slice(0, 3)
        .map((i) => `${i.path.join('.')}: ${i.message}`)
        .join('; ')}`,
    );
  }
  return parsed.data;
}

function unsupported(message: string, mediaType: string): MicroagentError {
  return new MicroagentError('UNSUPPORTED_MEDIA_TYPE', message, { data: { mediaType } });
}

/** Classifies the layers of a manifest; throws for foreign or unknown layer types. */
export function layerInfos(manifest: ImageManifest, what: string): LayerInfo[] {
  return manifest.layers.map((l) => {
    if (FOREIGN_TYPES.has(l.mediaType)) {
      throw unsupported(
        `${what} has a non-distributable (foreign) layer ${l.digest} of type ${l.mediaType}; such layers are not served by registries and cannot be pulled`,
        l.mediaType,
      );
    }
    const compression = LAYER_TYPES[l.mediaType];
    if (compression === undefined) {
      throw unsupported(
        `${what} has layer ${l.digest} of unsupported media type ${l.mediaType} (supported: ${Object.keys(LAYER_TYPES).join(', ')})`,
        l.mediaType,
      );
    }
    return { digest: l.digest, mediaType: l.mediaType, size: l.size, compression };
  });
}

/** The host's platform: linux plus process.arch in OCI spelling. */
export function hostPlatform(): Platform {
  const arch =
    (
      {
        x64: 'amd64',
        arm64: 'arm64',
        arm: 'arm',
        ia32: '386',
        ppc64: 'ppc64le',
        s390x: 's390x',
      } as Record<string, string>
    )[process.arch] ?? process.arch;
  return { os: 'linux', architecture: arch };
}

/** Parses `os/arch[/variant]` (e.g. `linux/arm64/v8`). */
export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/i.test(p))) {
    throw new MicroagentError('INVALID_ARGUMENT', `invalid platform "${s}"`, {
      remediation: 'Write the platform as os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8.',
      data: { platform: s },
    });
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return { os, architecture, ...(variant ? { variant } : {}) };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/**
 * Picks the index entry for a platform. Without a requested variant, an
 * entry without variant wins, then the usual default (arm64 → v8), then the
 * first. Attestation manifests (platform unknown/unknown) never match.
 */
export function selectPlatform(
  index: ImageIndex,
  want: Platform,
  what: string,
): { descriptor: Descriptor; platform: Platform } {
  const candidates = index.manifests.filter(
    (m) =>
      m.platform !== undefined &&
      m.platform.os === want.os &&
      m.platform.architecture === want.architecture &&
      (want.variant === undefined || normVariant(m.platform) === normVariant(want)),
  );
  const pick =
    candidates.find((m) => m.platform?.variant === undefined) ??
    candidates.find((m) => normVariant(m.platform!) === normVariant(want)) ??
    candidates[0];
  if (pick === undefined) {
    const available = index.manifests
      .filter((m) => m.platform && m.platform.os !== 'unknown')
      .map((m) => formatPlatform(m.platform!));
    throw new MicroagentError(
      'PLATFORM_NOT_FOUND',
      `${what} has no image for platform ${formatPlatform(want)}; available: ${
        available.length > 0 ? [...new Set(available)].join(', ') : '(none)'
      }`,
      { data: { platform: formatPlatform(want), available } },
    );
  }
  const p = pick.platform!;
  return {
    descriptor: pick,
    platform: {
      os: p.os,
      architecture: p.architecture,
      ...(p.variant ? { variant: p.variant } : {}),
    },
  };
}

function normVariant(p: Platform): string | undefined {
  if (p.variant) return p.variant;
  return p.architecture === 'arm64' ? 'v8' : undefined;
}
