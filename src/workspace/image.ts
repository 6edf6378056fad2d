/**
 * Image resolution for run and create: the embedded default image, or an OCI
 * image pulled from a registry and built into a cached ext4 baseline. The
 * image's config (Entrypoint, Cmd, Env, WorkingDir, User) comes along.
 */
import { MicroagentError } from '../errors.js';
import { ExecUserSchema } from '../guest/protocol.js';
import { ensureDefaultImage } from '../image/default-image.js';
import type { PullEvent } from '../oci/index.js';
import type { StatePaths } from '../paths.js';

export const DEFAULT_IMAGE = 'default';

export interface ImageDefaults {
  entrypoint?: string[];
  cmd?: string[];
  env: Record<string, string>;
  workingDir?: string;
  user?: string;
}

export interface ResolvedImage {
  /** What the caller asked for ("default" or a reference). */
  ref: string;
  /** Canonical reference and manifest digest of an OCI image. */
  reference?: string;
  digest?: string;
  /** Baseline cache key and the baseline ext4 (a read-only backing file). */
  key: string;
  baseline: string;
  /** SHA-256 of the guest init injected into the baseline. */
  initSha256: string;
  defaults: ImageDefaults;
}

export interface ResolveImageOptions {
  platform?: string;
  insecureRegistries?: string[];
  allowGuestSetuid?: boolean;
  sizeBytes?: number;
  onPull?: (event: PullEvent) => void;
  onBuild?: (phase: string) => void;
}

/**
 * Resolves ref to a bootable baseline. A reference the local image store
 * already has is used as is (like `docker run`); `image pull` refreshes it.
 */
export async function resolveImage(
  paths: StatePaths,
  ref: string,
  options: ResolveImageOptions = {},
): Promise<ResolvedImage> {
  if (ref === DEFAULT_IMAGE) {
    const image = await ensureDefaultImage(paths);
    return {
      ref,
      key: image.key,
      baseline: image.path,
      initSha256: image.initSha256,
      defaults: { env: {} },
    };
  }
  // Loaded on demand: the registry client and the rootfs builder are not
  // needed (nor their start-up cost paid) for the embedded default image.
  const [{ pullImage }, { ensureImageBaseline }] = await Promise.all([
    import('../oci/index.js'),
    import('../rootfs/baseline.js'),
  ]);
  const pulled = await pullImage(paths, ref, {
    policy: 'missing',
    ...(options.platform ? { platform: options.platform } : {}),
    ...(options.insecureRegistries ? { insecureRegistries: options.insecureRegistries } : {}),
    ...(options.onPull ? { onProgress: options.onPull } : {}),
  });
  options.onBuild?.('rootfs');
  const baseline = await ensureImageBaseline(paths, {
    manifestDigest: pulled.resolvedDigest,
    layers: pulled.layers.map((l) => ({ path: l.path, mediaType: l.mediaType, digest: l.digest })),
    ...(options.allowGuestSetuid ? { allowGuestSetuid: true } : {}),
    ...(options.sizeBytes ? { sizeBytes: options.sizeBytes } : {}),
  });
  const c = pulled.config.config ?? {};
  return {
    ref,
    reference: pulled.reference,
    digest: pulled.resolvedDigest,
    key: baseline.key,
    baseline: baseline.path,
    initSha256: baseline.record.initSha256,
    defaults: {
      ...(c.Entrypoint && c.Entrypoint.length > 0 ? { entrypoint: c.Entrypoint } : {}),
      ...(c.Cmd && c.Cmd.length > 0 ? { cmd: c.Cmd } : {}),
      env: envFromList(c.Env ?? []),
      ...(c.WorkingDir ? { workingDir: c.WorkingDir } : {}),
      ...(c.User ? { user: c.User } : {}),
    },
  };
}

/**
 * The user a command runs as: the caller's, else the image's `User`, else
 * none (root). INVALID_ARGUMENT when it is not an OCI `User` form (`name`,
 * `uid`, `name:group`, `uid:gid`, …); the guest resolves the names.
 */
export function execUserFor(
  defaults: { user?: string | undefined } | undefined,
  user?: string,
): string | undefined {
  const chosen = user ?? defaults?.user;
  if (chosen === undefined || chosen === '') return undefined;
  if (!ExecUserSchema.safeParse(chosen).success) {
    throw new MicroagentError('INVALID_ARGUMENT', `invalid user "${chosen}"`, {
      remediation: 'Give USER or USER:GROUP (a name or a numeric id each), e.g. 1000:1000.',
      data: { user: chosen, source: user !== undefined ? 'argument' : 'image' },
    });
  }
  return chosen;
}

/** "K=V" entries (the image config's Env) as a map; malformed ones are dropped. */
export function envFromList(list: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const item of list) {
    const eq = item.indexOf('=');
    if (eq > 0) env[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return env;
}

/**
 * The argv to run: like `docker run`, a given command replaces the image's
 * Cmd and keeps its Entrypoint; no command runs Entrypoint + Cmd.
 */
export function commandFor(defaults: ImageDefaults, command: readonly string[]): string[] {
  const entrypoint = defaults.entrypoint ?? [];
  const rest = command.length > 0 ? command : (defaults.cmd ?? []);
  return [...entrypoint, ...rest];
}
