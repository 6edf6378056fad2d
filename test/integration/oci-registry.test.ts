/**
 * Pulls from a real registry (Debian's docker-registry on 127.0.0.1) with
 * images built by umoci and pushed by skopeo. Failure modes the real
 * registry cannot produce (bearer tokens, redirects to blob storage,
 * corrupted or cut-off blobs, ignored Range) come from a small HTTP proxy
 * in front of it, written here.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, zstdDecompressSync } from 'node:zlib';
import { isMicroagentError, type ErrorCode } from '../../src/errors.js';
import { blobPath, listBlobs } from '../../src/oci/blobs.js';
import { listImages, pruneImages, removeImage, tagImage, getImage } from '../../src/oci/images.js';
import {
  loadPulledImage,
  pullImage,
  type PullEvent,
  type PullOptions,
} from '../../src/oci/pull.js';
import { PACKAGE_ROOT, StatePaths } from '../../src/paths.js';
import { run } from '../../src/proc/spawn.js';
import {
  buildImage,
  buildIndex,
  pushImage,
  registryToolsMissing,
  remoteDigest,
  startRegistry,
  type TestRegistry,
} from '../support/registry.js';

const skip = registryToolsMissing();
const FAST: PullOptions['retry'] = { tries: 3, baseDelayMs: 10 };
const BIG = 8 * 1024 * 1024;

function code(c: ErrorCode, ...mentions: string[]): (e: unknown) => boolean {
  return (e) => {
    assert.ok(isMicroagentError(e), `expected a MicroagentError, got ${String(e)}`);
    assert.equal(e.code, c, e.message);
    for (const m of mentions)
      assert.ok(e.message.includes(m), `"${e.message}" should mention ${m}`);
    return true;
  };
}

interface Behavior {
  /** Require bearer tokens from /token (optionally with basic creds). */
  bearer?: { user?: string; password?: string; realm?: string };
  /** 307 blob GETs to this origin (the storage server). */
  redirectBlobsTo?: string;
  /** Flip a byte of this blob. */
  corrupt?: string;
  /** Cut this blob off after afterBytes, `times` times. */
  cut?: { digest: string; afterBytes: number; times: number };
  /** Drop the Range header (serve the whole blob with 200). */
  ignoreRange?: boolean;
  /** Send this blob slowly (256 KiB per 15 ms). */
  slow?: string;
  /** Answer the next N /v2/ requests with 503. */
  fail?: number;
}

interface LogEntry {
  path: string;
  range?: string;
  auth?: string;
  status: number;
}

/** An HTTP proxy in front of a registry, with switchable misbehaviour. */
class Proxy {
  server!: Server;
  host = '';
  behavior: Behavior = {};
  log: LogEntry[] = [];
  tokenRequests = 0;
  private issued = new Set<string>();

  constructor(private readonly upstream: () => string) {}

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch(() => res.destroy());
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.host = `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  reset(b: Behavior = {}): void {
    this.behavior = b;
    this.log = [];
    this.tokenRequests = 0;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  blobGets(digest: string): LogEntry[] {
    return this.log.filter((l) => l.path.endsWith(`/blobs/${digest}`));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const b = this.behavior;
    const entry: LogEntry = {
      path: url.split('?')[0]!,
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers.authorization ? { auth: req.headers.authorization } : {}),
      status: 0,
    };
    this.log.push(entry);
    if (url.startsWith('/token')) {
      this.tokenRequests++;
      const want = b.bearer?.user
        ? `Basic ${Buffer.from(`${b.bearer.user}:${b.bearer.password}`).toString('base64')}`
        : undefined;
      if (want !== undefined && req.headers.authorization !== want) {
        entry.status = 401;
        res.writeHead(401).end('{"details":"bad credentials"}');
        return;
      }
      const token = `tok-${randomBytes(6).toString('hex')}`;
      this.issued.add(token);
      entry.status = 200;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token, expires_in: 300 }));
      return;
    }
    if (url.startsWith('/v2/') && (b.fail ?? 0) > 0) {
      b.fail!--;
      entry.status = 503;
      res.writeHead(503).end('{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}');
      return;
    }
    const storage = url.startsWith('/storage/');
    const path = storage ? url.slice('/storage'.length) : url;
    if (!storage && b.bearer) {
      const auth = req.headers.authorization ?? '';
      if (!auth.startsWith('Bearer ') || !this.issued.has(auth.slice(7))) {
        const repo = /^\/v2\/(.+)\/(manifests|blobs)\//.exec(path)?.[1] ?? '';
        const realm = b.bearer.realm ?? `http://${this.host}/token`;
        entry.status = 401;
        res.writeHead(401, {
          'www-authenticate': `Bearer realm="${realm}",service="proxy",scope="repository:${repo}:pull"`,
        });
        res.end('{"errors":[{"code":"UNAUTHORIZED"}]}');
        return;
      }
    }
    const digest = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(path)?.[1];
    if (!storage && digest && b.redirectBlobsTo) {
      entry.status = 307;
      res.writeHead(307, { location: `${b.redirectBlobsTo}/storage${path}` }).end();
      return;
    }
    const headers: Record<string, string> = {};
    if (req.headers.accept) headers.accept = req.headers.accept;
    if (req.headers.range && !b.ignoreRange) headers.range = req.headers.range;
    const up = await fetch(this.upstream() + path, { method: req.method ?? 'GET', headers });
    const out: Record<string, string> = {};
    for (const h of [
      'content-type',
      'docker-content-digest',
      'content-length',
      'content-range',
      'accept-ranges',
    ]) {
      const v = up.headers.get(h);
      if (v !== null) out[h] = v;
    }
    entry.status = up.status;
    const body = Buffer.from(await up.arrayBuffer());
    res.writeHead(up.status, out);
    if (digest && digest === b.corrupt && body.length > 0) {
      body[body.length - 1] = body[body.length - 1]! ^ 0xff;
    }
    if (digest && b.cut && b.cut.digest === digest && b.cut.times > 0 && up.status === 200) {
      b.cut.times--;
      res.write(body.subarray(0, b.cut.afterBytes));
      await new Promise((r) => setTimeout(r, 20));
      res.destroy();
      return;
    }
    if (digest && digest === b.slow) {
      for (let o = 0; o < body.length; o += 256 * 1024) {
        res.write(body.subarray(o, o + 256 * 1024));
        await new Promise((r) => setTimeout(r, 15));
      }
      res.end();
      return;
    }
    res.end(body);
  }
}

describe('OCI pull from a real registry', { skip }, () => {
  let root: string;
  let reg: TestRegistry;
  let priv: TestRegistry;
  let proxy: Proxy;
  let storage: Proxy;
  let layout: string;
  let n = 0;
  const fresh = (): StatePaths => new StatePaths(join(root, `state-${++n}`));
  /** A Docker config dir with these contents, for `env`. */
  const dockerConfig = async (config: unknown, extraPath?: string): Promise<NodeJS.ProcessEnv> => {
    const dir = join(root, `docker-${++n}`);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    return {
      ...process.env,
      DOCKER_CONFIG: dir,
      PATH: extraPath ? `${extraPath}:${process.env.PATH ?? ''}` : process.env.PATH,
    };
  };
  const noCreds = async (): Promise<NodeJS.ProcessEnv> => dockerConfig({});

  before(async () => {
    const t0 = performance.now();
    root = await mkdtemp(join(tmpdir(), 'ma-oci-it-'));
    reg = await startRegistry(join(root, 'registry'));
    priv = await startRegistry(join(root, 'registry-auth'), {
      auth: { user: 'alice', password: 'wonderland' },
    });
    proxy = new Proxy(() => reg.url);
    storage = new Proxy(() => reg.url);
    await proxy.start();
    await storage.start();

    layout = join(root, 'oci', 'layout');
    await mkdir(join(root, 'oci'), { recursive: true });
    await buildImage(layout, 'v1', {
      files: { hello: 'hello v1\n', 'etc/motd': 'motd\n' },
      cmd: ['/hello'],
      entrypoint: ['/bin/sh', '-c'],
      env: ['GREETING=hi'],
      workdir: '/work',
      user: '1000:1000',
    });
    await buildImage(layout, 'arm', { files: { hello: 'arm\n' }, architecture: 'arm64' });
    // Content of its own: skopeo reuses a blob it knows the registry already
    // has (the same layer pushed gzip-compressed), so sharing v1's layer
    // would make the zstd push race the gzip one.
    await buildImage(layout, 'zst', {
      files: { hello: 'hello v1\n', unique: randomBytes(16).toString('hex') },
    });
    await buildImage(layout, 'big', { files: { 'big.bin': randomBytes(BIG) } });
    await buildIndex(layout, 'multi', [
      { tag: 'v1', platform: { os: 'linux', architecture: 'amd64' } },
      { tag: 'arm', platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ]);
    await Promise.all([
      pushImage(layout, 'v1', `${reg.host}/test/app:v1`),
      pushImage(layout, 'v1', `${reg.host}/test/docker:v1`, { format: 'v2s2' }),
      pushImage(layout, 'zst', `${reg.host}/test/zstd:v1`, { compress: 'zstd' }),
      pushImage(layout, 'multi', `${reg.host}/test/multi:v1`, { all: true }),
      pushImage(layout, 'arm', `${reg.host}/test/armonly:v1`),
      pushImage(layout, 'big', `${reg.host}/test/big:v1`),
      pushImage(layout, 'v1', `${priv.host}/test/private:v1`, { creds: 'alice:wonderland' }),
    ]);
    console.log(
      `# setup (2 registries, 4 images, 7 pushes): ${(performance.now() - t0).toFixed(0)} ms`,
    );
  });

  after(async () => {
    await Promise.allSettled([reg?.stop(), priv?.stop(), proxy?.stop(), storage?.stop()]);
    if (root) await rm(root, { recursive: true, force: true });
  });

  test('pulls by tag: verified blobs (0600) in the cache, parsed config, an index record', async () => {
    const paths = fresh();
    const events: PullEvent[] = [];
    const r = await pullImage(paths, `${reg.host}/test/app:v1`, {
      onProgress: (e) => events.push(e),
      env: await noCreds(),
    });
    assert.equal(r.reference, `${reg.host}/test/app:v1`);
    assert.equal(r.resolvedDigest, await remoteDigest(reg, 'test/app', 'v1'));
    assert.equal(r.pinnedReference, `${reg.host}/test/app@${r.resolvedDigest}`);
    assert.deepEqual(r.platform, { os: 'linux', architecture: 'amd64' });
    assert.equal(r.manifestMediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.deepEqual(r.config.config?.Cmd, ['/hello']);
    assert.deepEqual(r.config.config?.Entrypoint, ['/bin/sh', '-c']);
    assert.ok(r.config.config?.Env?.includes('GREETING=hi'));
    assert.equal(r.config.config?.WorkingDir, '/work');
    assert.equal(r.config.config?.User, '1000:1000');
    assert.equal(r.layers.length, 1);
    const layer = r.layers[0]!;
    assert.equal(layer.compression, 'gzip');
    assert.equal(layer.path, blobPath(paths, layer.digest));
    assert.equal((await stat(layer.path)).mode & 0o777, 0o600);
    assert.match(gunzipSync(await readFile(layer.path)).toString('latin1'), /hello v1/);
    for (const d of [r.resolvedDigest, r.configDigest]) assert.ok(existsSync(blobPath(paths, d)));
    assert.equal(r.totalSize, layer.size + (await stat(blobPath(paths, r.configDigest))).size);
    assert.ok(r.downloadedBytes > 0);
    const types = new Set(events.map((e) => e.type));
    assert.deepEqual([...types].sort(), ['blob', 'done', 'resolved', 'resolving']);
    const last = events.filter((e) => e.type === 'blob' && e.digest === layer.digest).at(-1);
    assert.deepEqual(last && last.type === 'blob' && [last.done, last.total], [
      layer.size,
      layer.size,
    ]);
    const [rec] = await listImages(paths);
    assert.equal(rec?.reference, r.reference);
    assert.equal(rec?.digest, r.resolvedDigest);
    assert.ok(!Number.isNaN(Date.parse(rec?.pulledAt ?? '')));
    // Nothing left behind but blobs.
    const left = await readdir(join(paths.blobs, 'sha256'));
    assert.deepEqual(
      left.filter((f) => f.startsWith('.')),
      [],
    );

    // Again: everything cached, nothing downloaded.
    const again = await pullImage(paths, `${reg.host}/test/app:v1`, { env: await noCreds() });
    assert.equal(again.downloadedBytes, 0);
    assert.equal(again.resolvedDigest, r.resolvedDigest);
  });

  test('pulls by digest (verified), and offline when everything is cached', async () => {
    const paths = fresh();
    const digest = await remoteDigest(reg, 'test/app', 'v1');
    const r = await pullImage(paths, `${reg.host}/test/app@${digest}`, { env: await noCreds() });
    assert.equal(r.resolvedDigest, digest);
    assert.equal(r.reference, `${reg.host}/test/app@${digest}`);
    // Same digest, registry gone (closed port): served from the cache.
    const offline = await pullImage(paths, `127.0.0.1:1/test/app@${digest}`, {
      env: await noCreds(),
      retry: FAST,
    });
    assert.equal(offline.downloadedBytes, 0);
    assert.equal(offline.layers[0]?.digest, r.layers[0]?.digest);
    // A tag needs the registry: unreachable says so.
    await assert.rejects(
      pullImage(paths, '127.0.0.1:1/test/app:v1', { env: await noCreds(), retry: FAST }),
      code('REGISTRY_UNREACHABLE', '127.0.0.1:1'),
    );
    // ...unless the policy allows the local copy.
    await tagImage(paths, r.reference, '127.0.0.1:1/test/app:v1');
    const local = await pullImage(paths, '127.0.0.1:1/test/app:v1', { policy: 'missing' });
    assert.equal(local.resolvedDigest, digest);
    assert.equal((await loadPulledImage(paths, digest)).configDigest, r.configDigest);
  });

  test('pulls a Docker schema 2 manifest', async () => {
    const r = await pullImage(fresh(), `${reg.host}/test/docker:v1`, { env: await noCreds() });
    assert.equal(r.manifestMediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    assert.equal(r.layers[0]?.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
    assert.equal(r.layers[0]?.compression, 'gzip');
    assert.deepEqual(r.config.config?.Cmd, ['/hello']);
  });

  test('pulls a zstd layer', async () => {
    const r = await pullImage(fresh(), `${reg.host}/test/zstd:v1`, { env: await noCreds() });
    const layer = r.layers[0]!;
    assert.equal(layer.mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
    assert.equal(layer.compression, 'zstd');
    assert.match(zstdDecompressSync(await readFile(layer.path)).toString('latin1'), /hello v1/);
  });

  test('picks the platform from an index and lists the platforms there when missing', async () => {
    const paths = fresh();
    const env = await noCreds();
    const ref = `${reg.host}/test/multi:v1`;
    const indexDigest = await remoteDigest(reg, 'test/multi', 'v1');
    const amd = await pullImage(paths, ref, { env });
    assert.equal(amd.indexDigest, indexDigest);
    assert.deepEqual(amd.platform, { os: 'linux', architecture: 'amd64' });
    const arm = await pullImage(paths, ref, { env, platform: 'linux/arm64' });
    assert.deepEqual(arm.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
    assert.notEqual(arm.resolvedDigest, amd.resolvedDigest);
    assert.match(gunzipSync(await readFile(arm.layers[0]!.path)).toString('latin1'), /arm/);
    await assert.rejects(
      pullImage(paths, ref, { env, platform: 'linux/s390x' }),
      code('PLATFORM_NOT_FOUND', 'linux/s390x', 'linux/amd64, linux/arm64/v8'),
    );
    await assert.rejects(
      pullImage(fresh(), `${reg.host}/test/armonly:v1`, { env }),
      code('PLATFORM_NOT_FOUND', 'linux/arm64', 'linux/amd64'),
    );
  });

  test('an unknown tag or repository is IMAGE_NOT_FOUND naming the reference', async () => {
    const env = await noCreds();
    await assert.rejects(
      pullImage(fresh(), `${reg.host}/test/app:nope`, { env }),
      code('IMAGE_NOT_FOUND', `${reg.host}/test/app:nope`),
    );
    await assert.rejects(
      pullImage(fresh(), `${reg.host}/no/such:v1`, { env }),
      code('IMAGE_NOT_FOUND', `${reg.host}/no/such:v1`),
    );
  });

  test('basic auth against the real registry: right password works, wrong one names registry and config', async () => {
    const ref = `${priv.host}/test/private:v1`;
    const good = await dockerConfig({
      auths: { [priv.host]: { auth: Buffer.from('alice:wonderland').toString('base64') } },
    });
    const r = await pullImage(fresh(), ref, { env: good });
    assert.equal(r.resolvedDigest, await remoteDigest(priv, 'test/private', 'v1'));

    const bad = await dockerConfig({
      auths: { [`http://${priv.host}`]: { username: 'alice', password: 'wrong-secret' } },
    });
    await assert.rejects(pullImage(fresh(), ref, { env: bad }), (e: unknown) => {
      code('REGISTRY_AUTH_FAILED', priv.host, join(bad.DOCKER_CONFIG!, 'config.json'))(e);
      assert.ok(!JSON.stringify(e).includes('wrong-secret'));
      assert.ok(!(e as Error).message.includes('wrong-secret'));
      return true;
    });
    const none = await noCreds();
    await assert.rejects(
      pullImage(fresh(), ref, { env: none }),
      code('REGISTRY_AUTH_FAILED', priv.host, 'no credentials found', none.DOCKER_CONFIG!),
    );
  });

  test('a credential helper on PATH supplies the password', async () => {
    const bin = join(root, 'helper-bin');
    await mkdir(bin, { recursive: true });
    const seen = join(root, 'helper-stdin');
    await writeFile(
      join(bin, 'docker-credential-test'),
      `#!/bin/sh\n[ "$1" = get ] || exit 2\ncat > '${seen}'\necho '{"ServerURL":"x","Username":"alice","Secret":"wonderland"}'\n`,
    );
    await chmod(join(bin, 'docker-credential-test'), 0o755);
    const env = await dockerConfig({ credHelpers: { [priv.host]: 'test' } }, bin);
    const r = await pullImage(fresh(), `${priv.host}/test/private:v1`, { env });
    assert.equal(r.layers.length, 1);
    assert.equal((await readFile(seen, 'utf8')).trim(), priv.host);

    // A helper that fails is named in the error.
    await writeFile(join(bin, 'docker-credential-broken'), '#!/bin/sh\nexit 3\n');
    await chmod(join(bin, 'docker-credential-broken'), 0o755);
    const broken = await dockerConfig({ credsStore: 'broken' }, bin);
    await assert.rejects(
      pullImage(fresh(), `${priv.host}/test/private:v1`, { env: broken }),
      code('REGISTRY_AUTH_FAILED', 'docker-credential-broken'),
    );
  });

  test('bearer tokens: fetched once per scope with credentials; redirects drop Authorization', async () => {
    proxy.reset({
      bearer: { user: 'bob', password: 'tok-pass' },
      redirectBlobsTo: `http://${storage.host}`,
    });
    storage.reset();
    const env = await dockerConfig({
      auths: { [proxy.host]: { username: 'bob', password: 'tok-pass' } },
    });
    const r = await pullImage(fresh(), `${proxy.host}/test/app:v1`, { env });
    assert.equal(r.resolvedDigest, await remoteDigest(reg, 'test/app', 'v1'));
    assert.equal(proxy.tokenRequests, 1);
    const v2 = proxy.log.filter((l) => l.path.startsWith('/v2/'));
    assert.equal(v2[0]?.status, 401);
    assert.ok(v2.slice(1).every((l) => l.auth?.startsWith('Bearer ')));
    assert.equal(proxy.log.filter((l) => l.status === 307).length, 2); // config + layer
    assert.equal(storage.log.length, 2);
    assert.ok(storage.log.every((l) => l.auth === undefined && l.status === 200));

    const wrong = await dockerConfig({
      auths: { [proxy.host]: { username: 'bob', password: 'nope' } },
    });
    await assert.rejects(
      pullImage(fresh(), `${proxy.host}/test/app:v1`, { env: wrong }),
      code('REGISTRY_AUTH_FAILED', proxy.host, 'token service'),
    );
  });

  test('5xx answers are retried with backoff, then REGISTRY_UNREACHABLE', async () => {
    proxy.reset({ fail: 2 });
    const r = await pullImage(fresh(), `${proxy.host}/test/app:v1`, {
      env: await noCreds(),
      retry: FAST,
    });
    assert.equal(r.layers.length, 1);
    assert.deepEqual(
      proxy.log.slice(0, 3).map((l) => l.status),
      [503, 503, 200],
    );
    proxy.reset({ fail: 10 });
    await assert.rejects(
      pullImage(fresh(), `${proxy.host}/test/app:v1`, { env: await noCreds(), retry: FAST }),
      code('REGISTRY_UNREACHABLE', '503', '3 times', 'try later'),
    );
  });

  test('plain http to a host that is not loopback is refused (token realm)', async () => {
    proxy.reset({ bearer: { realm: 'http://192.0.2.1/token' } });
    await assert.rejects(
      pullImage(fresh(), `${proxy.host}/test/app:v1`, { env: await noCreds() }),
      code('INSECURE_REGISTRY_REFUSED', '192.0.2.1'),
    );
  });

  test('a corrupted blob is retried once, then BLOB_DIGEST_MISMATCH with nothing cached', async () => {
    const good = await pullImage(fresh(), `${reg.host}/test/app:v1`, { env: await noCreds() });
    const layer = good.layers[0]!.digest;
    proxy.reset({ corrupt: layer });
    const paths = fresh();
    await assert.rejects(
      pullImage(paths, `${proxy.host}/test/app:v1`, { env: await noCreds(), retry: FAST }),
      code('BLOB_DIGEST_MISMATCH', layer),
    );
    assert.equal(proxy.blobGets(layer).length, 2);
    assert.equal(existsSync(blobPath(paths, layer)), false);
    const left = await readdir(join(paths.blobs, 'sha256'));
    assert.deepEqual(
      left.filter((f) => f.includes(layer.slice(7))),
      [],
    );
    assert.deepEqual(await listImages(paths), []);
  });

  test('a download cut off mid-blob resumes with a Range request', async () => {
    const big = (await pullImage(fresh(), `${reg.host}/test/big:v1`, { env: await noCreds() }))
      .layers[0]!;
    proxy.reset({ cut: { digest: big.digest, afterBytes: 3 * 1024 * 1024, times: 1 } });
    const paths = fresh();
    const r = await pullImage(paths, `${proxy.host}/test/big:v1`, {
      env: await noCreds(),
      retry: FAST,
    });
    const gets = proxy.blobGets(big.digest);
    assert.equal(gets.length, 2);
    assert.equal(gets[0]?.range, undefined);
    const from = Number(/^bytes=(\d+)-$/.exec(gets[1]?.range ?? '')?.[1]);
    assert.ok(from > 0 && from <= 3 * 1024 * 1024, `resumed from ${from}`);
    assert.equal(r.layers[0]?.digest, big.digest);
    assert.equal((await stat(r.layers[0]!.path)).size, big.size);
  });

  test('a partial file left behind is re-hashed and resumed; restarted when the server ignores Range or it is garbage', async () => {
    const big = (await pullImage(fresh(), `${reg.host}/test/big:v1`, { env: await noCreds() }))
      .layers[0]!;
    const whole = await readFile(big.path);
    const seed = async (paths: StatePaths, content: Buffer): Promise<void> => {
      await mkdir(join(paths.blobs, 'sha256'), { recursive: true });
      await writeFile(join(paths.blobs, 'sha256', `.${big.digest.slice(7)}.partial`), content);
    };
    const MB = 1024 * 1024;

    proxy.reset();
    let paths = fresh();
    await seed(paths, whole.subarray(0, MB));
    await pullImage(paths, `${proxy.host}/test/big:v1`, { env: await noCreds() });
    assert.deepEqual(
      proxy.blobGets(big.digest).map((g) => [g.range, g.status]),
      [[`bytes=${MB}-`, 206]],
    );

    proxy.reset({ ignoreRange: true });
    paths = fresh();
    await seed(paths, whole.subarray(0, MB));
    await pullImage(paths, `${proxy.host}/test/big:v1`, { env: await noCreds() });
    assert.deepEqual(
      proxy.blobGets(big.digest).map((g) => g.status),
      [200],
    );
    assert.equal((await stat(blobPath(paths, big.digest))).size, big.size);

    proxy.reset();
    paths = fresh();
    await seed(paths, randomBytes(MB));
    await pullImage(paths, `${proxy.host}/test/big:v1`, { env: await noCreds() });
    assert.deepEqual(
      proxy.blobGets(big.digest).map((g) => g.range),
      [`bytes=${MB}-`, undefined],
    );
  });

  test('two processes pulling the same image at once download each blob once', async () => {
    const big = (await pullImage(fresh(), `${reg.host}/test/big:v1`, { env: await noCreds() }))
      .layers[0]!;
    proxy.reset({ slow: big.digest });
    const paths = fresh();
    const child = join(PACKAGE_ROOT, 'dist', 'test', 'support', 'pull-child.js');
    const env = await noCreds();
    const ref = `${proxy.host}/test/big:v1`;
    const [a, b] = await Promise.all([
      run([process.execPath, child, paths.root, ref], { env, timeoutMs: 30_000 }),
      run([process.execPath, child, paths.root, ref], { env, timeoutMs: 30_000 }),
    ]);
    const ra = JSON.parse(a.stdout.toString()) as { digest: string; downloadedBytes: number };
    const rb = JSON.parse(b.stdout.toString()) as { digest: string; downloadedBytes: number };
    assert.equal(ra.digest, rb.digest);
    assert.equal(proxy.blobGets(big.digest).length, 1);
    assert.equal(ra.downloadedBytes + rb.downloadedBytes >= big.size, true);
    assert.equal(Math.min(ra.downloadedBytes, rb.downloadedBytes) < big.size, true);
    assert.deepEqual(await readFile(blobPath(paths, big.digest)), await readFile(big.path));
    const left = await readdir(join(paths.blobs, 'sha256'));
    assert.deepEqual(
      left.filter((f) => f.startsWith('.')),
      [],
    );
    assert.equal((await listImages(paths)).length, 1);
  });

  test('tag, list, remove and prune keep the blobs images still use', async () => {
    const paths = fresh();
    const env = await noCreds();
    const app = await pullImage(paths, `${reg.host}/test/app:v1`, { env });
    const multi = await pullImage(paths, `${reg.host}/test/multi:v1`, { env });
    // app and multi/amd64 are the same image: one set of blobs.
    assert.equal(app.resolvedDigest, multi.resolvedDigest);
    const tagged = await tagImage(paths, `${reg.host}/test/app:v1`, 'mine/app:stable');
    assert.equal(tagged.reference, 'docker.io/mine/app:stable');
    assert.equal(
      (await getImage(paths, app.resolvedDigest.slice(7, 19))).digest,
      app.resolvedDigest,
    );
    assert.deepEqual(
      (await listImages(paths)).map((i) => i.reference),
      [`${reg.host}/test/app:v1`, `${reg.host}/test/multi:v1`, 'docker.io/mine/app:stable'],
    );
    const before = new Set(await listBlobs(paths));
    assert.deepEqual((await pruneImages(paths)).removedBlobs, []);

    await removeImage(paths, `${reg.host}/test/multi:v1`);
    const p1 = await pruneImages(paths);
    assert.deepEqual(p1.removedBlobs, [multi.indexDigest]); // the index blob only
    await removeImage(paths, app.resolvedDigest); // every record with that digest
    assert.deepEqual(await listImages(paths), []);
    const p2 = await pruneImages(paths, { roots: [() => [app.configDigest]] });
    assert.equal(p2.removedBlobs.length, before.size - 2);
    assert.deepEqual(await listBlobs(paths), [app.configDigest]);
    assert.ok(p2.reclaimedBytes > 0);
    await assert.rejects(
      removeImage(paths, 'mine/app:stable'),
      code('IMAGE_NOT_FOUND', 'mine/app:stable'),
    );
  });
});
