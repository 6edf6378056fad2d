/**
 * microagent.yaml: parsing with positions, strict validation, conversion to
 * create/run options, and flags over the file.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { MicroagentError } from '../../src/errors.js';
import {
  loadSpec,
  mergeSpecWithFlags,
  parseSpec,
  specToCreateOptions,
  specToRunOptions,
  type SpecIssue,
} from '../../src/spec/index.js';

const FULL = `# a full spec
name: demo
image: alpine:3.20
profile: small
cpus: 2
memory: 1G
env:
  PORT: 8080
  MODE: test
command: [python3, -m, http.server]
setup:
  - apk add --no-cache python3
network:
  mode: user
  publish: ["8080:80"]
  allowHostLoopback: false
ports: ["127.0.0.1:9090:90/tcp"]
outputs:
  report: /root/report.txt
labels:
  team: qa
`;

function specError(fn: () => unknown): MicroagentError & { data: { issues: SpecIssue[] } } {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof MicroagentError, String(err));
    assert.equal(err.code, 'SPEC_INVALID');
    assert.equal(err.kind, 'usage');
    return err as MicroagentError & { data: { issues: SpecIssue[] } };
  }
  assert.fail('expected SPEC_INVALID');
}

describe('microagent.yaml', () => {
  it('parses a full spec, keeping env values as strings and folding ports into network.publish', () => {
    const spec = parseSpec(FULL);
    assert.equal(spec.name, 'demo');
    assert.equal(spec.image, 'alpine:3.20');
    assert.deepEqual(spec.env, { PORT: '8080', MODE: 'test' });
    assert.deepEqual(spec.command, ['python3', '-m', 'http.server']);
    assert.deepEqual(spec.network, {
      mode: 'user',
      publish: ['8080:80', '127.0.0.1:9090:90/tcp'],
      allowHostLoopback: false,
    });
    assert.deepEqual(spec.outputs, { report: '/root/report.txt' });
    assert.deepEqual(spec.labels, { team: 'qa' });
  });

  it('accepts outputs as a list of {name, path} too', () => {
    const spec = parseSpec('outputs:\n  - name: log\n    path: /var/log/app.log\n');
    assert.deepEqual(spec.outputs, { log: '/var/log/app.log' });
  });

  it('rejects an unknown field, naming it and its line', () => {
    const err = specError(() => parseSpec('image: alpine\nimgae: busybox\n', 'ws.yaml'));
    assert.deepEqual(err.data.issues, [
      { path: 'imgae', message: 'unknown field "imgae"', line: 2, col: 1 },
    ]);
    assert.match(err.message, /^ws\.yaml:2:1: imgae: unknown field/);
  });

  it('rejects an unknown nested field with its path', () => {
    const err = specError(() => parseSpec('network:\n  mode: user\n  nat: true\n'));
    assert.equal(err.data.issues[0]?.path, 'network.nat');
    assert.equal(err.data.issues[0]?.line, 3);
  });

  it('reports a wrong type with the field path and line', () => {
    const err = specError(() => parseSpec('image: alpine\ncpus: two\nsetup:\n  - ok\n  - 42\n'));
    const byPath = Object.fromEntries(err.data.issues.map((i) => [i.path, i]));
    assert.equal(byPath.cpus?.line, 2);
    assert.equal(byPath.cpus?.col, 7);
    assert.match(byPath.cpus?.message ?? '', /expected number, got string/);
    assert.equal(byPath['setup[1]']?.line, 5);
  });

  it('reports a bad value deep inside a union with its own path', () => {
    const err = specError(() => parseSpec('outputs:\n  - name: r\n    path: relative/path\n'));
    assert.equal(err.data.issues[0]?.path, 'outputs[0].path');
    assert.equal(err.data.issues[0]?.line, 3);
    assert.match(err.data.issues[0]?.message ?? '', /absolute/);
  });

  it('checks publish entries', () => {
    const err = specError(() => parseSpec('network:\n  publish: ["eighty"]\n'));
    assert.equal(err.data.issues[0]?.path, 'network.publish[0]');
  });

  it('refuses disks and volumes by name as not supported yet', () => {
    const err = specError(() => parseSpec('image: alpine\nvolumes:\n  - data:/data\n'));
    assert.equal(err.data.issues[0]?.path, 'volumes');
    assert.equal(err.data.issues[0]?.line, 2);
    assert.match(err.message, /not supported yet/);
  });

  it('gives the line and column of a YAML syntax error', () => {
    const err = specError(() => parseSpec('image: alpine\nenv:\n  A: "unterminated\n'));
    const issue = err.data.issues[0];
    assert.ok(issue?.line !== undefined && issue.col !== undefined, JSON.stringify(err.data));
    assert.match(err.message, /^microagent\.yaml:\d+:\d+: YAML syntax error/);
    const tab = specError(() => parseSpec('image: alpine\ncommand: [a, b\ncpus: 1\n'));
    assert.equal(tab.data.issues[0]?.line, 3);
  });

  it('refuses duplicate keys and a document that is not a mapping', () => {
    assert.match(specError(() => parseSpec('image: a\nimage: b\n')).message, /:2:1: .*unique/);
    assert.match(specError(() => parseSpec('- a\n- b\n')).message, /mapping/);
  });

  it('loads from a file, naming the file in errors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'spec-'));
    try {
      const path = join(dir, 'microagent.yaml');
      await writeFile(path, FULL);
      assert.equal((await loadSpec(path)).name, 'demo');
      await writeFile(path, 'cpus: 0\n');
      await assert.rejects(loadSpec(path), (err: MicroagentError) =>
        err.message.startsWith(`${path}:1:7: cpus:`),
      );
      await assert.rejects(loadSpec(join(dir, 'missing.yaml')), { code: 'INVALID_ARGUMENT' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('converts to create options', () => {
    const options = specToCreateOptions(parseSpec(FULL), { stateDir: '/tmp/state' });
    assert.deepEqual(options, {
      name: 'demo',
      image: 'alpine:3.20',
      profile: 'small',
      cpus: 2,
      memoryMiB: 1024,
      env: { PORT: '8080', MODE: 'test' },
      labels: { team: 'qa' },
      setup: ['apk add --no-cache python3'],
      outputs: { report: '/root/report.txt' },
      network: {
        mode: 'user',
        publish: ['8080:80', '127.0.0.1:9090:90/tcp'],
        allowHostLoopback: false,
      },
      stateDir: '/tmp/state',
    });
    assert.throws(() => specToCreateOptions(parseSpec('image: alpine\n')), {
      code: 'SPEC_INVALID',
    });
  });

  it('converts to run options: a string command goes through sh -c, setup runs first', () => {
    assert.deepEqual(specToRunOptions(parseSpec('command: echo hi\n')).argv, [
      '/bin/sh',
      '-c',
      'echo hi',
    ]);
    const withSetup = specToRunOptions(parseSpec('setup: [touch /a]\ncommand: [ls, /a]\n'));
    assert.deepEqual(withSetup.argv, [
      '/bin/sh',
      '-c',
      'set -e\ntouch /a\nexec "$@"',
      'sh',
      'ls',
      '/a',
    ]);
    const overridden = specToRunOptions(parseSpec('command: [ls]\nmemory: 512\n'), {
      argv: ['pwd'],
      keep: true,
    });
    assert.deepEqual(overridden.argv, ['pwd']);
    assert.equal(overridden.memoryMiB, 512);
    assert.equal(overridden.keep, true);
  });

  it('lets flags override the file: scalars replace, lists replace, maps merge key by key', () => {
    const spec = parseSpec(FULL);
    const merged = mergeSpecWithFlags(spec, {
      image: 'busybox',
      cpus: '4',
      memory: '2G',
      env: ['MODE=prod', 'EXTRA=1'],
      setup: ['true'],
      publish: ['3000:3000'],
      network: 'isolated',
      label: ['team=ops'],
      output: ['log=/var/log/x'],
    });
    assert.equal(merged.image, 'busybox');
    assert.equal(merged.name, 'demo', 'fields without a flag are kept');
    assert.equal(merged.cpus, 4);
    assert.equal(merged.memory, '2G');
    assert.deepEqual(merged.env, { PORT: '8080', MODE: 'prod', EXTRA: '1' });
    assert.deepEqual(merged.setup, ['true']);
    assert.deepEqual(merged.network, {
      mode: 'isolated',
      publish: ['3000:3000'],
      allowHostLoopback: false,
    });
    assert.deepEqual(merged.labels, { team: 'ops' });
    assert.deepEqual(merged.outputs, { report: '/root/report.txt', log: '/var/log/x' });
    assert.equal(specToCreateOptions(merged).memoryMiB, 2048);
  });

  it('keeps --allow-host-loopback and --disk-size over a file', () => {
    const spec = parseSpec(FULL);
    const merged = mergeSpecWithFlags(spec, { allowHostLoopback: true, diskSize: '4G' });
    assert.equal(merged.network?.allowHostLoopback, true);
    assert.equal(merged.network?.mode, spec.network?.mode, 'the rest of network is kept');
    assert.equal(specToCreateOptions(merged).diskMiB, 4096);
    assert.equal(specToCreateOptions(parseSpec('name: a\ndiskSize: 700\n')).diskMiB, 700);
    assert.throws(
      () => mergeSpecWithFlags(spec, { diskSize: 'huge' }),
      (err: MicroagentError) => err.message.startsWith('--disk-size:'),
    );
  });

  it('reports a bad flag value by its flag name', () => {
    const spec = parseSpec('image: alpine\n');
    assert.throws(
      () => mergeSpecWithFlags(spec, { cpus: 'many' }),
      (err: MicroagentError) =>
        err.code === 'INVALID_ARGUMENT' && err.message.startsWith('--cpus:'),
    );
    assert.throws(() => mergeSpecWithFlags(spec, { network: 'nat' }), /--network/);
    assert.throws(() => mergeSpecWithFlags(spec, { env: ['NOEQUALS'] }), /--env takes KEY=VALUE/);
  });
});
