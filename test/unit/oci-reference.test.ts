import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isMicroagentError } from '../../src/errors.js';
import { resolveCredentials } from '../../src/oci/auth.js';
import {
  hostPlatform,
  parseManifest,
  parsePlatform,
  selectPlatform,
  type ImageIndex,
} from '../../src/oci/manifest.js';
import {
  apiHost,
  canonicalReference,
  isLoopbackRegistry,
  isMutable,
  parseReference,
} from '../../src/oci/reference.js';
import { RegistryClient, parseChallenge } from '../../src/oci/registry.js';

const D = 'sha256:' + 'a'.repeat(64);

describe('image references', () => {
  it('normalise short Docker Hub names to docker.io/library/NAME:latest', () => {
    assert.equal(canonicalReference('ubuntu'), 'docker.io/library/ubuntu:latest');
    assert.equal(canonicalReference('ubuntu:24.04'), 'docker.io/library/ubuntu:24.04');
    assert.equal(canonicalReference('user/repo'), 'docker.io/user/repo:latest');
    assert.equal(
      canonicalReference('index.docker.io/library/alpine'),
      'docker.io/library/alpine:latest',
    );
    assert.equal(apiHost('docker.io'), 'registry-1.docker.io');
  });

  it('keep registries with ports, localhost and IPv6 apart from tags', () => {
    assert.deepEqual(parseReference('127.0.0.1:5000/x/y:v1'), {
      registry: '127.0.0.1:5000',
      repository: 'x/y',
      tag: 'v1',
    });
    assert.deepEqual(parseReference('localhost:5000/app'), {
      registry: 'localhost:5000',
      repository: 'app',
      tag: 'latest',
    });
    assert.equal(parseReference('localhost/app').registry, 'localhost');
    assert.equal(parseReference('[::1]:5000/app:v2').registry, '[::1]:5000');
    assert.equal(parseReference('ghcr.io/org/team/app').repository, 'org/team/app');
  });

  it('parse digests alone and with a tag; only digest-less references are mutable', () => {
    const byDigest = parseReference(`alpine@${D}`);
    assert.equal(byDigest.digest, D);
    assert.equal(byDigest.tag, undefined);
    assert.equal(canonicalReference(`alpine@${D}`), `docker.io/library/alpine@${D}`);
    const both = parseReference(`ghcr.io/a/b:v1@${D}`);
    assert.equal(both.tag, 'v1');
    assert.equal(both.digest, D);
    assert.equal(isMutable(byDigest), false);
    assert.equal(isMutable('alpine:3'), true);
  });

  it('reject invalid references with INVALID_ARGUMENT naming the reference', () => {
    for (const bad of [
      '',
      'Ubuntu',
      'ubuntu:',
      'ubuntu:-x',
      'a//b',
      'a/b_',
      'http://x/y',
      `alpine@sha256:${'A'.repeat(64)}`,
      'alpine@sha512:' + 'a'.repeat(128),
      'ubuntu latest',
      'x/' + 'a'.repeat(300),
    ]) {
      assert.throws(
        () => parseReference(bad),
        (e: unknown) =>
          isMicroagentError(e) &&
          e.code === 'INVALID_ARGUMENT' &&
          e.message.includes(`"${bad.trim()}"`),
        bad,
      );
    }
  });

  it('know loopback registries', () => {
    for (const h of ['127.0.0.1:5000', '127.3.4.5', 'localhost:80', '[::1]:5000', 'localhost'])
      assert.equal(isLoopbackRegistry(h), true, h);
    for (const h of ['10.0.0.1:5000', 'example.com', 'localhost.example.com', '128.0.0.1'])
      assert.equal(isLoopbackRegistry(h), false, h);
  });
});

describe('registry transport', () => {
  it('uses https except for loopback and listed insecure registries', () => {
    assert.equal(new RegistryClient('docker.io').baseUrl, 'https://registry-1.docker.io');
    assert.equal(new RegistryClient('127.0.0.1:5000').baseUrl, 'http://127.0.0.1:5000');
    assert.equal(new RegistryClient('reg.lan:5000').baseUrl, 'https://reg.lan:5000');
    assert.equal(
      new RegistryClient('reg.lan:5000', { insecureRegistries: ['reg.lan:5000'] }).baseUrl,
      'http://reg.lan:5000',
    );
  });

  it('parses Bearer and Basic challenges', () => {
    assert.deepEqual(
      parseChallenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull"',
      ),
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.docker.io/token',
          service: 'registry.docker.io',
          scope: 'repository:library/ubuntu:pull',
        },
      },
    );
    assert.deepEqual(parseChallenge('Basic realm="x"'), {
      scheme: 'basic',
      params: { realm: 'x' },
    });
    assert.equal(parseChallenge('Negotiate'), undefined);
    assert.equal(parseChallenge(null), undefined);
  });
});

describe('platforms', () => {
  const index: ImageIndex = {
    schemaVersion: 2,
    manifests: [
      {
        mediaType: 'm',
        digest: 'sha256:1',
        size: 1,
        platform: { os: 'linux', architecture: 'amd64' },
      },
      {
        mediaType: 'm',
        digest: 'sha256:2',
        size: 1,
        platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
      },
      {
        mediaType: 'm',
        digest: 'sha256:3',
        size: 1,
        platform: { os: 'linux', architecture: 'arm', variant: 'v7' },
      },
      {
        mediaType: 'm',
        digest: 'sha256:4',
        size: 1,
        platform: { os: 'unknown', architecture: 'unknown' },
      },
    ],
  };

  it('maps the host arch to OCI names', () => {
    const p = hostPlatform();
    assert.equal(p.os, 'linux');
    if (process.arch === 'x64') assert.equal(p.architecture, 'amd64');
  });

  it('pick the matching index entry, arm64 with or without its v8 variant', () => {
    assert.equal(
      selectPlatform(index, parsePlatform('linux/amd64'), 'x').descriptor.digest,
      'sha256:1',
    );
    assert.equal(
      selectPlatform(index, parsePlatform('linux/arm64'), 'x').descriptor.digest,
      'sha256:2',
    );
    assert.equal(
      selectPlatform(index, parsePlatform('linux/arm64/v8'), 'x').descriptor.digest,
      'sha256:2',
    );
    assert.equal(
      selectPlatform(index, parsePlatform('linux/arm/v7'), 'x').descriptor.digest,
      'sha256:3',
    );
  });

  it('report the platforms that exist when the wanted one does not', () => {
    assert.throws(
      () => selectPlatform(index, parsePlatform('linux/s390x'), 'reg/x:1'),
      (e: unknown) =>
        isMicroagentError(e) &&
        e.code === 'PLATFORM_NOT_FOUND' &&
        e.message.includes('reg/x:1') &&
        e.message.includes('linux/amd64, linux/arm64/v8, linux/arm/v7') &&
        !e.message.includes('unknown'),
    );
    assert.throws(() => parsePlatform('amd64'), /invalid platform/);
  });

  it('refuse schema 1, artifacts and foreign layers by media type', () => {
    const v1 = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'x' }));
    assert.throws(
      () => parseManifest(v1, 'application/vnd.docker.distribution.manifest.v1+prettyjws', 'x'),
      (e: unknown) =>
        isMicroagentError(e) && e.code === 'UNSUPPORTED_MEDIA_TYPE' && /schema 1/.test(e.message),
    );
    const artifact = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.cncf.helm.config.v1+json', digest: D, size: 1 },
        layers: [],
      }),
    );
    assert.throws(
      () => parseManifest(artifact, undefined, 'x'),
      (e: unknown) =>
        isMicroagentError(e) && e.code === 'UNSUPPORTED_MEDIA_TYPE' && /helm/.test(e.message),
    );
  });
});

describe('Docker config credentials', () => {
  it('read auths (base64 auth, username/password, identitytoken) by host, never echoing secrets', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ma-oci-auth-'));
    try {
      await writeFile(
        join(dir, 'config.json'),
        JSON.stringify({
          auths: {
            'https://index.docker.io/v1/': { auth: Buffer.from('hub:s3cret').toString('base64') },
            'reg.example.com': { username: 'u', password: 'p' },
            'http://tok.example.com/v2/': { identitytoken: 'refresh' },
            'bad.example.com': { auth: Buffer.from('nocolon').toString('base64') },
          },
        }),
      );
      const env = { DOCKER_CONFIG: dir, PATH: process.env.PATH };
      const hub = await resolveCredentials('docker.io', env);
      assert.deepEqual(hub.credentials, { kind: 'basic', username: 'hub', password: 's3cret' });
      assert.deepEqual((await resolveCredentials('reg.example.com', env)).credentials, {
        kind: 'basic',
        username: 'u',
        password: 'p',
      });
      assert.deepEqual((await resolveCredentials('tok.example.com', env)).credentials, {
        kind: 'identityToken',
        token: 'refresh',
      });
      const none = await resolveCredentials('other.example.com', env);
      assert.equal(none.credentials, undefined);
      assert.deepEqual(none.source.files, [join(dir, 'config.json')]);
      await assert.rejects(
        resolveCredentials('bad.example.com', env),
        (e: unknown) =>
          isMicroagentError(e) &&
          e.code === 'REGISTRY_AUTH_FAILED' &&
          !e.message.includes('nocolon'),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('run credHelpers[host] with the server URL on stdin', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ma-oci-helper-'));
    try {
      const helper = join(dir, 'docker-credential-unit');
      await writeFile(
        helper,
        `#!/bin/sh\nread url\nif [ "$url" = "reg.example.com" ]; then echo '{"ServerURL":"x","Username":"hu","Secret":"hs"}'; else echo "credentials not found in native keychain"; exit 1; fi\n`,
      );
      await chmod(helper, 0o755);
      await writeFile(
        join(dir, 'config.json'),
        JSON.stringify({ credHelpers: { 'reg.example.com': 'unit', 'none.example.com': 'unit' } }),
      );
      const env = { DOCKER_CONFIG: dir, PATH: `${dir}:${process.env.PATH ?? ''}` };
      const r = await resolveCredentials('reg.example.com', env);
      assert.deepEqual(r.credentials, { kind: 'basic', username: 'hu', password: 'hs' });
      assert.equal(r.source.helper, 'docker-credential-unit');
      const none = await resolveCredentials('none.example.com', env);
      assert.equal(none.credentials, undefined);
      assert.equal(none.source.helper, 'docker-credential-unit');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
