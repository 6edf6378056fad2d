/**
 * Image references, parsed and normalised the way Docker does:
 * `ubuntu` → `docker.io/library/ubuntu:latest`, `user/repo` → docker.io,
 * `host:5000/x/y:v1`, `name@sha256:…`, `name:tag@sha256:…`. The grammar is
 * the distribution project's (github.com/distribution/reference).
 */
import { MicroagentError } from '../errors.js';

export interface ImageReference {
  /** Registry host as users write it, with port: `docker.io`, `127.0.0.1:5000`. */
  registry: string;
  /** Repository path: `library/ubuntu`, `x/y`. */
  repository: string;
  /** Tag; `latest` when neither tag nor digest was given. */
  tag?: string;
  /** `sha256:<64 hex>` when pinned. */
  digest?: string;
}

export const DOCKER_HUB = 'docker.io';
/** The API host behind docker.io. */
export const DOCKER_HUB_API = 'registry-1.docker.io';

const ALNUM = '[a-z0-9]+';
const SEPARATOR = '(?:[._]|__|-+)';
const PATH_COMPONENT = `${ALNUM}(?:${SEPARATOR}${ALNUM})*`;
const PATH_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_RE = new RegExp(
  `^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`,
);
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
const ANY_DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
const NAME_MAX = 255;

function invalid(ref: string, why: string): MicroagentError {
  return new MicroagentError('INVALID_ARGUMENT', `invalid image reference "${ref}": ${why}`, {
    remediation:
      'Write it as [registry[:port]/]repository[:tag][@sha256:<64 hex>], e.g. "ubuntu:24.04" or "127.0.0.1:5000/team/app:v1".',
    data: { reference: ref },
  });
}

/**
 * Parses and normalises an image reference. Throws INVALID_ARGUMENT naming
 * the reference when it does not follow the grammar.
 */
export function parseReference(input: string): ImageReference {
  const ref = input.trim();
  if (ref === '') throw invalid(input, 'it is empty');
  if (/\s/.test(ref)) throw invalid(input, 'it contains white space');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(ref))
    throw invalid(input, 'leave out the URL scheme (no http:// or docker://)');

  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) {
      throw invalid(
        input,
        ANY_DIGEST_RE.test(digest)
          ? `unsupported digest "${digest}" (only sha256 is supported)`
          : `"${digest}" is not a digest (expected sha256:<64 lowercase hex>)`,
      );
    }
  }

  let tag: string | undefined;
  // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
  const slash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) {
      throw invalid(input, `"${tag}" is not a valid tag (letters, digits, "_", ".", "-"; max 128)`);
    }
  }
  if (rest === '') throw invalid(input, 'the repository name is missing');
  if (rest.length > NAME_MAX) throw invalid(input, `the name is longer than ${NAME_MAX}`);

  let registry: string;
  let repository: string;
  const first = rest.indexOf('/');
  const head = first < 0 ? '' : rest.slice(0, first);
  // Docker's rule: the first component is a registry when it has a '.' or a
  // ':' or is "localhost" (or has upper case, which no repository may).
  if (first >= 0 && (/[.:]/.test(head) || head === 'localhost' || head !== head.toLowerCase())) {
    registry = head;
    repository = rest.slice(first + 1);
    if (!DOMAIN_RE.test(registry)) throw invalid(input, `"${registry}" is not a valid registry`);
  } else {
    registry = DOCKER_HUB;
    repository = rest;
  }
  if (registry === 'index.docker.io' || registry === DOCKER_HUB_API) registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (!PATH_RE.test(repository)) {
    throw invalid(
      input,
      `"${repository}" is not a valid repository (lower-case letters, digits and single separators "." "_" "__" "-" between "/"-separated parts)`,
    );
  }
  if (tag === undefined && digest === undefined) tag = 'latest';
  return {
    registry,
    repository,
    ...(tag !== undefined ? { tag } : {}),
    ...(digest ? { digest } : {}),
  };
}

/** The canonical string: `docker.io/library/ubuntu:latest`, `host/x@sha256:…`. */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${
    ref.digest ? `@${ref.digest}` : ''
  }`;
}

/** Normalises a reference string to its canonical form (throws on invalid input). */
export function canonicalReference(input: string): string {
  return formatReference(parseReference(input));
}

/** A reference without a digest can change under you: the registry may move its tag. */
export function isMutable(ref: ImageReference | string): boolean {
  const r = typeof ref === 'string' ? parseReference(ref) : ref;
  return r.digest === undefined;
}

/** The host that serves the registry API (`docker.io` → `registry-1.docker.io`). */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/** True for the host part of 127.0.0.0/8, ::1 and localhost (any port). */
export function isLoopbackRegistry(registry: string): boolean {
  const host = hostOnly(registry);
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** `host:port` → `host`; `[::1]:5000` → `::1`. */
export function hostOnly(registry: string): string {
  if (registry.startsWith('[')) return registry.slice(1, registry.indexOf(']'));
  const colon = registry.lastIndexOf(':');
  return colon >= 0 && registry.indexOf(':') === colon ? registry.slice(0, colon) : registry;
}

/** True when s is a sha256 digest (`sha256:<64 hex>`). */
export function isDigest(s: string): boolean {
  return DIGEST_RE.test(s);
}
