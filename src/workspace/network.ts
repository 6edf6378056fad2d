/**
 * A workspace's network settings: parsing and validation of what the caller
 * asks for (`--network`, `-p/--publish`, `--allow-host-loopback`), the
 * settings recorded in workspace.json, and what they become for the guest
 * (config disk) and for the backend (StartConfig.network). The view of
 * `microagent network NAME` is in network-view.ts.
 * docs/networking.md is the reader's guide; docs/architecture.md
 * "Networking" says why netstack.
 */
import { z } from 'zod';
import { MicroagentError } from '../errors.js';
import { IPV4_PATTERN, type GuestNetwork } from '../guest/protocol.js';
import { assertTcpPortsFree } from '../util/ports.js';
import type { VmNetworkInput } from '../vmkit/schema.js';

export const NETWORK_MODES = ['user', 'isolated'] as const;
export type NetworkMode = (typeof NETWORK_MODES)[number];
export const DEFAULT_NETWORK_MODE: NetworkMode = 'user';
/** Host address a published port binds when none is given: never all addresses by default. */
export const DEFAULT_PUBLISH_ADDRESS = '127.0.0.1';

/**
 * The guest side of `user` mode. Every workspace has its own stack, so all
 * guests can use the same private addresses (QEMU's traditional slirp
 * layout). Hosts on the real network inside 10.0.2.0/24 are unreachable from
 * the guest (they look on-link to it).
 */
export const GUEST_NET = {
  address: '10.0.2.15',
  prefix: 24,
  gateway: '10.0.2.2',
  /** DNS sent here is forwarded by the stack to the host's resolvers. */
  dns: '10.0.2.3',
  /**
   * The link's MTU (netstack's side too): under TCG every frame costs the
   * guest an interrupt and a copy, so bigger frames move more per second.
   * docs/benchmarks.md has the figures.
   */
  mtu: 16384,
} as const;

const Ipv4 = z.string().regex(IPV4_PATTERN);

export const PublishedPortSchema = z
  .object({
    protocol: z.literal('tcp'),
    hostAddress: Ipv4,
    hostPort: z.number().int().min(1).max(65535),
    guestPort: z.number().int().min(1).max(65535),
  })
  .strict();
export type PublishedPort = z.infer<typeof PublishedPortSchema>;

/** What workspace.json records (absent in records from before networking: user, no ports). */
export const NetworkSettingsSchema = z.discriminatedUnion('mode', [
  z
    .object({
      mode: z.literal('user'),
      publish: z.array(PublishedPortSchema),
      allowHostLoopback: z.boolean(),
    })
    .strict(),
  z.object({ mode: z.literal('isolated') }).strict(),
]);
export type NetworkSettings = z.infer<typeof NetworkSettingsSchema>;

/** Library-level request (CLI flags map 1:1 onto it). */
export interface NetworkOptions {
  /** Default `user` (parseNetworkMode checks a string from the command line). */
  mode?: NetworkMode;
  /** `[hostIP:]hostPort:guestPort[/tcp]` each (as `-p/--publish`). */
  publish?: string[];
  /** Let the guest reach services on the host's loopback (a risk; off by default). */
  allowHostLoopback?: boolean;
}

export const DEFAULT_NETWORK: NetworkSettings = {
  mode: 'user',
  publish: [],
  allowHostLoopback: false,
};

function usage(message: string, value: string): MicroagentError {
  return new MicroagentError('INVALID_ARGUMENT', message, {
    remediation:
      'Use -p [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp], e.g. -p 8080:80 or -p 127.0.0.1:8080:80.',
    data: { value },
  });
}

function parsePort(text: string, what: string, value: string): number {
  if (!/^[0-9]{1,5}$/.test(text)) {
    throw usage(`invalid --publish "${value}": ${what} "${text}" is not a port number`, value);
  }
  const n = Number(text);
  if (n < 1 || n > 65535) {
    throw usage(`invalid --publish "${value}": ${what} ${n} is out of range (1-65535)`, value);
  }
  return n;
}

/**
 * Parses one `-p/--publish` value: `[hostIP:]hostPort:guestPort[/tcp]`.
 * IPv4 host addresses only; the default host address is 127.0.0.1.
 * Throws INVALID_ARGUMENT naming the value.
 */
export function parsePublish(value: string): PublishedPort {
  let spec = value.trim();
  const slash = spec.lastIndexOf('/');
  if (slash >= 0) {
    const proto = spec.slice(slash + 1).toLowerCase();
    if (proto !== 'tcp') {
      throw usage(
        `invalid --publish "${value}": protocol "${spec.slice(slash + 1)}" is not supported (only tcp)`,
        value,
      );
    }
    spec = spec.slice(0, slash);
  }
  const parts = spec.split(':');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw usage(`invalid --publish "${value}": expected [HOST_IP:]HOST_PORT:GUEST_PORT`, value);
  }
  let hostAddress: string = DEFAULT_PUBLISH_ADDRESS;
  if (parts.length === 3) {
    hostAddress = parts.shift() as string;
    if (!IPV4_PATTERN.test(hostAddress)) {
      throw usage(
        `invalid --publish "${value}": host address "${hostAddress}" is not an IPv4 address`,
        value,
      );
    }
  }
  const [host, guest] = parts as [string, string];
  return {
    protocol: 'tcp',
    hostAddress,
    hostPort: parsePort(host, 'host port', value),
    guestPort: parsePort(guest, 'guest port', value),
  };
}

/** `127.0.0.1:8080->80/tcp` */
export function formatPublished(p: PublishedPort): string {
  return `${p.hostAddress}:${p.hostPort}->${p.guestPort}/${p.protocol}`;
}

/**
 * Validates a network request into the settings to record. Usage errors
 * (INVALID_ARGUMENT) for: an unknown mode, a malformed or out-of-range
 * port, the same host port published twice on overlapping addresses,
 * published ports or --allow-host-loopback with `isolated`.
 */
export function resolveNetwork(options: NetworkOptions = {}): NetworkSettings {
  const mode = parseNetworkMode(options.mode ?? DEFAULT_NETWORK_MODE);
  const publish = (options.publish ?? []).map(parsePublish);
  if (mode === 'isolated') {
    if (publish.length > 0) {
      throw new MicroagentError(
        'INVALID_ARGUMENT',
        `--publish ${formatPublished(publish[0] as PublishedPort)} needs a network: an isolated workspace has no network device`,
        { remediation: 'Drop --publish, or use --network user.', data: { value: 'isolated' } },
      );
    }
    if (options.allowHostLoopback === true) {
      throw new MicroagentError(
        'INVALID_ARGUMENT',
        '--allow-host-loopback needs a network: an isolated workspace has no network device',
        { remediation: 'Drop --allow-host-loopback, or use --network user.' },
      );
    }
    return { mode: 'isolated' };
  }
  for (let i = 0; i < publish.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = publish[i] as PublishedPort;
      const b = publish[j] as PublishedPort;
      const overlap =
        a.hostAddress === b.hostAddress ||
        a.hostAddress === '0.0.0.0' ||
        b.hostAddress === '0.0.0.0';
      if (a.hostPort === b.hostPort && overlap) {
        throw new MicroagentError(
          'INVALID_ARGUMENT',
          `host port ${a.hostPort} is published twice (${formatPublished(b)} and ${formatPublished(a)})`,
          {
            remediation: 'Give each published port its own host port.',
            data: { value: a.hostPort },
          },
        );
      }
    }
  }
  return { mode: 'user', publish, allowHostLoopback: options.allowHostLoopback === true };
}

/** `user` or `isolated`; INVALID_ARGUMENT naming anything else. */
export function parseNetworkMode(value: string): NetworkMode {
  if (value !== 'user' && value !== 'isolated') {
    throw new MicroagentError('INVALID_ARGUMENT', `unknown network mode "${value}"`, {
      remediation: 'Use --network user (the default) or --network isolated.',
      data: { value },
    });
  }
  return value;
}

/** The settings of a record (records from before networking: the default). */
export function networkOf(record: { network?: NetworkSettings }): NetworkSettings {
  return record.network ?? DEFAULT_NETWORK;
}

/** The config-disk `network` field for these settings. */
export function guestNetworkConfig(settings: NetworkSettings): GuestNetwork {
  if (settings.mode === 'isolated') return { mode: 'isolated' };
  return {
    mode: 'user',
    address: `${GUEST_NET.address}/${GUEST_NET.prefix}`,
    gateway: GUEST_NET.gateway,
    // The stack's forwarder: queries go on to the host's first resolver in
    // /etc/resolv.conf (a loopback one such as systemd-resolved's works too).
    dns: [GUEST_NET.dns],
    // QEMU's slirp keeps its side of the link at 1500.
    ...(process.env.MICROAGENT_NET_BACKEND === 'slirp' ? {} : { mtu: GUEST_NET.mtu }),
  };
}

/**
 * StartConfig.network for these settings. MICROAGENT_NET_BACKEND=slirp
 * selects QEMU's slirp (accepted only with allowHostLoopback; used to
 * compare the two).
 */
export function vmNetwork(settings: NetworkSettings): VmNetworkInput {
  if (settings.mode === 'isolated') return { mode: 'isolated' };
  const backend = process.env.MICROAGENT_NET_BACKEND === 'slirp' ? 'slirp' : 'netstack';
  return {
    mode: 'user',
    backend,
    guestAddress: GUEST_NET.address,
    gateway: GUEST_NET.gateway,
    dns: GUEST_NET.dns,
    ...(backend === 'netstack' ? { mtu: GUEST_NET.mtu } : {}),
    forwards: settings.publish,
    allowHostLoopback: settings.allowHostLoopback,
  };
}

/** Fails with PORT_IN_USE before any boot work when a published host port is taken. */
export async function checkPublishedPorts(settings: NetworkSettings): Promise<void> {
  if (settings.mode === 'user') await assertTcpPortsFree(settings.publish);
}
