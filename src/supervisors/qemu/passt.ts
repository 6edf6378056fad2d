/**
 * The passt command line for one VM (user-mode networking without root; see
 * docs/architecture.md "Networking" and notes/qemu-on-this-host.md §3).
 * A pure function of the network spec so it is unit-tested.
 */
import type { VmNetwork } from '../../vmkit/schema.js';

/** The descriptor number at which passt and QEMU each get their end of the socket pair. */
export const NET_FD = 3;

type UserNetwork = Extract<VmNetwork, { mode: 'user' }>;

/** Full argv (argv[0] is the passt binary). */
export function buildPasstArgs(passtBinary: string, net: UserNetwork): string[] {
  const argv = [
    passtBinary,
    '-f', // foreground: stay the monitor's child (no daemon fork)
    '-q', // no banner; errors still go to stderr (passt.log)
    '-e', // log to stderr (the log file) rather than syslog
    '-4', // IPv4 only: the guest is configured for IPv4 only
    '--fd',
    String(NET_FD), // pre-connected socket pair with QEMU: no socket file, exits on EOF
    '-a',
    net.guestAddress, // the address the guest uses (also what passt's DHCP would offer)
    '-n',
    '24',
    '-g',
    net.gateway,
    '--dns-forward',
    net.dns, // DNS sent to this guest-side address goes to the host's first resolver (resolv.conf)
  ];
  if (net.mtu !== undefined) argv.push('-m', String(net.mtu));
  // By default passt makes the gateway address an alias for the host's
  // loopback; the guest must not reach host-local services unless allowed.
  if (!net.allowHostLoopback) argv.push('--no-map-gw');
  // Each published port binds exactly the host address asked for (passt's
  // own default would be all addresses).
  for (const f of net.forwards) argv.push('-t', `${f.hostAddress}/${f.hostPort}:${f.guestPort}`);
  if (net.forwards.length === 0) argv.push('-t', 'none');
  argv.push('-u', 'none'); // no inbound UDP forwarding
  return argv;
}
