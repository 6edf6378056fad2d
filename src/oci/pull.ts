/**
 * Pulls an image into the blob cache and records it in the image index:
 * resolve the reference to a manifest digest (via an index / manifest list
 * for the wanted platform), then fetch config and layers in parallel, each
 * verified against its digest.
 *
 * A reference pinned by digest whose blobs are all cached needs no network.
 */
import { stat } from 'node:fs/promises';
import { MicroagentError } from '../errors.js';
import type { StatePaths } from '../paths.js';
import { blobPath, fetchBlob, readBlob, writeBlob } from './blobs.js';
import { getImage, pinBlobs, recordImage, type ImageRecord } from './images.js';
import {
  ImageConfigSchema,
  formatPlatform,
  hostPlatform,
  layerInfos,
  parseManifest,
  parsePlatform,
  selectPlatform,
  type Compression,
  type ImageConfig,
  type ImageManifest,
  type Platform,
} from './manifest.js';
import { RegistryClient, type RetryOptions } from './registry.js';
import { formatReference, parseReference, type ImageReference } from './reference.js';

export type PullEvent =
  | { type: 'resolving'; reference: string }
  | {
      type: 'resolved';
      reference: string;
      digest: string;
      platform: Platform;
      layers: number;
      totalSize: number;
    }
  /** Per blob (config and layers): bytes on disk so far of total. */
  | {
      type: 'blob';
      digest: string;
      kind: 'config' | 'layer';
      done: number;
      total: number;
      cached: boolean;
    }
  | { type: 'done'; reference: string; digest: string; downloadedBytes: number; ms: number };

export interface PullOptions {
  /** `os/arch[/variant]` or a Platform; default the host's (linux/amd64 on x64). */
  platform?: string | Platform;
  /** Hosts that may be reached over plain http (loopback always may). */
  insecureRegistries?: readonly string[];
  onProgress?: (event: PullEvent) => void;
  /** Parallel blob downloads (default 4). */
  concurrency?: number;
  retry?: RetryOptions;
  /** Environment for credential lookup (default process.env). */
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  /**
   * `always` (default): resolve the reference on the registry.
   * `missing`: use the image index entry when the image is already here
   * (no network), else pull.
   */
  policy?: 'always' | 'missing';
}

export interface PulledLayer {
  digest: string;
  mediaType: string;
  size: number;
  compression: Compression;
  /** The blob in the cache (compressed as served). */
  path: string;
}

export interface PullResult {
  /** Canonical reference as asked for: `docker.io/library/ubuntu:24.04`. */
  reference: string;
  /** The same image pinned: `docker.io/library/ubuntu@sha256:…`. */
  pinnedReference: string;
  /** Digest of the platform's image manifest. */
  resolvedDigest: string;
  /** Digest of the index / manifest list, when the reference named one. */
  indexDigest?: string;
  platform: Platform;
  manifestMediaType: string;
  config: ImageConfig;
  configDigest: string;
  layers: PulledLayer[];
  /** Compressed bytes of config + layers. */
  totalSize: number;
  /** Bytes fetched from the registry in this call (0: all cached). */
  downloadedBytes: number;
}

/**
 * Pulls `reference` into the cache of `paths` and records it in the image
 * index. Throws IMAGE_NOT_FOUND, PLATFORM_NOT_FOUND, REGISTRY_AUTH_FAILED,
 * REGISTRY_UNREACHABLE, UNSUPPORTED_MEDIA_TYPE, MANIFEST_DIGEST_MISMATCH,
 * BLOB_DIGEST_MISMATCH, INSECURE_REGISTRY_REFUSED or INVALID_ARGUMENT.
 */
export async function pullImage(
  paths: StatePaths,
  reference: string,
  options: PullOptions = {},
): Promise<PullResult> {
  const started = performance.now();
  const ref = parseReference(reference);
  const canonical = formatReference(ref);
  const explicitPlatform = options.platform !== undefined;
  const want =
    typeof options.platform === 'string'
      ? parsePlatform(options.platform)
      : (options.platform ?? hostPlatform());
  const emit = options.onProgress ?? (() => {});

  if (options.policy === 'missing') {
    const local = await loadLocal(paths, canonical, want).catch(() => undefined);
    if (local) return local;
  }

  emit({ type: 'resolving', reference: canonical });
  const client = new RegistryClient(ref.registry, {
    insecureRegistries: options.insecureRegistries ?? [],
    env: options.env ?? process.env,
    ...(options.retry ? { retry: options.retry } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });

  // 1. Resolve to an image manifest (through an index when there is one).
  const top = await getManifest(paths, client, ref, ref.digest ?? ref.tag ?? 'latest', canonical);
  let parsed = parseManifest(top.bytes, top.contentType, canonical);
  let indexDigest: string | undefined;
  let manifestDigest = top.digest;
  let manifestBytes = top.bytes;
  let platform: Platform | undefined;
  if (parsed.kind === 'index') {
    indexDigest = top.digest;
    const pick = selectPlatform(parsed.index, want, canonical);
    platform = pick.platform;
    const m = await getManifest(paths, client, ref, pick.descriptor.digest, canonical);
    parsed = parseManifest(m.bytes, m.contentType ?? pick.descriptor.mediaType, canonical);
    if (parsed.kind !== 'manifest') {
      throw new MicroagentError(
        'UNSUPPORTED_MEDIA_TYPE',
        `${canonical}: the index entry for ${formatPlatform(want)} is itself an index (${parsed.mediaType})`,
        { data: { mediaType: parsed.mediaType } },
      );
    }
    manifestDigest = m.digest;
    manifestBytes = m.bytes;
  }
  const manifest: ImageManifest = parsed.manifest;
  const layers = layerInfos(manifest, canonical);
  const totalSize = manifest.config.size + layers.reduce((n, l) => n + l.size, 0);

  // 2. Pin what we need (so a concurrent prune keeps it), then fetch.
  const digests = [manifestDigest, manifest.config.digest, ...layers.map((l) => l.digest)];
  if (indexDigest) digests.push(indexDigest);
  const release = await pinBlobs(paths, digests);
  try {
    if (indexDigest) await writeBlob(paths, indexDigest, top.bytes);
    await writeBlob(paths, manifestDigest, manifestBytes);

    let downloadedBytes = 0;
    const fetchOne = async (
      desc: { digest: string; size: number },
      kind: 'config' | 'layer',
    ): Promise<void> => {
      let cachedAtStart = true;
      const r = await fetchBlob(
        paths,
        desc,
        (offset) => client.openBlob(ref.repository, desc.digest, offset),
        {
          tries: client.maxTries,
          backoff: (n) => client.backoff(n),
          what: canonical,
          onProgress: (p) => {
            if (p.done < p.total) cachedAtStart = false;
            emit({
              type: 'blob',
              digest: p.digest,
              kind,
              done: p.done,
              total: p.total,
              cached: cachedAtStart,
            });
          },
        },
      );
      if (!r.cached) downloadedBytes += desc.size;
    };

    // The config first: it says which platform the image really is.
    await fetchOne(manifest.config, 'config');
    const config = parseConfig(await readBlob(paths, manifest.config.digest), canonical);
    platform ??= configPlatform(config);
    if (indexDigest === undefined && !samePlatform(platform, want)) {
      throw new MicroagentError(
        'PLATFORM_NOT_FOUND',
        `${canonical} is a single-platform image for ${formatPlatform(platform)}, not ${formatPlatform(want)}${
          explicitPlatform ? '' : ' (the host platform)'
        }; available: ${formatPlatform(platform)}`,
        { data: { platform: formatPlatform(want), available: [formatPlatform(platform)] } },
      );
    }
    emit({
      type: 'resolved',
      reference: canonical,
      digest: manifestDigest,
      platform,
      layers: layers.length,
      totalSize,
    });

    await parallel(layers, options.concurrency ?? 4, (l) => fetchOne(l, 'layer'));

    await recordImage(paths, canonical, {
      digest: manifestDigest,
      ...(indexDigest ? { indexDigest } : {}),
      platform,
      pulledAt: new Date().toISOString(),
      size: totalSize,
      configDigest: manifest.config.digest,
      layers: layers.map((l) => l.digest),
    });
    emit({
      type: 'done',
      reference: canonical,
      digest: manifestDigest,
      downloadedBytes,
      ms: Math.round(performance.now() - started),
    });
    return {
      reference: canonical,
      pinnedReference: pinned(ref, manifestDigest),
      resolvedDigest: manifestDigest,
      ...(indexDigest ? { indexDigest } : {}),
      platform,
      manifestMediaType: parsed.mediaType,
      config,
      configDigest: manifest.config.digest,
      layers: layers.map((l) => ({ ...l, path: blobPath(paths, l.digest) })),
      totalSize,
      downloadedBytes,
    };
  } finally {
    await release();
  }
}

/**
 * The pull result of an image already in the index, from the cache only
 * (no network). IMAGE_NOT_FOUND when it is not recorded or a blob is gone.
 */
export async function loadPulledImage(paths: StatePaths, refOrDigest: string): Promise<PullResult> {
  const record = await getImage(paths, refOrDigest);
  return fromRecord(paths, record);
}

async function loadLocal(
  paths: StatePaths,
  canonical: string,
  want: Platform,
): Promise<PullResult | undefined> {
  const record = await getImage(paths, canonical);
  if (!samePlatform(record.platform, want)) return undefined;
  return fromRecord(paths, record);
}

async function fromRecord(paths: StatePaths, record: ImageRecord): Promise<PullResult> {
  const bytes = await readBlob(paths, record.digest);
  const configBytes = await readBlob(paths, record.configDigest);
  if (bytes === undefined || configBytes === undefined) throw missingBlob(record);
  const parsed = parseManifest(bytes, undefined, record.reference);
  if (parsed.kind !== 'manifest') throw missingBlob(record);
  const layers = layerInfos(parsed.manifest, record.reference);
  for (const l of layers) {
    if ((await readBlobSize(paths, l.digest)) !== l.size) throw missingBlob(record);
  }
  const ref = parseReference(record.reference);
  return {
    reference: record.reference,
    pinnedReference: pinned(ref, record.digest),
    resolvedDigest: record.digest,
    ...(record.indexDigest ? { indexDigest: record.indexDigest } : {}),
    platform: record.platform,
    manifestMediaType: parsed.mediaType,
    config: parseConfig(configBytes, record.reference),
    configDigest: record.configDigest,
    layers: layers.map((l) => ({ ...l, path: blobPath(paths, l.digest) })),
    totalSize: record.size,
    downloadedBytes: 0,
  };
}

async function readBlobSize(paths: StatePaths, digest: string): Promise<number | undefined> {
  return stat(blobPath(paths, digest)).then(
    (s) => s.size,
    () => undefined,
  );
}

function missingBlob(record: ImageRecord): MicroagentError {
  return new MicroagentError(
    'IMAGE_NOT_FOUND',
    `image ${record.reference} is recorded but some of its blobs are missing from the cache`,
    { remediation: 'Pull it again.', data: { reference: record.reference, digest: record.digest } },
  );
}

/** A manifest by tag or digest: from the cache when pinned and cached, else the registry. */
async function getManifest(
  paths: StatePaths,
  client: RegistryClient,
  ref: ImageReference,
  tagOrDigest: string,
  what: string,
): Promise<{ bytes: Buffer; contentType: string | undefined; digest: string }> {
  if (tagOrDigest.startsWith('sha256:')) {
    const cached = await readBlob(paths, tagOrDigest);
    if (cached) return { bytes: cached, contentType: undefined, digest: tagOrDigest };
  }
  return client.getManifest(ref.repository, tagOrDigest, what);
}

function parseConfig(bytes: Buffer | undefined, what: string): ImageConfig {
  if (bytes === undefined) throw new MicroagentError('INTERNAL', `config blob of ${what} vanished`);
  const parsed = ImageConfigSchema.safeParse(JSON.parse(bytes.toString('utf8')));
  if (!parsed.success) {
    throw new MicroagentError(
      'REGISTRY_ERROR',
      `the image config of ${what} is malformed: ${parsed.error.message}`,
    );
  }
  return parsed.data;
}

function configPlatform(config: ImageConfig): Platform {
  return {
    os: config.os ?? 'linux',
    architecture: config.architecture ?? 'amd64',
    ...(config.variant ? { variant: config.variant } : {}),
  };
}

function samePlatform(have: Platform, want: Platform): boolean {
  if (have.os !== want.os || have.architecture !== want.architecture) return false;
  if (want.variant === undefined) return true;
  const v = (p: Platform): string | undefined =>
    p.variant ?? (p.architecture === 'arm64' ? 'v8' : undefined);
  return v(have) === v(want);
}

function pinned(ref: ImageReference, digest: string): string {
  return `${ref.registry}/${ref.repository}@${digest}`;
}

/** Runs fn over items with at most `limit` in flight; the first failure rejects (after the rest settle). */
async function parallel<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure) throw failure.err;
}
