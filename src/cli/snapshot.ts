/**
 * The entry of the CLI's start-up snapshot. scripts/build-snapshot.mjs
 * bundles this file with everything it imports into one script, and
 * `node --build-snapshot` runs it and saves the heap. bin/microagent then
 * starts `node --snapshot-blob` from that heap: the modules a `run` needs are
 * already compiled and evaluated, which takes ~35-40 ms off every start-up.
 *
 * Whatever a module computes while it is evaluated here is frozen into the
 * snapshot. So no module may read the environment, the time, the user or
 * the working directory at load time; they do it when called. The build runs
 * with a scrubbed environment, and the test suite checks that none of it
 * ends up in the blob.
 */
import { startupSnapshot } from 'node:v8';
import { runCli } from './cli.js';
import { COMMANDS } from './registry.js';

if (!startupSnapshot.isBuildingSnapshot()) {
  process.stderr.write(
    'snapshot.js is the entry of the start-up snapshot (scripts/build-snapshot.mjs); run bin/microagent instead\n',
  );
  process.exit(2);
}

// Evaluated now, saved in the snapshot: the commands that sit on a workspace's
// critical path and the supervisor `run` starts in-process. Other commands
// are in the bundle too and are evaluated on first use.
const preload = Promise.all([
  COMMANDS.run?.(),
  COMMANDS.exec?.(),
  import('../supervisors/qemu/supervisor.js'),
]);
preload.catch((err: unknown) => {
  // Exiting here writes no blob, and the build reports the failure.
  process.stderr.write(`snapshot: preloading failed: ${String(err)}\n`);
  process.exit(1);
});

startupSnapshot.setDeserializeMainFunction(() => {
  void runCli(process.argv.slice(2));
});
