/**
 * Registry credentials from the Docker client config
 * (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): `auths`
 * entries (`auth` base64, `username`+`password`, `identitytoken`),
 * `credHelpers[host]` and `credsStore`. Helpers run as
 * `docker-credential-<name> get` with the server URL on stdin.
 *
 * Secrets never leave this module except inside the returned Credentials
 * object: no message, error or data field carries one.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { MicroagentError } from '../errors.js';
import { run } from '../proc/spawn.js';
import { DOCKER_HUB } from './reference.js';

export type Credentials =
  | { kind: 'basic'; username: string; password: string }
  /** An OAuth2 refresh token (from `docker login` against an identity provider). */
  | { kind: 'identityToken'; username?: string; token: string };

/** Where credentials were looked for, for error messages (never the secrets). */
export interface CredentialSource {
  /** Config files read (or looked for). */
  files: string[];
  /** Credential helper consulted, e.g. `docker-credential-pass`. */
  helper?: string;
  /** Human summary: "helper docker-credential-x", "auths in /root/.docker/config.json". */
  found?: string;
}

export interface ResolvedCredentials {
  credentials?: Credentials;
  source: CredentialSource;
}

const AuthEntrySchema = z
  .object({
    auth: z.string().optional(),
    username: z.string().optional(),
    password: z.string().optional(),
    identitytoken: z.string().optional(),
  })
  .passthrough();

const DockerConfigSchema = z
  .object({
    auths: z.record(AuthEntrySchema).optional(),
    credHelpers: z.record(z.string()).optional(),
    credsStore: z.string().optional(),
  })
  .passthrough();
type DockerConfig = z.infer<typeof DockerConfigSchema>;

/** The config file Docker reads: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DOCKER_CONFIG) return join(env.DOCKER_CONFIG, 'config.json');
  return join(env.HOME || homedir(), '.docker', 'config.json');
}

/** The key under which a registry's server URL is known to Docker tools. */
export function serverUrlFor(registry: string): string {
  return registry === DOCKER_HUB ? 'https://index.docker.io/v1/' : registry;
}

/** Normalises an `auths` key (`https://host/v1/`, `host`, `http://host`) to a host. */
function hostOfKey(key: string): string {
  let k = key.replace(/^[a-z]+:\/\//i, '');
  const slash = k.indexOf('/');
  if (slash >= 0) k = k.slice(0, slash);
  if (k === 'index.docker.io' || k === 'registry-1.docker.io') return DOCKER_HUB;
  return k;
}

/**
 * Finds credentials for a registry host. Order (as Docker): a
 * `credHelpers[host]` helper, else the `credsStore` helper, else the
 * `auths` entry. No credentials → anonymous (credentials undefined).
 */
export async function resolveCredentials(
  registry: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ResolvedCredentials> {
  const file = dockerConfigPath(env);
  const source: CredentialSource = { files: [file] };
  const config = await readDockerConfig(file);
  if (config === undefined) return { source };

  const helperName =
    config.credHelpers?.[registry] ??
    (registry === DOCKER_HUB ? config.credHelpers?.['index.docker.io'] : undefined) ??
    config.credsStore;
  if (helperName) {
    source.helper = `docker-credential-${helperName}`;
    const fromHelper = await runHelper(helperName, serverUrlFor(registry), env);
    if (fromHelper) {
      source.found = `credential helper ${source.helper}`;
      return { credentials: fromHelper, source };
    }
  }

  for (const [key, entry] of Object.entries(config.auths ?? {})) {
    if (hostOfKey(key) !== registry) continue;
    const creds = fromAuthEntry(entry, file, key);
    if (creds) {
      source.found = `"auths" entry "${key}" in ${file}`;
      return { credentials: creds, source };
    }
  }
  return { source };
}

async function readDockerConfig(file: string): Promise<DockerConfig | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return undefined; // no config: anonymous
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new MicroagentError('REGISTRY_AUTH_FAILED', `the Docker config ${file} is not JSON`, {
      remediation: `Fix or remove ${file}.`,
      data: { file },
    });
  }
  const parsed = DockerConfigSchema.safeParse(json);
  if (!parsed.success) {
    throw new MicroagentError('REGISTRY_AUTH_FAILED', `the Docker config ${file} is malformed`, {
      remediation: `Fix or remove ${file}.`,
      data: { file },
    });
  }
  return parsed.data;
}

function fromAuthEntry(
  entry: z.infer<typeof AuthEntrySchema>,
  file: string,
  key: string,
): Credentials | undefined {
  if (entry.identitytoken) {
    return {
      kind: 'identityToken',
      token: entry.identitytoken,
      ...(entry.username ? { username: entry.username } : {}),
    };
  }
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) {
      throw new MicroagentError(
        'REGISTRY_AUTH_FAILED',
        `the "auth" field of "${key}" in ${file} is not base64 of user:password`,
        { remediation: `Run \`docker login\` again or fix ${file}.`, data: { file } },
      );
    }
    return { kind: 'basic', username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (entry.username !== undefined && entry.password !== undefined) {
    return { kind: 'basic', username: entry.username, password: entry.password };
  }
  return undefined;
}

const HelperOutputSchema = z.object({ Username: z.string(), Secret: z.string() }).passthrough();

/** Runs `docker-credential-<name> get`; undefined when it has no entry for the server. */
async function runHelper(
  name: string,
  serverUrl: string,
  env: NodeJS.ProcessEnv,
): Promise<Credentials | undefined> {
  const program = `docker-credential-${name}`;
  const result = await run([program, 'get'], {
    input: serverUrl,
    env,
    timeoutMs: 30_000,
    allowFailure: true,
    maxOutputBytes: 1024 * 1024,
  }).catch((err: unknown) => {
    if (err instanceof MicroagentError && err.code === 'HOST_TOOL_MISSING') {
      throw new MicroagentError(
        'REGISTRY_AUTH_FAILED',
        `the Docker config names credential helper ${program}, but it is not on PATH`,
        { remediation: `Install ${program}, or remove it from the Docker config.`, cause: err },
      );
    }
    throw err;
  });
  const stdout = result.stdout.toString('utf8');
  if (result.exitCode !== 0) {
    // Helpers say "credentials not found" on stdout with exit 1 when they have nothing.
    if (/credentials not found/i.test(stdout + result.stderr.toString('utf8'))) return undefined;
    throw new MicroagentError(
      'REGISTRY_AUTH_FAILED',
      `credential helper ${program} failed for ${serverUrl} (exit ${result.exitCode ?? result.signal})`,
      { data: { helper: program, exitCode: result.exitCode } },
    );
  }
  let parsed: z.infer<typeof HelperOutputSchema>;
  try {
    parsed = HelperOutputSchema.parse(JSON.parse(stdout));
  } catch {
    // Do not echo the output: it may hold the secret.
    throw new MicroagentError(
      'REGISTRY_AUTH_FAILED',
      `credential helper ${program} printed something other than {"Username","Secret"} JSON`,
      { data: { helper: program } },
    );
  }
  if (parsed.Secret === '') return undefined;
  // Docker convention: the user name "<token>" marks an identity (refresh) token.
  if (parsed.Username === '<token>') return { kind: 'identityToken', token: parsed.Secret };
  return { kind: 'basic', username: parsed.Username, password: parsed.Secret };
}

/** Describes where credentials were looked up, for an auth error message. */
export function describeSource(source: CredentialSource): string {
  const parts = [`config file ${source.files.join(', ')}`];
  if (source.helper) parts.push(`credential helper ${source.helper}`);
  return source.found
    ? `used ${source.found}`
    : `no credentials found (looked in ${parts.join(' and ')})`;
}
