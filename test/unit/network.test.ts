/**
 * Network settings: -p/--publish parsing and validation, what the settings
 * become for the guest config disk and the backend, and the netstack / QEMU
 * command lines built from them.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, it } from 'node:test';
import { GuestConfigSchema } from '../../src/guest/protocol.js';
import { MicroagentError } from '../../src/errors.js';
import { buildNetstackArgs } from '../../src/supervisors/qemu/netstack.js';
import { networkArgs } from '../../src/supervisors/qemu/qemu-args.js';
import { assertTcpPortsFree } from '../../src/util/ports.js';
import { StartConfigSchema } from '../../src/vmkit/schema.js';
import {
  guestNetworkConfig,
  parsePublish,
  resolveNetwork,
  vmNetwork,
} from '../../src/workspace/network.js';

function rejects(fn: () => unknown, code: string, mention: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof MicroagentError, String(err));
    assert.equal(err.code, code);
    assert.ok(err.message.includes(mention), `"${err.message}" should mention "${mention}"`);
    return true;
  });
}

describe('parsePublish', () => {
  it('defaults the host address to 127.0.0.1, never all addresses', () => {
    assert.deepEqual(parsePublish('8080:80'), {
      protocol: 'tcp',
      hostAddress: '127.0.0.1',
      hostPort: 8080,
      guestPort: 80,
    });
  });

  it('accepts an explicit IPv4 host address and a /tcp suffix', () => {
    assert.deepEqual(parsePublish('0.0.0.0:8443:443/tcp'), {
      protocol: 'tcp',
      hostAddress: '0.0.0.0',
      hostPort: 8443,
      guestPort: 443,
    });
    assert.equal(parsePublish('127.0.0.2:1:65535').guestPort, 65535);
  });

  it('rejects malformed values, naming the value', () => {
    for (const bad of [
      '8080',
      '',
      ':80',
      '8080:',
      'a:80',
      '80:b',
      '1:2:3:4',
      '8080:80/udp',
      '8080:80/',
      'localhost:8080:80',
      '256.0.0.1:80:80',
      '01.2.3.4:80:80',
      '-1:80',
      '80.5:80',
    ]) {
      rejects(() => parsePublish(bad), 'INVALID_ARGUMENT', `"${bad}"`);
    }
  });

  it('rejects ports out of range', () => {
    rejects(() => parsePublish('0:80'), 'INVALID_ARGUMENT', 'out of range');
    rejects(() => parsePublish('65536:80'), 'INVALID_ARGUMENT', '65536');
    rejects(() => parsePublish('8080:99999'), 'INVALID_ARGUMENT', 'out of range');
  });
});

describe('resolveNetwork', () => {
  it('defaults to user mode, no ports, host loopback blocked', () => {
    assert.deepEqual(resolveNetwork(), { mode: 'user', publish: [], allowHostLoopback: false });
  });

  it('rejects the same host port twice on overlapping addresses', () => {
    rejects(() => resolveNetwork({ publish: ['8080:80', '8080:81'] }), 'INVALID_ARGUMENT', '8080');
    rejects(
      () => resolveNetwork({ publish: ['0.0.0.0:8080:80', '127.0.0.1:8080:81'] }),
      'INVALID_ARGUMENT',
      'published twice',
    );
    // Different addresses, same port: allowed.
    assert.equal(
      resolveNetwork({ publish: ['127.0.0.1:8080:80', '127.0.0.2:8080:81'] }).mode,
      'user',
    );
  });

  it('rejects published ports and host loopback access in isolated mode', () => {
    rejects(
      () => resolveNetwork({ mode: 'isolated', publish: ['8080:80'] }),
      'INVALID_ARGUMENT',
      'isolated',
    );
    rejects(
      () => resolveNetwork({ mode: 'isolated', allowHostLoopback: true }),
      'INVALID_ARGUMENT',
      'isolated',
    );
    assert.deepEqual(resolveNetwork({ mode: 'isolated' }), { mode: 'isolated' });
  });

  it('rejects an unknown mode', () => {
    rejects(() => resolveNetwork({ mode: 'bridge' as 'user' }), 'INVALID_ARGUMENT', '"bridge"');
  });
});

describe('network settings → guest config and backend', () => {
  it('gives the guest a static address, gateway, resolver and MTU (valid config disk field)', () => {
    const g = guestNetworkConfig(resolveNetwork());
    assert.deepEqual(g, {
      mode: 'user',
      address: '10.0.2.15/24',
      gateway: '10.0.2.2',
      dns: ['10.0.2.3'],
      mtu: 16384,
    });
    GuestConfigSchema.parse({ v: 1, workspace: 'w', hostname: 'h', network: g });
    assert.deepEqual(guestNetworkConfig({ mode: 'isolated' }), { mode: 'isolated' });
  });

  it('makes a valid StartConfig.network with the published ports', () => {
    const net = vmNetwork(resolveNetwork({ publish: ['18080:80'] }));
    const c = StartConfigSchema.parse({
      runtimeDir: '/w/run',
      workspaceDir: '/w',
      kernel: { path: '/k' },
      disks: [],
      cpus: 1,
      memoryMiB: 256,
      bootTimeoutMs: 1000,
      network: net,
    });
    assert.equal(c.network?.mode, 'user');
    assert.ok(c.network?.mode === 'user' && c.network.backend === 'netstack');
  });
});

describe('netstack and QEMU command lines', () => {
  const user = {
    mode: 'user' as const,
    backend: 'netstack' as const,
    guestAddress: '10.0.2.15',
    gateway: '10.0.2.2',
    dns: '10.0.2.3',
    mtu: 16384,
    forwards: [
      { protocol: 'tcp' as const, hostAddress: '127.0.0.1', hostPort: 18080, guestPort: 80 },
    ],
    allowHostLoopback: false,
  };
  const flag = (argv: string[], name: string): string | undefined =>
    argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined;

  it("blocks the host loopback unless allowed, binds only the asked address, names QEMU's socket", () => {
    const argv = buildNetstackArgs('/x/build/netstack', user, '/run/w/net.sock');
    assert.equal(argv[0], '/x/build/netstack');
    assert.equal(flag(argv, '--socket'), '/run/w/net.sock');
    assert.equal(flag(argv, '--address'), '10.0.2.15');
    assert.equal(flag(argv, '--prefix'), '24');
    assert.equal(flag(argv, '--gateway'), '10.0.2.2');
    assert.equal(flag(argv, '--dns'), '10.0.2.3');
    assert.equal(flag(argv, '--mtu'), '16384');
    assert.equal(flag(argv, '--forward'), '127.0.0.1:18080:80');
    assert.ok(!argv.includes('--allow-host-loopback'));
    const open = buildNetstackArgs('/x/build/netstack', { ...user, allowHostLoopback: true }, '/s');
    assert.ok(open.includes('--allow-host-loopback'));
    const none = buildNetstackArgs('/x/build/netstack', { ...user, forwards: [] }, '/s');
    assert.ok(!none.includes('--forward'));
  });

  it('gives QEMU a virtio-net device on a listening stream socket, or slirp with hostfwd', () => {
    assert.deepEqual(networkArgs({ kind: 'stream', path: '/run/a,b/net.sock' }), [
      '-netdev',
      'stream,id=net0,server=on,addr.type=unix,addr.path=/run/a,,b/net.sock',
      '-device',
      'virtio-net-device,netdev=net0',
    ]);
    const slirp = networkArgs({ kind: 'slirp', ...user, forwards: user.forwards });
    assert.match(
      slirp[1] as string,
      /^user,id=net0,net=10\.0\.2\.0\/24,host=10\.0\.2\.2,dns=10\.0\.2\.3,/,
    );
    assert.match(slirp[1] as string, /hostfwd=tcp:127\.0\.0\.1:18080-10\.0\.2\.15:80/);
  });
});

describe('assertTcpPortsFree', () => {
  it('reports a taken port as PORT_IN_USE naming address and port', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      await assert.rejects(
        assertTcpPortsFree([{ hostAddress: '127.0.0.1', hostPort: port }]),
        (err: unknown) => {
          assert.ok(err instanceof MicroagentError);
          assert.equal(err.code, 'PORT_IN_USE');
          assert.ok(err.message.includes(`127.0.0.1:${port}`));
          return true;
        },
      );
    } finally {
      server.close();
    }
    await assertTcpPortsFree([{ hostAddress: '127.0.0.1', hostPort: port }]);
  });
});
