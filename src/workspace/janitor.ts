/**
 * The janitor of a throwaway workspace (native/janitor.c): a detached helper
 * that deletes the workspace's folder if this process dies before it does
 * so itself. A `run` hosts its VM's monitor in its own process, so a
 * SIGKILLed run takes its VM with it (PDEATHSIG) but cannot clean up.
 */
import type { Writable } from 'node:stream';
import { MicroagentError } from '../errors.js';
import { BUILD } from '../paths.js';
import { spawnDetached } from '../proc/spawn.js';
import { requireBuiltHelper } from '../util/helpers.js';

export interface Janitor {
  /** This process has cleaned up (or keeps the folder): the janitor exits. */
  release(): void;
}

export async function startJanitor(dir: string): Promise<Janitor> {
  await requireBuiltHelper(BUILD.janitor);
  const child = spawnDetached([BUILD.janitor, dir], { stdio: ['pipe', 'ignore', 'ignore'] });
  child.on('error', () => {});
  child.unref();
  const pipe = child.stdin as (Writable & { unref?: () => void }) | null;
  if (child.pid === undefined || pipe === null) {
    throw new MicroagentError('HOST_TOOL_FAILED', `cannot start ${BUILD.janitor}`);
  }
  pipe.on('error', () => {});
  // The pipe must not keep this process alive; it closes when we exit.
  pipe.unref?.();
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      pipe.end('x');
    },
  };
}
