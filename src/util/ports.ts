/**
 * Host TCP port probes for published ports: bind each address:port for a
 * moment, so that a port already taken is a clear error before a VM boots
 * rather than a network helper that dies during the boot.
 */
import { createServer } from 'node:net';
import { MicroagentError } from '../errors.js';

export interface HostPort {
  hostAddress: string;
  hostPort: number;
}

/** Resolves when address:port can be bound right now; the reason otherwise. */
export function probeTcpPort(
  p: HostPort,
): Promise<{ free: true } | { free: false; reason: string }> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      resolve({ free: false, reason: err.code ?? err.message });
    });
    // exclusive: never share a port with a cluster primary; the bind is a real test.
    server.listen({ host: p.hostAddress, port: p.hostPort, exclusive: true }, () => {
      server.close(() => resolve({ free: true }));
    });
  });
}

/** Throws PORT_IN_USE (or INVALID_ARGUMENT for an address this host lacks) for the first port that cannot be bound. */
export async function assertTcpPortsFree(ports: readonly HostPort[]): Promise<void> {
  for (const p of ports) {
    const r = await probeTcpPort(p);
    if (r.free) continue;
    const where = `${p.hostAddress}:${p.hostPort}`;
    if (r.reason === 'EADDRNOTAVAIL') {
      throw new MicroagentError(
        'INVALID_ARGUMENT',
        `cannot publish on ${where}: this host has no address ${p.hostAddress}`,
        {
          remediation: "Publish on 127.0.0.1 (the default) or on one of this host's addresses.",
          data: { ...p },
        },
      );
    }
    throw new MicroagentError(
      'PORT_IN_USE',
      `host port ${where} is not available (${r.reason === 'EADDRINUSE' ? 'already in use' : r.reason})`,
      { data: { ...p, reason: r.reason } },
    );
  }
}
