/**
 * A Docker Registry v2 / OCI distribution client over the global fetch
 * (undici): anonymous, basic and bearer-token auth, manifest fetch with
 * digest verification, blob requests with Range, bounded retries with
 * backoff, and redirects followed by hand so that the Authorization header
 * never travels to another host (blob storage behind a 307).
 */
import { createHash } from 'node:crypto';
import { MicroagentError } from '../errors.js';
import { sleep } from '../proc/spawn.js';
import {
  describeSource,
  resolveCredentials,
  type Credentials,
  type ResolvedCredentials,
} from './auth.js';
import { MANIFEST_ACCEPT } from './manifest.js';
import { apiHost, hostOnly, isDigest, isLoopbackRegistry } from './reference.js';

export interface RetryOptions {
  /** Attempts in all, for 5xx, 429 and network errors (default 4). */
  tries?: number;
  /** First backoff in ms; doubles each time, plus up to 50% jitter (default 250). */
  baseDelayMs?: number;
}

export interface RegistryClientOptions {
  /** Hosts (`host[:port]`) that may be reached over plain http. Loopback always may. */
  insecureRegistries?: readonly string[];
  /** Environment for the credential lookup (DOCKER_CONFIG, HOME, PATH). */
  env?: NodeJS.ProcessEnv;
  retry?: RetryOptions;
  signal?: AbortSignal;
}

export interface FetchedManifest {
  bytes: Buffer;
  /** Content-Type header, if any. */
  contentType: string | undefined;
  /** sha256 of the bytes, verified against Docker-Content-Digest and a requested digest. */
  digest: string;
}

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_REDIRECTS = 5;

interface Challenge {
  scheme: 'basic' | 'bearer';
  params: Record<string, string>;
}

/** Talks to one registry. Tokens are cached per scope for the client's lifetime. */
export class RegistryClient {
  /** `http://127.0.0.1:5000` or `https://registry-1.docker.io`. */
  readonly baseUrl: string;
  private readonly insecure: readonly string[];
  private readonly tries: number;
  private readonly baseDelayMs: number;
  private creds: Promise<ResolvedCredentials> | undefined;
  private scheme: 'basic' | 'bearer' | undefined;
  private bearerChallenge: Record<string, string> | undefined;
  private readonly tokens = new Map<string, { token: string; expiresAt: number }>();

  constructor(
    readonly registry: string,
    private readonly options: RegistryClientOptions = {},
  ) {
    this.insecure = options.insecureRegistries ?? [];
    const plain = isLoopbackRegistry(registry) || this.insecure.includes(registry);
    this.baseUrl = `${plain ? 'http' : 'https'}://${apiHost(registry)}`;
    this.tries = Math.max(1, options.retry?.tries ?? 4);
    this.baseDelayMs = options.retry?.baseDelayMs ?? 250;
  }

  /**
   * GETs a manifest by tag or digest and verifies its digest. 404 →
   * IMAGE_NOT_FOUND naming `what` (the reference the user gave).
   */
  async getManifest(repository: string, reference: string, what: string): Promise<FetchedManifest> {
    const res = await this.request(`/v2/${repository}/manifests/${reference}`, repository, {
      accept: MANIFEST_ACCEPT,
    });
    if (res.status === 404) {
      const detail = await errorDetail(res);
      throw new MicroagentError(
        'IMAGE_NOT_FOUND',
        `image ${what} not found${detail ? `: ${detail}` : ''}`,
        {
          data: { reference: what, registry: this.registry, status: 404 },
        },
      );
    }
    if (res.status !== 200) throw await this.unexpected(res, `manifest of ${what}`);
    const bytes = await readCapped(res, MAX_MANIFEST_BYTES, `manifest of ${what}`);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const header = res.headers.get('docker-content-digest') ?? undefined;
    if (header !== undefined && header.startsWith('sha256:') && header !== digest) {
      throw new MicroagentError(
        'MANIFEST_DIGEST_MISMATCH',
        `the manifest of ${what} has digest ${digest}, but the registry's Docker-Content-Digest says ${header}`,
        { data: { reference: what, computed: digest, header } },
      );
    }
    if (isDigest(reference) && reference !== digest) {
      throw new MicroagentError(
        'MANIFEST_DIGEST_MISMATCH',
        `asked for manifest ${reference} of ${what}, but the content served has digest ${digest}`,
        { data: { reference: what, expected: reference, computed: digest } },
      );
    }
    return { bytes, contentType: res.headers.get('content-type') ?? undefined, digest };
  }

  /**
   * Starts a blob GET (from byte `offset` with a Range header when > 0).
   * The caller reads and verifies the body; the status is 200, 206 or 416.
   */
  async openBlob(repository: string, digest: string, offset = 0): Promise<Response> {
    const res = await this.request(`/v2/${repository}/blobs/${digest}`, repository, {
      ...(offset > 0 ? { range: `bytes=${offset}-` } : {}),
    });
    if (res.status === 200 || res.status === 206 || res.status === 416) return res;
    if (res.status === 404) {
      const detail = await errorDetail(res);
      throw new MicroagentError(
        'REGISTRY_ERROR',
        `registry ${this.registry} has no blob ${digest} in ${repository} although a manifest lists it${detail ? `: ${detail}` : ''}`,
        { data: { registry: this.registry, repository, digest, status: 404 } },
      );
    }
    throw await this.unexpected(res, `blob ${digest} of ${repository}`);
  }

  /** Sleeps for the backoff before attempt `attempt` (1-based retry number). */
  async backoff(attempt: number): Promise<void> {
    const base = this.baseDelayMs * 2 ** (attempt - 1);
    await sleep(base + Math.random() * base * 0.5);
  }

  get maxTries(): number {
    return this.tries;
  }

  /**
   * One logical request: auth (401 → challenge → credentials/token → retry
   * once), redirects, and retries with backoff for 5xx, 429 and network
   * errors. Returns the final response (any status but 401/403/5xx).
   */
  private async request(
    path: string,
    repository: string,
    h: { accept?: string; range?: string },
  ): Promise<Response> {
    const url = this.baseUrl + path;
    for (let attempt = 1; ; attempt++) {
      let res: Response;
      try {
        res = await this.authorized(url, repository, h);
      } catch (err) {
        if (isNetworkError(err) && attempt < this.tries) {
          await this.backoff(attempt);
          continue;
        }
        if (isNetworkError(err)) throw this.unreachable(err, attempt);
        throw err;
      }
      if (res.status >= 500 || res.status === 429) {
        if (attempt < this.tries) {
          await drain(res);
          await this.backoff(attempt);
          continue;
        }
        const detail = await errorDetail(res);
        throw new MicroagentError(
          'REGISTRY_UNREACHABLE',
          `registry ${this.registry} answered ${res.status} to ${path} ${attempt} times${detail ? `: ${detail}` : ''}`,
          { data: { registry: this.registry, status: res.status, attempts: attempt } },
        );
      }
      return res;
    }
  }

  private async authorized(
    url: string,
    repository: string,
    h: { accept?: string; range?: string },
  ): Promise<Response> {
    const headers: Record<string, string> = {};
    if (h.accept) headers.accept = h.accept;
    if (h.range) headers.range = h.range;
    let auth = await this.cachedAuthorization(repository);
    let res = await this.follow(url, headers, auth);
    if (res.status === 401) {
      const challenge = parseChallenge(res.headers.get('www-authenticate'));
      await drain(res);
      auth = await this.authenticate(challenge, repository);
      res = await this.follow(url, headers, auth);
    }
    if (res.status === 401 || res.status === 403) {
      const detail = await errorDetail(res);
      const withCreds = auth !== undefined && (await this.credentials()).credentials !== undefined;
      throw await this.authFailed(
        `registry ${this.registry} refused ${withCreds ? 'the credentials' : 'anonymous access'} for ${repository} (HTTP ${res.status}${detail ? `: ${detail}` : ''})` +
          (withCreds ? '' : '; the repository may not exist, or it needs credentials'),
      );
    }
    return res;
  }

  /** The Authorization header to send up front, once a challenge has been seen. */
  private async cachedAuthorization(repository: string): Promise<string | undefined> {
    if (this.scheme === 'basic') {
      const c = (await this.credentials()).credentials;
      return c?.kind === 'basic' ? basicHeader(c) : undefined;
    }
    if (this.scheme === 'bearer' && this.bearerChallenge) {
      const key = tokenKey(this.bearerChallenge, pullScope(repository));
      const t = this.tokens.get(key);
      if (t && t.expiresAt > Date.now()) return `Bearer ${t.token}`;
      return this.fetchToken(this.bearerChallenge, repository);
    }
    return undefined;
  }

  private async authenticate(
    challenge: Challenge | undefined,
    repository: string,
  ): Promise<string> {
    if (challenge === undefined) {
      throw await this.authFailed(
        `registry ${this.registry} answered 401 without a usable WWW-Authenticate challenge`,
      );
    }
    if (challenge.scheme === 'basic') {
      const c = (await this.credentials()).credentials;
      if (c?.kind !== 'basic') {
        throw await this.authFailed(`registry ${this.registry} requires a user name and password`);
      }
      this.scheme = 'basic';
      return basicHeader(c);
    }
    this.scheme = 'bearer';
    this.bearerChallenge = challenge.params;
    return this.fetchToken(challenge.params, repository);
  }

  /** Gets (and caches) a bearer token for `repository:<repo>:pull` from the realm. */
  private async fetchToken(params: Record<string, string>, repository: string): Promise<string> {
    const realm = params.realm;
    if (!realm)
      throw await this.authFailed(
        `registry ${this.registry} sent a Bearer challenge without realm`,
      );
    const scope = pullScope(repository);
    const key = tokenKey(params, scope);
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm);
    } catch {
      throw await this.authFailed(
        `registry ${this.registry} sent an invalid token realm "${realm}"`,
      );
    }
    this.checkTransport(realmUrl, 'token service');
    const { credentials } = await this.credentials();
    const started = Date.now();
    let res: Response;
    try {
      if (credentials?.kind === 'identityToken') {
        // OAuth2 refresh-token grant (what `docker login` stores as identitytoken).
        const body = new URLSearchParams({
          grant_type: 'refresh_token',
          refresh_token: credentials.token,
          client_id: 'microagent',
          scope,
          ...(params.service ? { service: params.service } : {}),
        });
        res = await fetch(realmUrl, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body,
          redirect: 'error',
          signal: this.options.signal,
        });
      } else {
        if (params.service) realmUrl.searchParams.set('service', params.service);
        realmUrl.searchParams.set('scope', scope);
        res = await fetch(realmUrl, {
          headers: credentials?.kind === 'basic' ? { authorization: basicHeader(credentials) } : {},
          redirect: 'error',
          signal: this.options.signal,
        });
      }
    } catch (err) {
      if (isNetworkError(err)) throw this.unreachable(err, 1, `token service ${realmUrl.origin}`);
      throw err;
    }
    if (res.status === 401 || res.status === 403) {
      await drain(res);
      throw await this.authFailed(
        `the token service ${realmUrl.origin} of registry ${this.registry} refused ${credentials ? 'the credentials' : 'an anonymous token'} (HTTP ${res.status})`,
      );
    }
    if (res.status !== 200) throw await this.unexpected(res, `token from ${realmUrl.origin}`);
    let json: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      json = JSON.parse(
        (await readCapped(res, 1024 * 1024, 'token')).toString('utf8'),
      ) as typeof json;
    } catch {
      throw new MicroagentError(
        'REGISTRY_ERROR',
        `the token service ${realmUrl.origin} did not answer JSON`,
        {
          data: { registry: this.registry },
        },
      );
    }
    const token = typeof json.token === 'string' ? json.token : json.access_token;
    if (typeof token !== 'string' || token === '') {
      throw new MicroagentError(
        'REGISTRY_ERROR',
        `the token service ${realmUrl.origin} sent no token`,
        {
          data: { registry: this.registry },
        },
      );
    }
    // The spec's default lifetime is 60 s; renew 10 s early.
    const life = typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : 60;
    this.tokens.set(key, { token, expiresAt: started + Math.max(1, life - 10) * 1000 });
    return `Bearer ${token}`;
  }

  /**
   * fetch with redirects followed by hand: the Authorization header goes
   * only to the registry's own origin, and each hop passes the transport check.
   */
  private async follow(
    url: string,
    headers: Record<string, string>,
    authorization: string | undefined,
  ): Promise<Response> {
    const origin = new URL(url).origin;
    let current = new URL(url);
    for (let hop = 0; ; hop++) {
      this.checkTransport(current, 'registry');
      const sendAuth = authorization !== undefined && current.origin === origin;
      const res = await fetch(current, {
        headers: sendAuth ? { ...headers, authorization } : headers,
        redirect: 'manual',
        signal: this.options.signal,
      });
      if (![301, 302, 303, 307, 308].includes(res.status)) return res;
      const location = res.headers.get('location');
      await drain(res);
      if (!location || hop >= MAX_REDIRECTS) {
        throw new MicroagentError(
          'REGISTRY_ERROR',
          `registry ${this.registry} redirected ${location ? `more than ${MAX_REDIRECTS} times` : 'without a Location'} for ${url}`,
          { data: { registry: this.registry } },
        );
      }
      current = new URL(location, current);
    }
  }

  /** Plain http only to loopback hosts or hosts listed as insecure. */
  private checkTransport(url: URL, what: string): void {
    if (url.protocol === 'https:') return;
    const hostPort = url.host;
    if (
      url.protocol === 'http:' &&
      (isLoopbackRegistry(hostPort) ||
        this.insecure.includes(hostPort) ||
        this.insecure.includes(hostOnly(hostPort)))
    ) {
      return;
    }
    throw new MicroagentError(
      'INSECURE_REGISTRY_REFUSED',
      `refusing ${url.protocol.replace(':', '')} to ${what} ${url.host} (for registry ${this.registry}): only https is allowed for hosts that are not loopback or listed in insecureRegistries`,
      { data: { registry: this.registry, url: `${url.protocol}//${url.host}` } },
    );
  }

  private credentials(): Promise<ResolvedCredentials> {
    this.creds ??= resolveCredentials(this.registry, this.options.env ?? process.env);
    return this.creds;
  }

  private async authFailed(message: string): Promise<MicroagentError> {
    const { source } = await this.credentials().catch((): ResolvedCredentials => ({
      source: { files: ['(unreadable Docker config)'] },
    }));
    return new MicroagentError('REGISTRY_AUTH_FAILED', `${message}; ${describeSource(source)}`, {
      data: {
        registry: this.registry,
        configFiles: source.files,
        ...(source.helper ? { helper: source.helper } : {}),
      },
    });
  }

  private unreachable(
    err: unknown,
    attempts: number,
    what = `registry ${this.registry}`,
  ): MicroagentError {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (err as Error).message;
    return new MicroagentError(
      'REGISTRY_UNREACHABLE',
      `cannot reach ${what} at ${this.baseUrl}: ${why}${attempts > 1 ? ` (${attempts} attempts)` : ''}`,
      { data: { registry: this.registry, attempts }, cause: err },
    );
  }

  private async unexpected(res: Response, what: string): Promise<MicroagentError> {
    const detail = await errorDetail(res);
    return new MicroagentError(
      'REGISTRY_ERROR',
      `registry ${this.registry} answered ${res.status} for the ${what}${detail ? `: ${detail}` : ''}`,
      { data: { registry: this.registry, status: res.status } },
    );
  }
}

function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

function tokenKey(params: Record<string, string>, scope: string): string {
  return `${params.realm ?? ''} ${params.service ?? ''} ${scope}`;
}

function basicHeader(c: Extract<Credentials, { kind: 'basic' }>): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

/** Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`. */
export function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'basic' && scheme !== 'bearer') return undefined;
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g;
  for (let p = re.exec(m[2]!); p; p = re.exec(m[2]!)) {
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  }
  return { scheme, params };
}

/** Network-level failures (refused, reset, DNS, TLS, body cut short) are worth a retry. */
export function isNetworkError(err: unknown): boolean {
  if (err instanceof MicroagentError) return false;
  const e = err as { name?: string; message?: string; code?: string; cause?: unknown } | undefined;
  if (e === undefined || e === null || e.name === 'AbortError') return false;
  // undici: TypeError('fetch failed', {cause}) before a response, 'terminated' mid-body.
  if (err instanceof TypeError && /^(fetch failed|terminated)/.test(e.message ?? '')) return true;
  const code = e.code ?? (e.cause as { code?: string } | undefined)?.code;
  return (
    typeof code === 'string' &&
    /^(ECONNRESET|ECONNREFUSED|ECONNABORTED|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|UND_ERR_\w+)$/.test(
      code,
    )
  );
}

async function drain(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // already consumed or errored
  }
}

async function readCapped(res: Response, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  if (res.body) {
    for await (const chunk of res.body) {
      size += chunk.byteLength;
      if (size > max) {
        await drain(res);
        throw new MicroagentError('REGISTRY_ERROR', `the ${what} is larger than ${max} bytes`);
      }
      chunks.push(Buffer.from(chunk));
    }
  }
  return Buffer.concat(chunks);
}

/** The registry's `{"errors":[{code,message}]}` body as one line (bounded), or ''. */
async function errorDetail(res: Response): Promise<string> {
  let text: string;
  try {
    text = (await readCapped(res, 64 * 1024, 'error body')).toString('utf8');
  } catch {
    return '';
  }
  try {
    const body = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    if (Array.isArray(body.errors) && body.errors.length > 0) {
      return body.errors.map((e) => [e.code, e.message].filter(Boolean).join(' ')).join('; ');
    }
  } catch {
    // not JSON
  }
  return text.trim().slice(0, 200);
}
