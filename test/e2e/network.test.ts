/**
 * Networking end to end (docs/networking.md): real CLI, real QEMU, real
 * netstack (libslirp), loopback and a throwaway network namespace only (this host has no
 * internet). Every VM, server, namespace and veth made here is removed at
 * the end; every wait is bounded.
 *
 * The namespace parts (outbound to a "remote" server in a network
 * namespace; DNS through netstack's forwarder to a resolver we run, named by a
 * resolv.conf bind-mounted in a private mount namespace) need root; without
 * it they skip and say why.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, get, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CLI_MAIN,
  cli,
  collect,
  E2E_STATE_DIR,
  freePort,
  jsonOf,
  killProcessesMentioning,
  tempDir,
  waitNoProcesses,
} from '../helpers.js';

const TAG = `net-e2e-${process.pid}`;
const NS = `ma-nt-${process.pid}`;
const VETH = `mant${process.pid % 100000}`; // + h / n: within IFNAMSIZ
const SUBNET = `10.99.${20 + (process.pid % 200)}`;
const NS_ADDR = `${SUBNET}.2`;
/** The test resolver: a loopback address no system resolver uses. */
const DNS_ADDR = `127.53.${process.pid % 250}.1`;

function sh(argv: string[]): { ok: boolean; stderr: string } {
  const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: 'utf8' });
  return { ok: r.status === 0, stderr: r.stderr ?? '' };
}

function httpGet(host: string, port: number, path = '/'): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get({ host, port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** Retries a GET (bounded) while the guest server comes up. */
async function httpGetRetry(host: string, port: number, path: string): Promise<string> {
  let last: unknown;
  for (let i = 0; i < 20; i++) {
    try {
      return await httpGet(host, port, path);
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw last;
}

function tcpConnects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(3000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

function tokenServer(token: string): Promise<Server> {
  const server = createHttpServer((_req, res) => {
    res.writeHead(200, { connection: 'close' });
    res.end(token + '\n');
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

/** A DNS server (UDP) answering every A query with 10.1.2.3 and printing each query name. */
const DNS_SERVER = `
import dgram from 'node:dgram';
const s = dgram.createSocket('udp4');
s.on('message', (m, r) => {
  let o = 12; const labels = [];
  while (m[o] !== 0) { labels.push(m.subarray(o + 1, o + 1 + m[o]).toString()); o += m[o] + 1; }
  const qtype = m.readUInt16BE(o + 1); const qend = o + 5;
  console.log('query ' + labels.join('.') + ' type ' + qtype);
  const a = qtype === 1;
  const h = Buffer.alloc(12); m.copy(h, 0, 0, 2);
  h.writeUInt16BE(0x8180, 2); h.writeUInt16BE(1, 4); h.writeUInt16BE(a ? 1 : 0, 6);
  const ans = a ? Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]) : Buffer.alloc(0);
  s.send(Buffer.concat([h, m.subarray(12, qend), ans]), r.port, r.address);
});
s.bind(53, process.argv[2]);
`;

describe('networking', { timeout: 900_000 }, () => {
  const children: ChildProcess[] = [];
  let nsReady = false;
  let nsSkip = '';
  let nsHttpPort = 0;
  const dnsQueries: string[] = [];
  let loopback: Server;
  let loopbackPort = 0;
  const loToken = `host-loopback-${process.pid}`;
  const nsToken = `netns-server-${process.pid}`;
  let resolvConf = '';
  let dir = '';

  before(async () => {
    const r = await cli(['run', '--', 'true'], { timeoutMs: 300_000 });
    assert.equal(r.code, 0, r.stderr.toString());
    loopback = await tokenServer(loToken);
    loopbackPort = (loopback.address() as AddressInfo).port;

    // A "remote" network: a namespace behind a veth pair, reached through
    // the host's routing table like any outbound destination.
    const steps = [
      ['ip', 'netns', 'add', NS],
      ['ip', 'link', 'add', `${VETH}h`, 'type', 'veth', 'peer', 'name', `${VETH}n`],
      ['ip', 'link', 'set', `${VETH}n`, 'netns', NS],
      ['ip', 'addr', 'add', `${SUBNET}.1/24`, 'dev', `${VETH}h`],
      ['ip', 'link', 'set', `${VETH}h`, 'up'],
      ['ip', 'netns', 'exec', NS, 'ip', 'addr', 'add', `${NS_ADDR}/24`, 'dev', `${VETH}n`],
      ['ip', 'netns', 'exec', NS, 'ip', 'link', 'set', `${VETH}n`, 'up'],
      ['ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up'],
    ];
    for (const step of steps) {
      const s = sh(step);
      if (!s.ok) {
        nsSkip = `cannot set up a test network namespace (${step.join(' ')}: ${s.stderr.trim()}); needs root`;
        return;
      }
    }
    dir = await tempDir('net-e2e');
    await writeFile(join(dir, 'dns.mjs'), DNS_SERVER);
    nsHttpPort = 18000 + (process.pid % 1000);
    const http = spawn(
      'ip',
      [
        'netns',
        'exec',
        NS,
        process.execPath,
        '-e',
        `require('http').createServer((q,s)=>{s.writeHead(200,{connection:'close'});s.end(${JSON.stringify(nsToken)}+'\\n')}).listen(${nsHttpPort}, ${JSON.stringify(NS_ADDR)})`,
      ],
      { stdio: 'ignore' },
    );
    const dns = spawn(process.execPath, [join(dir, 'dns.mjs'), DNS_ADDR], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    resolvConf = join(dir, 'resolv.conf');
    await writeFile(resolvConf, `nameserver ${DNS_ADDR}\n`);
    dns.stdout?.on('data', (c: Buffer) => dnsQueries.push(c.toString()));
    children.push(http, dns);
    await new Promise((r) => setTimeout(r, 500));
    nsReady = true;
  });

  after(async () => {
    loopback?.close();
    for (const c of children) c.kill('SIGKILL');
    killProcessesMentioning(join(E2E_STATE_DIR, 'workspaces', TAG));
    sh(['ip', 'link', 'del', `${VETH}h`]);
    sh(['ip', 'netns', 'del', NS]);
    await cli(['delete', `${TAG}-pub`]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('publishes a guest server on 127.0.0.1 only, blocks the host loopback, reaches outbound and DNS', async (t) => {
    const name = `${TAG}-pub`;
    const published = await freePort();
    let r = await cli(['create', name, '-p', `${published}:8080`]);
    assert.equal(r.code, 0, r.stderr.toString());
    // netstack reads the host's /etc/resolv.conf (at the first query): with root,
    // start in a private mount namespace whose resolv.conf names a resolver
    // we run on a loopback address (as systemd-resolved's stub would be).
    r = nsReady
      ? await collect(
          spawn(
            'unshare',
            [
              '-m',
              'sh',
              '-c',
              `mount --bind "$1" /etc/resolv.conf && exec "$2" "$3" start "$4"`,
              'sh',
              resolvConf,
              process.execPath,
              CLI_MAIN,
              name,
            ],
            {
              env: { ...process.env, MICROAGENT_STATE_DIR: E2E_STATE_DIR },
              stdio: ['pipe', 'pipe', 'pipe'],
            },
          ),
        )
      : await cli(['start', name]);
    assert.equal(r.code, 0, r.stderr.toString());
    try {
      // Host → guest through the published port.
      const guestToken = `guest-httpd-${process.pid}`;
      r = await cli([
        'exec',
        name,
        '--',
        'sh',
        '-c',
        `mkdir -p /www && echo ${guestToken} > /www/index.html && httpd -p 8080 -h /www`,
      ]);
      assert.equal(r.code, 0, r.stderr.toString());
      assert.equal((await httpGetRetry('127.0.0.1', published, '/index.html')).trim(), guestToken);

      // Bound on 127.0.0.1 only: not on the host's other addresses.
      const other = Object.values(networkInterfaces())
        .flat()
        .find((a) => a && a.family === 'IPv4' && !a.internal);
      if (other)
        assert.equal(
          await tcpConnects(other.address, published),
          false,
          `port open on ${other.address}`,
        );

      // status and network list the published port; the listener is up.
      r = await cli(['status', name, '--json']);
      const status = jsonOf<{ network: { publish: { hostPort: number }[] } }>(r);
      assert.equal(status.network.publish[0]?.hostPort, published);
      r = await cli(['network', name, '--json']);
      assert.equal(r.code, 0, r.stderr.toString());
      const view = jsonOf<{
        declared: { mode: string };
        runtime: {
          backend: string;
          helperPid: number;
          published: { listening: boolean; hostAddress: string }[];
        };
      }>(r);
      assert.equal(view.declared.mode, 'user');
      assert.equal(view.runtime.backend, 'netstack');
      assert.ok(view.runtime.helperPid > 0, 'netstack runs');
      assert.deepEqual(
        view.runtime.published.map((p) => [p.hostAddress, p.listening]),
        [['127.0.0.1', true]],
      );

      // The host's loopback services are not reachable from the guest.
      r = await cli([
        'exec',
        name,
        '--',
        'sh',
        '-c',
        `timeout 10 wget -q -O - http://10.0.2.2:${loopbackPort}/; echo rc=$?`,
      ]);
      assert.ok(
        !r.stdout.toString().includes(loToken),
        `guest reached the host loopback: ${r.stdout}`,
      );

      // A port already in use fails before any boot, with a clear error.
      const t0 = Date.now();
      r = await cli(['run', '--json', '-p', `${published}:80`, '--', 'true']);
      assert.equal(r.code, 1, r.stderr.toString());
      const err = JSON.parse(r.stdout.toString()) as { error: { code: string; message: string } };
      assert.equal(err.error.code, 'PORT_IN_USE');
      assert.match(err.error.message, new RegExp(`127\\.0\\.0\\.1:${published}`));
      assert.ok(Date.now() - t0 < 5000, 'the port check happens before the boot');

      if (!nsReady) {
        t.diagnostic(`skipped outbound/DNS checks: ${nsSkip}`);
      } else {
        // Outbound TCP to another network (a namespace behind a veth pair).
        r = await cli([
          'exec',
          name,
          '--',
          'sh',
          '-c',
          `timeout 10 wget -q -O - http://${NS_ADDR}:${nsHttpPort}/`,
        ]);
        assert.equal(r.code, 0, r.stderr.toString());
        assert.equal(r.stdout.toString().trim(), nsToken);
        // DNS (UDP) from the guest's resolv.conf (10.0.2.3) through netstack's
        // forwarder to the host's resolver (ours, on a loopback address:
        // DNS is the one host-loopback service the guest gets).
        r = await cli([
          'exec',
          name,
          '--',
          'sh',
          '-c',
          'cat /etc/resolv.conf; timeout 10 nslookup probe.microagent.test',
        ]);
        assert.match(r.stdout.toString(), /nameserver 10\.0\.2\.3/);
        assert.match(r.stdout.toString(), /10\.1\.2\.3/, r.stdout.toString() + r.stderr.toString());
        assert.ok(dnsQueries.join('').includes('query probe.microagent.test'), dnsQueries.join(''));
      }

      // netstack belongs to the monitor: SIGKILL of the monitor takes QEMU
      // and netstack with it (netstack runs as nobody and re-arms PDEATHSIG).
      r = await cli(['status', name, '--json']);
      const monitorPid = jsonOf<{ vm: { monitorPid: number } }>(r).vm.monitorPid;
      process.kill(monitorPid, 'SIGKILL');
      const deadline = Date.now() + 15_000;
      const alive = (pid: number): boolean => {
        try {
          process.kill(pid, 0);
          const st = spawnSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' }).stdout;
          return !/\) Z /.test(st);
        } catch {
          return false;
        }
      };
      while (alive(view.runtime.helperPid) && Date.now() < deadline)
        await new Promise((res) => setTimeout(res, 100));
      assert.equal(alive(view.runtime.helperPid), false, 'netstack outlived its monitor');
    } finally {
      await cli(['kill', name]);
      await cli(['delete', name]);
    }
    assert.deepEqual(await waitNoProcesses(join(E2E_STATE_DIR, 'workspaces', name)), []);
  });

  it('keeps a hostile guest root that routes 127.0.0.0/8 out of eth0 off the host loopback', async () => {
    // The route_localnet trick: without the frame filter the stack would
    // connect to the host's 127.0.0.1 for these packets.
    const script = [
      'echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet',
      'echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet',
      'ip route del local 127.0.0.0/8 dev lo table local',
      'ip route del local 127.0.0.1 dev lo table local',
      'ip link set lo down',
      'ip route add 127.0.0.0/8 via 10.0.2.2 dev eth0',
      'ip route get 127.0.0.1',
      `timeout 5 wget -q -O - http://127.0.0.1:${loopbackPort}/; echo wget-rc=$?`,
      `timeout 5 wget -q -O - http://0.0.0.0:${loopbackPort}/; echo wget0-rc=$?`,
    ].join('\n');
    const name = `${TAG}-hostile`;
    // Even a connection that never answers back is a breach (a write-only
    // command to a loopback service): count what reaches the host server.
    let reached = 0;
    const count = (): void => void reached++;
    loopback.on('connection', count);
    const r = await cli(['run', '--keep', '--name', name, '--', 'sh', '-c', script]);
    loopback.off('connection', count);
    try {
      const out = r.stdout.toString();
      assert.equal(r.code, 0, r.stderr.toString());
      assert.match(out, /127\.0\.0\.1 via 10\.0\.2\.2 dev eth0/, 'the route was in place');
      assert.ok(!out.includes(loToken), `guest root reached the host loopback: ${out}`);
      assert.equal(reached, 0, 'no connection from the guest reached the host loopback server');
      assert.match(out, /wget-rc=[1-9]/);
      const log = await readFile(join(E2E_STATE_DIR, 'workspaces', name, 'run', 'net.log'), 'utf8');
      assert.match(log, /netstack: dropped guest packet #1 to 127\.0\.0\.1 \(host loopback\)/);
    } finally {
      await cli(['delete', name]);
    }
  });

  it('lets the guest reach the host loopback only with --allow-host-loopback', async () => {
    const r = await cli([
      'run',
      '--allow-host-loopback',
      '--',
      'sh',
      '-c',
      `timeout 10 wget -q -O - http://10.0.2.2:${loopbackPort}/`,
    ]);
    assert.equal(r.code, 0, r.stderr.toString());
    assert.equal(r.stdout.toString().trim(), loToken);
  });

  it('starts the first command with the network already configured', async () => {
    // PID 1 sets the network up after HELLO (in a child when the NIC is
    // not ready yet, which commands wait for). The first command must see
    // it complete.
    const r = await cli([
      'run',
      '--',
      'sh',
      '-c',
      'cat /sys/class/net/eth0/carrier; cat /proc/net/route; cat /etc/resolv.conf; ' +
        'cat /sys/class/net/lo/operstate',
    ]);
    assert.equal(r.code, 0, r.stderr.toString());
    const out = r.stdout.toString();
    assert.match(out, /^1\n/, 'eth0 has its carrier');
    assert.match(out, /^eth0\t00000000\t0202000A\t/m, 'default route via 10.0.2.2');
    assert.match(out, /^nameserver 10\.0\.2\.3$/m);
    assert.match(out, /(up|unknown)\n$/);
  });

  it('gives each boot its resolv.conf and hostname without writing them to the disk', async () => {
    // Regular files are covered by bind mounts of per-boot copies on /run;
    // a symbolic link is written through as before (it may dangle).
    const name = `${TAG}-etc`;
    const guest = async (script: string): Promise<string> => {
      const r = await cli(['exec', name, '--', 'sh', '-c', script]);
      assert.equal(r.code, 0, r.stderr.toString());
      return r.stdout.toString();
    };
    try {
      assert.equal((await cli(['create', name])).code, 0);
      assert.equal((await cli(['start', name])).code, 0);
      let out = await guest(
        'cat /etc/resolv.conf /etc/hostname; grep -c -E " /etc/(resolv.conf|hostname) " /proc/self/mountinfo',
      );
      assert.match(out, /^nameserver 10\.0\.2\.3$/m);
      assert.match(out, new RegExp(`^${name}$`, 'm'));
      assert.match(out, /^2\n$/m, 'both are bind mounts');
      // On the disk underneath: the image's files, untouched by the boot.
      out = await guest(
        'mkdir /tmp/root && mount --bind / /tmp/root && cat /tmp/root/etc/resolv.conf /tmp/root/etc/hostname; umount /tmp/root',
      );
      assert.equal(out, 'microagent\n', 'the default image: empty resolv.conf, its own hostname');
      // Replace both with links, as an image could ship them: one into
      // /run, one dangling. (A mount point cannot be removed: unmount first.)
      await guest(
        'umount /etc/resolv.conf /etc/hostname && cd /etc && rm resolv.conf hostname && ' +
          'ln -s /run/resolv.conf resolv.conf && ln -s /run/gone/hostname hostname && sync',
      );
      assert.equal((await cli(['halt', name])).code, 0);
      assert.equal((await cli(['start', name])).code, 0);
      out = await guest(
        'cat /etc/resolv.conf; readlink /etc/hostname; hostname; grep -c " /etc/" /proc/self/mountinfo || true',
      );
      assert.match(out, /^nameserver 10\.0\.2\.3$/m, 'written through the link');
      assert.match(out, /^\/run\/gone\/hostname$/m, 'a dangling link stays as it is');
      assert.match(out, new RegExp(`^${name}$`, 'm'), 'the kernel hostname is set all the same');
      assert.match(out, /^0\n$/m, 'no bind mounts over links');
    } finally {
      await cli(['kill', name]);
      await cli(['delete', name]);
    }
  });

  it('fails the run, naming netstack, when the network helper cannot start', async () => {
    // QEMU starts before netstack: one that exits before the guest is
    // ready must take the VM down with a clear error, and leave nothing.
    const name = `${TAG}-nostack`;
    const r = await cli(['run', '--json', '--name', name, '--', 'true'], {
      env: { MICROAGENT_NETSTACK: '/bin/false' },
    });
    assert.equal(r.code, 1, r.stderr.toString());
    const doc = jsonOf<{ ok: boolean; error: { code: string; message: string } }>(r);
    assert.equal(doc.ok, false);
    assert.equal(doc.error.code, 'BOOT_FAILED');
    assert.match(doc.error.message, /netstack exited with code 1/);
    assert.deepEqual(await waitNoProcesses(join(E2E_STATE_DIR, 'workspaces', name)), []);
    assert.equal((await cli(['inspect', name])).code, 1, 'the throwaway workspace is gone');
  });

  it('gives an isolated workspace no interface but lo', async () => {
    const r = await cli(['run', '--network', 'isolated', '--', 'ls', '/sys/class/net']);
    assert.equal(r.code, 0, r.stderr.toString());
    assert.equal(r.stdout.toString(), 'lo\n');
  });

  it('rejects bad network flags as usage errors naming the value, before any boot', async () => {
    let r = await cli(['run', '-p', '8080', '--', 'true']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.toString(), /"8080"/);
    r = await cli(['run', '-p', '70000:80', '--', 'true']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.toString(), /70000/);
    r = await cli(['run', '--network', 'isolated', '-p', '8080:80', '--', 'true']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.toString(), /isolated/);
    r = await cli(['create', `${TAG}-dup`, '-p', '8080:80', '-p', '8080:81']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.toString(), /8080/);
    r = await cli(['run', '--network', 'bridge', '--', 'true']);
    assert.equal(r.code, 2);
    assert.match(r.stderr.toString(), /"bridge"/);
  });
});
