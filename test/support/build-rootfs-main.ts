/**
 * Runs buildRootfs in its own process (tests start it as another user):
 *   node build-rootfs-main.js <state dir> <input JSON>
 * Prints the result (or the error) as JSON on stdout.
 */
import { buildRootfs, type RootfsBuildInput } from '../../src/rootfs/build.js';
import { StatePaths } from '../../src/paths.js';
import { toMicroagentError } from '../../src/errors.js';

const [stateDir, inputJson, outPath] = process.argv.slice(2);
try {
  const input = JSON.parse(inputJson!) as RootfsBuildInput;
  const r = await buildRootfs(new StatePaths(stateDir), input, outPath ? { outPath } : {});
  process.stdout.write(JSON.stringify({ ok: true, result: r, uid: process.getuid?.() }));
} catch (err) {
  process.stdout.write(JSON.stringify({ ok: false, error: toMicroagentError(err).toJSON() }));
  process.exitCode = 1;
}
