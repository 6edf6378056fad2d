/**
 * Test harness for the OCI registry tests: Debian's `docker-registry`
 * (distribution 2.8) on 127.0.0.1 with a free port, optionally behind
 * htpasswd basic auth, and images built with `umoci` and pushed with
 * `skopeo`. Everything goes through src/proc/spawn.ts.
 */
import { openSync, closeSync, existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { run, spawnAttached, stopProcessGroup, sleep } from '../../src/proc/spawn.js';
import { BUILD } from '../../src/paths.js';

/** True when the tools these tests need are installed (else the tests skip, saying why). */
export function registryToolsMissing(): string | false {
  const missing = ['docker-registry', 'umoci', 'skopeo', 'htpasswd'].filter(
    (t) => !['/usr/bin', '/usr/sbin', '/usr/local/bin'].some((d) => existsSync(join(d, t))),
  );
  return missing.length > 0
    ? `needs ${missing.join(', ')} (apt-get install docker-registry umoci skopeo apache2-utils)`
    : false;
}

export interface TestRegistry {
  /** `127.0.0.1:<port>` as used in references. */
  host: string;
  url: string;
  dir: string;
  logFile: string;
  /** Basic-auth user and password when started with auth. */
  auth?: { user: string; password: string };
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (closed again; the registry binds it next). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

/**
 * Starts `docker-registry serve` in dir (config, data, log) and waits for
 * `/v2/` to answer (200, or 401 with auth). Stop it with stop().
 */
export async function startRegistry(
  dir: string,
  options: { auth?: { user: string; password: string } } = {},
): Promise<TestRegistry> {
  await mkdir(dir, { recursive: true });
  let lastErr = '';
  for (let tryNo = 0; tryNo < 3; tryNo++) {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    let authYaml = '';
    if (options.auth) {
      // bcrypt (-B) is the only hash distribution's htpasswd accepts.
      const r = await run(['htpasswd', '-Bbn', options.auth.user, options.auth.password], {
        providedBy: 'apache2-utils',
      });
      await writeFile(join(dir, 'htpasswd'), r.stdout);
      authYaml = `auth:\n  htpasswd:\n    realm: microagent-test\n    path: ${join(dir, 'htpasswd')}\n`;
    }
    const config = join(dir, 'config.yml');
    await writeFile(
      config,
      `version: 0.1
log: {level: warn, fields: {service: registry}}
storage:
  cache: {blobdescriptor: inmemory}
  filesystem: {rootdirectory: ${join(dir, 'data')}}
  delete: {enabled: true}
http:
  addr: ${host}
  headers: {X-Content-Type-Options: [nosniff]}
${authYaml}`,
    );
    const logFile = join(dir, 'registry.log');
    const fd = openSync(logFile, 'a');
    let child: ChildProcess;
    try {
      // Through vmm-exec (PR_SET_PDEATHSIG): the registry dies with this
      // process even when a test or benchmark is killed before its clean-up.
      const program = '/usr/bin/docker-registry';
      const argv = existsSync(BUILD.vmmExec)
        ? [BUILD.vmmExec, program, 'serve', config]
        : ['docker-registry', 'serve', config];
      child = spawnAttached(argv, { stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const url = `http://${host}`;
    const deadline = Date.now() + 10_000;
    let up = false;
    while (Date.now() < deadline && child.exitCode === null) {
      try {
        const res = await fetch(`${url}/v2/`);
        await res.body?.cancel();
        if (res.status === 200 || (options.auth && res.status === 401)) {
          up = true;
          break;
        }
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    if (up) {
      return {
        host,
        url,
        dir,
        logFile,
        ...(options.auth ? { auth: options.auth } : {}),
        stop: () => stopProcessGroup(child, 2000),
      };
    }
    await stopProcessGroup(child, 1000);
    lastErr = (await readFile(logFile, 'utf8').catch(() => '')).slice(-2000);
  }
  throw new Error(`docker-registry did not start: ${lastErr}`);
}

const rootlessFlag = (): string[] => (process.getuid?.() === 0 ? [] : ['--rootless']);

export interface ImageSpec {
  /** Files of the single layer: path → content. */
  files: Record<string, string | Buffer>;
  /** Modes of some of the files (default 0644). */
  modes?: Record<string, number>;
  cmd?: string[];
  entrypoint?: string[];
  env?: string[];
  workdir?: string;
  user?: string;
  architecture?: string;
  os?: string;
}

/**
 * Builds an image `layout:tag` with umoci: one layer holding spec.files
 * plus the config. The layout is created when missing.
 */
export async function buildImage(layout: string, tag: string, spec: ImageSpec): Promise<void> {
  if (!existsSync(join(layout, 'index.json'))) await run(['umoci', 'init', '--layout', layout]);
  await run(['umoci', 'new', '--image', `${layout}:${tag}`]);
  const root = `${layout}.src-${tag}`;
  for (const [p, content] of Object.entries(spec.files)) {
    const full = join(root, p);
    await mkdir(join(full, '..'), { recursive: true });
    await writeFile(full, content);
    const mode = spec.modes?.[p];
    if (mode !== undefined) await chmod(full, mode);
  }
  await run(['umoci', 'insert', ...rootlessFlag(), '--image', `${layout}:${tag}`, root, '/']);
  const args = ['umoci', 'config', '--image', `${layout}:${tag}`, '--author=microagent-test'];
  for (const c of spec.cmd ?? []) args.push(`--config.cmd=${c}`);
  for (const e of spec.entrypoint ?? []) args.push(`--config.entrypoint=${e}`);
  for (const e of spec.env ?? []) args.push(`--config.env=${e}`);
  if (spec.workdir) args.push(`--config.workingdir=${spec.workdir}`);
  if (spec.user) args.push(`--config.user=${spec.user}`);
  if (spec.architecture) args.push(`--architecture=${spec.architecture}`);
  if (spec.os) args.push(`--os=${spec.os}`);
  await run(args);
}

export interface PushOptions {
  /** `v2s2` pushes a Docker schema 2 manifest (gzip layers). */
  format?: 'oci' | 'v2s2';
  /** Recompress layers (e.g. zstd). */
  compress?: 'gzip' | 'zstd';
  /** Copy every image of an index (`--all`). */
  all?: boolean;
  /** `user:password` for the destination. */
  creds?: string;
}

/** `skopeo copy oci:<layout>:<tag> docker://<dest>` over plain http. */
export async function pushImage(
  layout: string,
  tag: string,
  dest: string,
  options: PushOptions = {},
): Promise<void> {
  const args = ['skopeo', 'copy', '--dest-tls-verify=false'];
  if (options.format) args.push('--format', options.format);
  if (options.compress) args.push('--dest-compress-format', options.compress);
  if (options.all) args.push('--all');
  if (options.creds) args.push('--dest-creds', options.creds);
  args.push(`oci:${layout}:${tag}`, `docker://${dest}`);
  await run(args, { timeoutMs: 120_000, providedBy: 'skopeo' });
}

interface LayoutIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: {
    mediaType: string;
    digest: string;
    size: number;
    annotations?: Record<string, string>;
    platform?: { os: string; architecture: string; variant?: string };
  }[];
}

/**
 * Assembles an image index `layout:tag` from images already in the layout
 * (by tag), each with its platform, so `skopeo copy --all` pushes a
 * multi-platform image.
 */
export async function buildIndex(
  layout: string,
  tag: string,
  entries: { tag: string; platform: { os: string; architecture: string; variant?: string } }[],
): Promise<string> {
  const indexPath = join(layout, 'index.json');
  const top = JSON.parse(await readFile(indexPath, 'utf8')) as LayoutIndex;
  const manifests = entries.map((e) => {
    const d = top.manifests.find(
      (m) => m.annotations?.['org.opencontainers.image.ref.name'] === e.tag,
    );
    if (!d) throw new Error(`no tag ${e.tag} in ${layout}`);
    return { mediaType: d.mediaType, digest: d.digest, size: d.size, platform: e.platform };
  });
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests,
    }),
  );
  const hex = createHash('sha256').update(bytes).digest('hex');
  await writeFile(join(layout, 'blobs', 'sha256', hex), bytes);
  top.manifests.push({
    mediaType: 'application/vnd.oci.image.index.v1+json',
    digest: `sha256:${hex}`,
    size: bytes.length,
    annotations: { 'org.opencontainers.image.ref.name': tag },
  });
  await writeFile(indexPath, JSON.stringify(top));
  return `sha256:${hex}`;
}

/** The digest of the manifest (or index) a tag names in the registry. */
export async function remoteDigest(reg: TestRegistry, repo: string, tag: string): Promise<string> {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, {
    method: 'HEAD',
    headers: {
      accept:
        'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json',
      ...(reg.auth
        ? {
            authorization: `Basic ${Buffer.from(`${reg.auth.user}:${reg.auth.password}`).toString('base64')}`,
          }
        : {}),
    },
  });
  const d = res.headers.get('docker-content-digest');
  if (!d) throw new Error(`no digest for ${repo}:${tag} (${res.status})`);
  return d;
}
