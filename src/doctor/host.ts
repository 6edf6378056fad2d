/**
 * What this host and build are, for callers that plan before they boot
 * (MCP's `describe`): the backend, the accelerator and why, and versions.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { listKernels, readDefaultKernelId } from '../kernel/index.js';
import { PACKAGE_ROOT, StatePaths } from '../paths.js';
import { run } from '../proc/spawn.js';
import { chooseAccel } from '../supervisors/qemu/accel.js';

/** This package's version (package.json), or 'unknown'. */
export function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

async function qemuVersion(): Promise<string | null> {
  try {
    const r = await run(['qemu-system-x86_64', '--version'], {
      timeoutMs: 5_000,
      allowFailure: true,
    });
    const m = /version (\S+)/.exec(r.stdout.toString('utf8'));
    return m?.[1] ?? null;
  } catch {
    return null;
  }
}

export interface HostInfo {
  stateDir: string;
  backends: { name: 'qemu'; available: boolean; machine: 'microvm'; arch: string }[];
  accelerator: { name: string; reason: string };
  versions: {
    microagent: string;
    node: string;
    qemu: string | null;
    kernel: { id: string; version: string } | null;
  };
}

export async function hostInfo(options: { stateDir?: string } = {}): Promise<HostInfo> {
  const paths = new StatePaths(options.stateDir);
  const accel = chooseAccel('auto');
  const [qemu, kernels, defaultKernel] = await Promise.all([
    qemuVersion(),
    listKernels(paths).catch(() => []),
    readDefaultKernelId(paths).catch(() => undefined),
  ]);
  const kernel = kernels.find((k) => k.id === defaultKernel);
  return {
    stateDir: paths.root,
    backends: [
      {
        name: 'qemu',
        available: qemu !== null,
        machine: 'microvm',
        arch: process.arch === 'x64' ? 'x86_64' : process.arch,
      },
    ],
    accelerator: { name: accel.accel, reason: accel.reason },
    versions: {
      microagent: packageVersion(),
      node: process.versions.node,
      qemu,
      kernel: kernel ? { id: kernel.id, version: kernel.version } : null,
    },
  };
}
