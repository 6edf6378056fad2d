/**
 * Entry point of the per-workspace monitor process:
 *
 *   node monitor-main.js <runtime dir>
 *
 * Started detached (own session) by the QEMU supervisor's `start`, with
 * stdout/stderr on <run>/monitor.log; reads <run>/monitor-config.json.
 */
import { runMonitor } from './monitor.js';

const runtimeDir = process.argv[2];
if (runtimeDir === undefined || !runtimeDir.startsWith('/')) {
  process.stderr.write('usage: monitor-main.js <absolute runtime dir>\n');
  process.exit(2);
}
const code = await runMonitor(runtimeDir);
process.exit(code);
