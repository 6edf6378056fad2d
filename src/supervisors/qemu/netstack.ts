/**
 * The netstack command line for one VM (build/netstack: a user-mode network
 * on libslirp, docs/networking.md). A pure function of the network spec, so
 * it is unit-tested.
 */
import type { VmNetwork } from '../../vmkit/schema.js';

type UserNetwork = Extract<VmNetwork, { mode: 'user' }>;

/** The guest's prefix length: the stack assumes a /24 around the guest's address. */
const PREFIX = 24;
/** The MTU when the spec names none (the guest config must match). */
export const DEFAULT_NETSTACK_MTU = 65520;

/** Full argv (argv[0] is the netstack binary); socketPath is QEMU's listening NIC socket. */
export function buildNetstackArgs(binary: string, net: UserNetwork, socketPath: string): string[] {
  const argv = [
    binary,
    '--socket',
    socketPath,
    '--address',
    net.guestAddress,
    '--prefix',
    String(PREFIX),
    '--gateway',
    net.gateway,
    '--dns',
    net.dns, // queries to this guest-side address go to the host's first resolver
    '--mtu',
    String(net.mtu ?? DEFAULT_NETSTACK_MTU),
  ];
  // Off by default: the gateway is then just an address, not the host's loopback.
  if (net.allowHostLoopback) argv.push('--allow-host-loopback');
  // Each published port binds exactly the host address asked for.
  for (const f of net.forwards)
    argv.push('--forward', `${f.hostAddress}:${f.hostPort}:${f.guestPort}`);
  return argv;
}
