/**
 * `microagent network NAME`: a workspace's declared network settings and,
 * while its VM exists, the runtime view (the network stack process and
 * whether each published port's host listener is up).
 */
import { readFile } from 'node:fs/promises';
import { StatePaths } from '../paths.js';
import type { NetBackend, VmStatus } from '../vmkit/schema.js';
import { GUEST_NET, networkOf, type NetworkSettings, type PublishedPort } from './network.js';
import { loadWorkspace } from './store.js';

export interface NetworkView {
  name: string;
  state: string;
  declared: NetworkSettings;
  /** What the guest is configured with (from the declared mode). */
  guest:
    | { mode: 'isolated'; interfaces: ['lo'] }
    | { mode: 'user'; address: string; gateway: string; dns: string[]; mtu: number };
  /** Only while a VM exists. */
  runtime?: {
    vmState: VmStatus['state'];
    backend?: NetBackend;
    /** netstack's pid while it runs. */
    helperPid?: number;
    /** How often netstack was restarted after it died under the running VM. */
    helperRestarts?: number;
    /** Why the guest has no network while the VM runs (netstack ended for good). */
    down?: string;
    /** Each published port and whether its host listener is up now. */
    published: (PublishedPort & { listening: boolean })[];
  };
}

/** The declared settings and, when a VM runs, the live view (network stack, host listeners). */
export async function workspaceNetwork(options: {
  stateDir?: string;
  name: string;
}): Promise<NetworkView> {
  const paths = new StatePaths(options.stateDir);
  const { record, vm } = await loadWorkspace(paths, options.name);
  const declared = networkOf(record);
  const guest: NetworkView['guest'] =
    declared.mode === 'isolated'
      ? { mode: 'isolated', interfaces: ['lo'] }
      : {
          mode: 'user',
          address: `${GUEST_NET.address}/${GUEST_NET.prefix}`,
          gateway: GUEST_NET.gateway,
          dns: [GUEST_NET.dns],
          mtu: GUEST_NET.mtu,
        };
  const view: NetworkView = { name: record.name, state: record.state, declared, guest };
  if (vm && vm.state !== 'exited') {
    const listening = await listeningTcp();
    view.runtime = {
      vmState: vm.state,
      ...(vm.network ? { backend: vm.network.backend } : {}),
      ...(vm.network?.pid !== undefined ? { helperPid: vm.network.pid } : {}),
      ...(vm.network?.restarts !== undefined ? { helperRestarts: vm.network.restarts } : {}),
      ...(vm.network?.down !== undefined ? { down: vm.network.down } : {}),
      published: (declared.mode === 'user' ? declared.publish : []).map((p) => ({
        ...p,
        listening:
          listening.has(`${p.hostAddress}:${p.hostPort}`) || listening.has(`0.0.0.0:${p.hostPort}`),
      })),
    };
  }
  return view;
}

/** "a.b.c.d:port" of every IPv4 TCP socket in LISTEN, from /proc/net/tcp. */
async function listeningTcp(): Promise<Set<string>> {
  const out = new Set<string>();
  let text = '';
  try {
    text = await readFile('/proc/net/tcp', 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[3] !== '0A') continue; // TCP_LISTEN
    const [hexIp, hexPort] = (f[1] ?? '').split(':');
    if (!hexIp || !hexPort) continue;
    const n = parseInt(hexIp, 16); // little-endian u32 on x86
    const ip = [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24].join('.');
    out.add(`${ip}:${parseInt(hexPort, 16)}`);
  }
  return out;
}
