/**
 * CLI usage errors, help and exit codes (no VM needed).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseArgs, parseDuration, UsageError } from '../../src/cli/args.js';
import { cli } from '../helpers.js';
import { helpText } from '../../src/cli/registry.js';

describe('argument parser', () => {
  const specs = {
    name: { type: 'string', help: '' },
    env: { type: 'strings', short: 'e', help: '' },
    keep: { type: 'boolean', help: '' },
  } as const;

  it('accepts --flag value, --flag=value, short flags and repeats', () => {
    const p = parseArgs(['--name', 'a', '-e', 'X=1', '--env=Y=2', '--keep', 'cmd'], specs);
    assert.deepEqual(p.flags, { name: 'a', env: ['X=1', 'Y=2'], keep: true });
    assert.deepEqual(p.positionals, ['cmd']);
  });

  it('stops at the first positional when asked, so guest flags pass through', () => {
    const p = parseArgs(['--keep', 'ls', '-la', '--name'], specs, { stopAfterPositionals: 1 });
    assert.deepEqual(p.positionals, ['ls', '-la', '--name']);
  });

  it('splits at --', () => {
    const p = parseArgs(['--keep', '--', '--name', 'x'], specs);
    assert.deepEqual(p.rest, ['--name', 'x']);
  });

  it('rejects unknown flags with a suggestion', () => {
    assert.throws(
      () => parseArgs(['--nmae', 'x'], specs),
      (err: unknown) => {
        assert.ok(err instanceof UsageError);
        assert.match(err.message, /did you mean --name/);
        return true;
      },
    );
  });

  it('rejects a missing value', () => {
    assert.throws(() => parseArgs(['--name'], specs), /needs a value/);
  });

  it('parses durations', () => {
    assert.equal(parseDuration('30s', 't'), 30_000);
    assert.equal(parseDuration('1500ms', 't'), 1500);
    assert.equal(parseDuration('2m', 't'), 120_000);
    assert.equal(parseDuration('5', 't'), 5000);
    assert.throws(() => parseDuration('soon', 't'), UsageError);
  });
});

describe('microagent CLI usage', () => {
  it('exits 2 with a hint for an unknown command', async () => {
    const r = await cli(['rnu']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.toString(), /unknown command "rnu" \(did you mean run\?\)/);
  });

  it('exits 2 when run has no command', async () => {
    const r = await cli(['run']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.toString(), /missing the command/);
  });

  it('exits 2 for an unknown run flag, as JSON with --json', async () => {
    const r = await cli(['--json', 'run', '--bogus', '--', 'true']);
    assert.equal(r.code, 2);
    const doc = JSON.parse(r.stdout.toString());
    assert.equal(doc.ok, false);
    assert.equal(doc.error.code, 'USAGE');
    assert.equal(doc.error.kind, 'usage');
  });

  it('rejects a bad profile, memory and workspace name before booting', async () => {
    assert.equal((await cli(['run', '--profile', 'huge', '--', 'true'])).code, 2);
    assert.equal((await cli(['run', '--memory', 'lots', '--', 'true'])).code, 2);
    const r = await cli(['run', '--name', '../etc', '--', 'true']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.toString(), /invalid workspace name/);
  });

  it('prints help and exits 0, never running the command', async () => {
    const r = await cli(['run', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout.toString(), /Usage: microagent run/);
    const top = await cli(['--help']);
    assert.equal(top.code, 0);
    assert.match(top.stdout.toString(), /Commands:/);
  });

  it('requires --sha256 for custom kernels', async () => {
    const r = await cli(['kernel', 'install', '--file', '/etc/passwd']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.toString(), /needs --sha256/);
  });
});

describe('command table', () => {
  it('lists every command of every command module (they load on use)', async () => {
    const text = await helpText();
    const { WORKSPACE_COMMANDS } = await import('../../src/cli/commands/workspace.js');
    const { FILE_COMMANDS } = await import('../../src/cli/commands/files.js');
    for (const [name, spec] of Object.entries({ ...WORKSPACE_COMMANDS, ...FILE_COMMANDS })) {
      const summary = spec.summary.replace(/[()[\]]/g, '\\$&');
      assert.match(text, new RegExp(`^  ${name} +${summary}$`, 'm'));
    }
  });
});
