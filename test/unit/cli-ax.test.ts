/**
 * Golden tests of the AX envelope and the exit codes of every command, on an
 * empty state directory (no VM needed).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli } from '../helpers.js';

let stateDir: string;

async function ax(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; doc: any; stderr: string }> {
  const r = await cli(args, { stateDir, env });
  const text = r.stdout.toString();
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    assert.fail(
      `${args.join(' ')}: stdout is not one JSON document: ${JSON.stringify(text.slice(0, 200))}`,
    );
  }
  return { code: r.code, doc, stderr: r.stderr.toString() };
}

function assertError(doc: any, code: string, kind: string): void {
  assert.equal(doc.ok, false);
  assert.deepEqual(Object.keys(doc).sort(), ['error', 'ok']);
  assert.equal(doc.error.code, code);
  assert.equal(doc.error.kind, kind);
  assert.equal(typeof doc.error.message, 'string');
  assert.equal(typeof doc.error.remediation, 'string');
  assert.equal(typeof doc.error.retryable, 'boolean');
}

describe('AX output: one envelope per command, documented exit codes', () => {
  before(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'ma-ax-'));
  });
  after(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  it('wraps successes as {ok: true, result}', async () => {
    for (const [args, check] of [
      [['--json', 'list'], (r: any) => assert.deepEqual(r, { workspaces: [] })],
      [['--json', 'ps'], (r: any) => assert.deepEqual(r, { workspaces: [] })],
      [['--json', 'image', 'list'], (r: any) => assert.deepEqual(r, { images: [] })],
      [['--json', 'kernel', 'list'], (r: any) => assert.deepEqual(r, { kernels: [] })],
      [['--json', 'version'], (r: any) => assert.match(r.version, /^\d+\.\d+\.\d+/)],
      [['--mode', 'ax', 'list'], (r: any) => assert.deepEqual(r, { workspaces: [] })],
      [['list', '--mode=ax'], (r: any) => assert.deepEqual(r, { workspaces: [] })],
    ] as const) {
      const { code, doc } = await ax([...args]);
      assert.equal(code, 0, args.join(' '));
      assert.equal(doc.ok, true, args.join(' '));
      assert.deepEqual(Object.keys(doc).sort(), ['ok', 'result']);
      check(doc.result);
    }
  });

  it('honours MICROAGENT_MODE=ax, and --mode ux overrides it', async () => {
    const { doc } = await ax(['list'], { MICROAGENT_MODE: 'ax' });
    assert.equal(doc.ok, true);
    const r = await cli(['--mode', 'ux', 'list'], { stateDir, env: { MICROAGENT_MODE: 'ax' } });
    assert.equal(r.stdout.toString(), 'No workspaces.\n');
  });

  it('reports a missing workspace as not_found (exit 1) for every workspace command', async () => {
    for (const args of [
      ['status', 'ghost'],
      ['start', 'ghost'],
      ['exec', 'ghost', '--', 'true'],
      ['halt', 'ghost'],
      ['stop', 'ghost'],
      ['kill', 'ghost'],
      ['pause', 'ghost'],
      ['resume', 'ghost'],
      ['delete', 'ghost'],
      ['wait', 'ghost'],
      ['logs', 'ghost'],
      ['events', 'ghost'],
      ['result', 'ghost'],
      ['connect', 'ghost'],
      ['cp', '/etc/hostname', 'ghost:/tmp/x'],
      ['artifacts', 'ghost'],
    ]) {
      const { code, doc } = await ax(['--json', ...args]);
      assert.equal(code, 1, args.join(' '));
      assertError(doc, 'WORKSPACE_NOT_FOUND', 'not_found');
    }
  });

  it('reports usage errors with exit 2', async () => {
    for (const args of [
      ['run'],
      ['run', '--bogus', '--', 'true'],
      ['create'],
      ['exec', 'x'],
      ['cp', 'a', 'b'],
      ['image'],
      ['image', 'pull'],
      ['kernel', 'install', '--file', '/x'],
      ['rootfs', 'build', 'x'],
      ['nosuchcommand'],
      ['create', 'bad/name'],
      ['events', 'x', '--follow'],
    ]) {
      const { code, doc } = await ax(['--json', ...args]);
      assert.equal(code, 2, args.join(' '));
      assert.equal(doc.ok, false);
      assert.equal(doc.error.kind, 'usage', args.join(' '));
    }
  });

  it('rejects a bad --mode and MICROAGENT_MODE', async () => {
    assert.equal((await cli(['--mode', 'xml', 'list'], { stateDir })).code, 2);
    assert.equal((await cli(['list'], { stateDir, env: { MICROAGENT_MODE: 'loud' } })).code, 2);
  });

  it('keeps the guest command’s own --json and --help untouched', async () => {
    // `run ... -- sh -c 'echo --json'` must not switch microagent to AX mode;
    // with no kernel or image this fails before boot, in UX (text) form.
    const r = await cli(['run', '--name', 'bad/name', '--', 'echo', '--json', '--help'], {
      stateDir,
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr.toString(), /invalid workspace name/);
    assert.equal(r.stdout.toString(), '');
  });
});
