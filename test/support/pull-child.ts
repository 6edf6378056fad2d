/**
 * Pulls one image in a separate process (for the concurrent-pull test):
 *   node pull-child.js STATE_DIR REFERENCE
 * Prints the pull result's digest and downloaded bytes as JSON.
 */
import { pullImage } from '../../src/oci/pull.js';
import { StatePaths } from '../../src/paths.js';

const [stateDir, reference] = process.argv.slice(2);
if (!stateDir || !reference) throw new Error('usage: pull-child STATE_DIR REFERENCE');
const r = await pullImage(new StatePaths(stateDir), reference, {
  retry: { tries: 3, baseDelayMs: 20 },
});
process.stdout.write(
  JSON.stringify({ digest: r.resolvedDigest, downloadedBytes: r.downloadedBytes }) + '\n',
);
