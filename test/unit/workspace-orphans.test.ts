/**
 * A workspace directory without a record whose creator died (a run or create
 * killed while preparing its image) is removed by the next listing; one whose
 * creator is alive, or that has a record, is left alone.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { procStat } from '../../src/proc/spawn.js';
import { listWorkspaceSummaries } from '../../src/workspace/views.js';

describe('orphaned workspace directories', () => {
  let stateDir: string;
  before(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'ma-orphans-'));
  });
  after(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  it('are reaped when their creator is gone, kept while it lives', async () => {
    const root = join(stateDir, 'workspaces');
    await mkdir(join(root, 'dead'), { recursive: true });
    await writeFile(
      join(root, 'dead', 'owner.json'),
      JSON.stringify({ pid: 999_999_999, startTime: 1 }),
    );
    await mkdir(join(root, 'alive'));
    await writeFile(
      join(root, 'alive', 'owner.json'),
      JSON.stringify({ pid: process.pid, startTime: procStat(process.pid)?.startTime }),
    );
    await mkdir(join(root, 'foreign')); // no stamp: not ours to judge
    assert.deepEqual(await listWorkspaceSummaries({ stateDir }), []);
    assert.deepEqual((await readdir(root)).sort(), ['alive', 'foreign']);
  });
});
