/**
 * Entry point of the per-workspace monitor process:
 *
 *   node monitor-main.js <runtime dir>
 *
 * Started detached (own session) by the QEMU supervisor's `start`, with
 * stdout/stderr on <run>/monitor.log; reads <run>/monitor-config.json.
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { Monitor } from './monitor.js';

const runtimeDir = process.argv[2];
if (runtimeDir === undefined || !runtimeDir.startsWith('/')) {
  process.stderr.write('usage: monitor-main.js <absolute runtime dir>\n');
  process.exit(2);
}
const code = await runMonitor(runtimeDir);
process.exit(code);

/** The monitor process's body: returns its exit code. */
async function runMonitor(runtimeDir: string): Promise<number> {
  let monitor: Monitor;
  try {
    monitor = Monitor.fromRuntimeDir(runtimeDir);
  } catch (err) {
    appendFileSync(
      join(runtimeDir, 'monitor.log'),
      `${new Date().toISOString()} [${process.pid}] bad monitor config: ${(err as Error).message}\n`,
    );
    return 2;
  }
  const crash = (err: unknown): void => {
    void monitor.recordCrash(err).finally(() => process.exit(70));
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => {
      monitor.log(`${sig} received: killing QEMU`);
      monitor.kill('killed');
    });
  }
  process.on('exit', () => monitor.emergencyKill('monitor_error'));
  try {
    await monitor.start();
  } catch (err) {
    crash(err);
  }
  const code = await monitor.done;
  // The caller exits the process next: let the last control answers flush.
  await new Promise((r) => setTimeout(r, 50));
  return code;
}
