/**
 * `describe`: a machine-readable account of what this host and build can do,
 * so that an agent can plan before it boots anything.
 */
import { CPUS, DISK_MIB, hostInfo, MEMORY_MIB, PROFILES } from '../index.js';
import { IDEMPOTENCY_MAX_ENTRIES, IDEMPOTENCY_TTL_MS } from './idempotency.js';
import type { ToolDef } from './tools.js';
import { DEFAULT_OUTPUT_LIMIT, MAX_OUTPUT_LIMIT } from './tools.js';

export async function describeHost(stateDir: string, tools: readonly ToolDef[]): Promise<unknown> {
  const host = await hostInfo({ stateDir });
  return {
    service: 'microagent',
    transport: 'mcp_stdio',
    stateDir: host.stateDir,
    backends: host.backends,
    accelerator: host.accelerator,
    versions: host.versions,
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
