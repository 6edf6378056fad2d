/**
 * Every path microagent uses is derived here, from the state directory and
 * the package root. Nothing else builds paths by hand.
 */
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MicroagentError } from './errors.js';

/** The repository / package root (dist/src/paths.js is two levels below). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Files built from this checkout by `npm run build`. */
export const BUILD = {
  dir: join(PACKAGE_ROOT, 'build'),
  /** The static guest init (stage 1 in the initramfs, PID 1 in the rootfs). */
  guestInit: join(PACKAGE_ROOT, 'build', 'microagent-init'),
  /** Static helper that execs the VMM with PR_SET_PDEATHSIG (see native/vmm-exec.c). */
  vmmExec: join(PACKAGE_ROOT, 'build', 'vmm-exec'),
  /** A VM's user-mode network stack on libslirp, with the guest-frame filter (native/netstack.c). */
  netstack: join(PACKAGE_ROOT, 'build', 'netstack'),
  /** Static helper that removes a run's folder if the run dies (native/janitor.c). */
  janitor: join(PACKAGE_ROOT, 'build', 'janitor'),
  /** The QEMU supervisor executable (JSON in, JSON out). */
  qemuSupervisor: join(PACKAGE_ROOT, 'dist', 'src', 'supervisors', 'qemu', 'main.js'),
  /** The per-workspace monitor process. */
  qemuMonitor: join(PACKAGE_ROOT, 'dist', 'src', 'supervisors', 'qemu', 'monitor-main.js'),
};

/** Longest unix socket path Linux accepts (sun_path is 108 bytes incl. NUL). */
export const MAX_SOCKET_PATH = 107;

export function defaultStateDir(): string {
  const fromEnv = process.env.MICROAGENT_STATE_DIR;
  if (fromEnv) return resolve(fromEnv);
  const home = homedir();
  return home ? join(home, '.microagent') : join(tmpdir(), 'microagent');
}

/** Layout of one state directory. */
export class StatePaths {
  readonly root: string;

  constructor(root: string = defaultStateDir()) {
    this.root = resolve(root);
  }

  get kernels(): string {
    return join(this.root, 'kernels');
  }

  kernelDir(id: string): string {
    return join(this.kernels, id);
  }

  /** Pointer file naming the default kernel's id. */
  get defaultKernelPointer(): string {
    return join(this.kernels, 'default');
  }

  get images(): string {
    return join(this.root, 'images');
  }

  /** Content-addressed blob cache shared by all images: blobs/sha256/<hex>. */
  get blobs(): string {
    return join(this.root, 'blobs');
  }

  /** Records of pulled images, keyed by canonical reference. */
  get imageIndex(): string {
    return join(this.images, 'index.json');
  }

  /** Pins of pulls in progress (blobs that prune must keep). */
  get imagePins(): string {
    return join(this.images, 'pins');
  }

  /** Cached rootfs baselines built from OCI images (src/rootfs/baseline.ts). */
  get baselines(): string {
    return join(this.root, 'baselines');
  }

  /** One baseline: `rootfs.ext4` and `baseline.json`. */
  baselineDir(key: string): string {
    return join(this.baselines, key);
  }

  /** Lock taken while a baseline is built. */
  baselineLock(key: string): string {
    return join(this.locks, `baseline-${key}.lock`);
  }

  get tmp(): string {
    return join(this.root, 'tmp');
  }

  get locks(): string {
    return join(this.root, 'locks');
  }

  get workspaces(): string {
    return join(this.root, 'workspaces');
  }

  workspace(name: string): WorkspacePaths {
    return new WorkspacePaths(join(this.workspaces, name));
  }
}

/** Files of one workspace. The runtime folder holds the live VM's sockets. */
export class WorkspacePaths {
  constructor(readonly dir: string) {}
  get record(): string {
    return join(this.dir, 'workspace.json');
  }
  get events(): string {
    return join(this.dir, 'events.jsonl');
  }
  get lock(): string {
    return join(this.dir, '.lock');
  }
  get disk(): string {
    return join(this.dir, 'rootfs.qcow2');
  }
  get configDisk(): string {
    return join(this.dir, 'config.img');
  }
  get runtime(): string {
    return join(this.dir, 'run');
  }
  get agentSocket(): string {
    return join(this.runtime, 'agent.sock');
  }
  get controlSocket(): string {
    return join(this.runtime, 'ctl.sock');
  }
  get result(): string {
    return join(this.dir, 'result.json');
  }

  /** Fails early when the runtime sockets would not fit in sun_path. */
  checkSocketPaths(): void {
    for (const p of [this.agentSocket, this.controlSocket, join(this.runtime, 'mux.sock')]) {
      if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
        throw new MicroagentError(
          'STATE_DIR_INVALID',
          `socket path ${p} is longer than ${MAX_SOCKET_PATH} bytes`,
        );
      }
    }
  }
}
