import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ERROR_CODES, MicroagentError, errorFromJSON } from '../../src/errors.js';
import { PACKAGE_ROOT } from '../../src/paths.js';

describe('errors', () => {
  it('are all documented in docs/errors.md', () => {
    const doc = readFileSync(join(PACKAGE_ROOT, 'docs', 'errors.md'), 'utf8');
    for (const code of Object.keys(ERROR_CODES)) {
      assert.ok(
        doc.includes(`\`${code}\``),
        `${code} is missing from docs/errors.md (run scripts/gen-errors-doc.mjs)`,
      );
    }
  });

  it('serialize to the documented wire shape and back', () => {
    const err = new MicroagentError('BOOT_TIMEOUT', 'guest not ready', { data: { tail: 'x' } });
    const wire = err.toJSON();
    assert.deepEqual(Object.keys(wire).sort(), [
      'code',
      'data',
      'kind',
      'message',
      'remediation',
      'retryable',
    ]);
    assert.equal(wire.retryable, true);
    const back = errorFromJSON('supervisor', wire);
    assert.equal(back.code, 'BOOT_TIMEOUT');
    assert.equal(back.origin, 'supervisor');
  });
});

describe('lifecycle docs', () => {
  it('list every transition of the state table', async () => {
    const { TRANSITIONS } = await import('../../src/workspace/states.js');
    const doc = readFileSync(join(PACKAGE_ROOT, 'docs', 'lifecycle.md'), 'utf8');
    for (const [op, rule] of Object.entries(TRANSITIONS)) {
      assert.ok(
        doc.includes(`| \`${op}\` | ${rule.from.join(', ')} |`),
        `${op} is missing or stale in docs/lifecycle.md (run scripts/gen-lifecycle-doc.mjs)`,
      );
    }
  });
});
