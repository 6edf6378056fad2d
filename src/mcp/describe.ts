/**
 * `describe`: a machine-readable account of what this host and build can do,
 * so that an agent can plan before it boots anything.
 */
import { CPUS, DISK_MIB, MEMORY_MIB } from '../limits.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { listKernels, readDefaultKernelId } from '../kernel/index.js';
import { PACKAGE_ROOT, StatePaths } from '../paths.js';
import { run } from '../proc/spawn.js';
import { chooseAccel } from '../supervisors/qemu/accel.js';
import { PROFILES } from '../workspace/profiles.js';
import { IDEMPOTENCY_MAX_ENTRIES, IDEMPOTENCY_TTL_MS } from './idempotency.js';
import type { ToolDef } from './tools.js';
import { DEFAULT_OUTPUT_LIMIT, MAX_OUTPUT_LIMIT } from './tools.js';

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

export async function describeHost(stateDir: string, tools: readonly ToolDef[]): Promise<unknown> {
  const paths = new StatePaths(stateDir);
  const accel = chooseAccel('auto');
  const [qemu, kernels, defaultKernel] = await Promise.all([
    qemuVersion(),
    listKernels(paths).catch(() => []),
    readDefaultKernelId(paths).catch(() => undefined),
  ]);
  const kernel = kernels.find((k) => k.id === defaultKernel);
  return {
    service: 'microagent',
    transport: 'mcp_stdio',
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
    limits: {
      profiles: PROFILES,
      defaultProfile: 'small',
      cpus: CPUS,
      memoryMiB: MEMORY_MIB,
      diskMiB: DISK_MIB,
      outputBytes: { default: DEFAULT_OUTPUT_LIMIT, max: MAX_OUTPUT_LIMIT },
      bootTimeoutMs: { default: 60_000, max: 600_000 },
      idempotency: { ttlMs: IDEMPOTENCY_TTL_MS, maxEntries: IDEMPOTENCY_MAX_ENTRIES },
    },
    features: {
      network: ['user', 'isolated'],
      volumes: false,
      snapshots: false,
      cp: 'running workspaces (through the guest agent)',
    },
    tools: tools.map((t) => ({
      name: t.name,
      title: t.title,
      mutating: t.mutating,
      annotations: t.annotations,
    })),
  };
}
