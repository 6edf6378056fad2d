/**
 * Network benchmark (`npm run bench -- network`): boot cost of a NIC, TCP
 * request latency and bulk throughput through a published port (host →
 * guest server) and from the guest to a host server, each next to a
 * baseline measured in the same run (host loopback; guest loopback for
 * the guest-side client, which isolates the network from TCG's fork/exec
 * cost). Runs for netstack (the default) and QEMU's built-in slirp (the
 * baseline) unless BENCH_NET_BACKENDS says otherwise (e.g. `netstack`).
 * The goal: guest → host downloads at ≥ 80 MiB/s.
 */
import { spawn } from 'node:child_process';
import { createServer as createHttpServer, get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../src/paths.js';
import { median } from './workloads.js';

const CLI = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
const BIG_MIB = 32;
const REQUESTS = 30;

function cli(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, ms: performance.now() - t0 }));
  });
}

async function must(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const r = await cli(args, env);
  if (r.code !== 0) throw new Error(`microagent ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** One HTTP GET; resolves with [ms, bytes]. A fresh connection each time (no keep-alive). */
function fetchTimed(port: number, path: string): Promise<[number, number]> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let n = 0;
      res.on('data', (c: Buffer) => (n += c.length));
      res.on('end', () => resolve([performance.now() - t0, n]));
      res.on('error', reject);
    });
    req.setTimeout(60_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

async function hostSide(port: number): Promise<{ latencyMs: number; mibPerS: number }> {
  const lat: number[] = [];
  for (let i = 0; i < REQUESTS; i++) lat.push((await fetchTimed(port, '/small'))[0]);
  const rates: number[] = [];
  for (let i = 0; i < 3; i++) {
    const [ms, bytes] = await fetchTimed(port, '/big');
    if (bytes !== BIG_MIB << 20) throw new Error(`short download: ${bytes} bytes`);
    rates.push(bytes / (1 << 20) / (ms / 1000));
  }
  return { latencyMs: median(lat), mibPerS: median(rates) };
}

/** The guest as client: REQUESTS small GETs and 3 big ones, timed inside the guest. */
async function guestSide(
  name: string,
  env: NodeJS.ProcessEnv,
  url: string,
): Promise<{ latencyMs: number; mibPerS: number }> {
  // busybox date has no %N: time with /proc/uptime (10 ms ticks; each
  // span below lasts hundreds of ms).
  const script = `
cs() { read u _ < /proc/uptime; echo \${u%.*}\${u#*.}; }
t0=$(cs); i=0
while [ $i -lt ${REQUESTS} ]; do wget -q -O /dev/null ${url}/small || exit 1; i=$((i+1)); done
t1=$(cs)
for j in 1 2 3; do wget -q -O /dev/null ${url}/big || exit 1; done
t2=$(cs)
echo $((t1-t0)) $((t2-t1))`;
  const out = (await must(['exec', name, '--', 'sh', '-c', script], env)).trim().split(/\s+/);
  const smallMs = Number(out[0]) * 10;
  const bigMs = Number(out[1]) * 10;
  return {
    latencyMs: smallMs / REQUESTS,
    mibPerS: (3 * BIG_MIB) / (bigMs / 1000),
  };
}

function hostServer(address = '127.0.0.1'): Promise<Server> {
  const big = Buffer.alloc(BIG_MIB << 20, 0x61);
  const server = createHttpServer((req, res) => {
    const body = req.url === '/big' ? big : Buffer.from('x'.repeat(100));
    res.writeHead(200, { 'content-length': body.length, connection: 'close' });
    res.end(body);
  });
  return new Promise((r) => server.listen(0, address, () => r(server)));
}

async function freePort(): Promise<number> {
  const s = await hostServer();
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const fmt = (n: number): string => n.toFixed(n < 10 ? 2 : 0);

/** The network benchmark; prints figures and ratios, asserts nothing. */
export async function benchNetwork(stateDir: string, iterations = 3): Promise<void> {
  const env = { ...process.env, MICROAGENT_STATE_DIR: stateDir };
  const backends = (process.env.BENCH_NET_BACKENDS ?? 'netstack,slirp').split(',').filter(Boolean);
  await must(['run', '--network', 'isolated', '--', 'true'], env); // warm-up

  // Boot cost: alternate isolated (no NIC) with each backend.
  const boot: Record<string, number[]> = { isolated: [] };
  for (const b of backends) boot[b] = [];
  for (let i = 0; i < iterations; i++) {
    boot.isolated?.push((await cli(['run', '--network', 'isolated', '--', 'true'], env)).ms);
    for (const b of backends) {
      const r = await cli(['run', '--allow-host-loopback', '--', 'true'], {
        ...env,
        MICROAGENT_NET_BACKEND: b,
      });
      if (r.code !== 0) throw new Error(`run with ${b} failed: ${r.stderr}`);
      boot[b]?.push(r.ms);
    }
  }
  console.log(`network: boot cost, run -- true (median of ${iterations})`);
  const base = median(boot.isolated ?? []);
  console.log(`  isolated (no NIC)   ${base.toFixed(0)} ms`);
  for (const b of backends) {
    const m = median(boot[b] ?? []);
    console.log(`  user/${b.padEnd(12)} ${m.toFixed(0)} ms  (+${(m - base).toFixed(0)} ms)`);
  }

  const host = await hostServer();
  const hostPort = (host.address() as AddressInfo).port;
  // Without --allow-host-loopback the guest reaches the host only on a
  // non-loopback address: serve there too (bound to that address alone).
  const lanAddr = Object.values(networkInterfaces())
    .flat()
    .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
  const lan = lanAddr ? await hostServer(lanAddr) : undefined;
  const lanPort = lan ? (lan.address() as AddressInfo).port : 0;
  const variants = backends.flatMap((b) =>
    b === 'netstack'
      ? [
          { label: 'netstack (default; host loopback blocked)', backend: b, allowLoopback: false },
          { label: 'netstack --allow-host-loopback', backend: b, allowLoopback: true },
        ]
      : [{ label: `${b} --allow-host-loopback (QEMU built-in)`, backend: b, allowLoopback: true }],
  );
  try {
    const loop = await hostSide(hostPort);
    console.log(
      `network: host loopback baseline: ${REQUESTS} GETs median ${fmt(loop.latencyMs)} ms each, ${BIG_MIB} MiB at ${fmt(loop.mibPerS)} MiB/s`,
    );
    for (const [i, v] of variants.entries()) {
      const name = `bench-net-${i}-${process.pid}`;
      const published = await freePort();
      const benv = { ...env, MICROAGENT_NET_BACKEND: v.backend };
      await must(
        [
          'create',
          name,
          '-p',
          `${published}:8080`,
          ...(v.allowLoopback ? ['--allow-host-loopback'] : []),
        ],
        benv,
      );
      try {
        await must(['start', name], benv);
        await must(
          [
            'exec',
            name,
            '--',
            'sh',
            '-c',
            `mkdir -p /www && head -c 100 /dev/zero | tr '\\0' x > /www/small && head -c ${BIG_MIB << 20} /dev/zero > /www/big && httpd -p 8080 -h /www`,
          ],
          benv,
        );
        const viaPort = await hostSide(published);
        const guestLoop = await guestSide(name, benv, 'http://127.0.0.1:8080');
        const outUrl = v.allowLoopback
          ? `http://10.0.2.2:${hostPort}`
          : lanAddr
            ? `http://${lanAddr}:${lanPort}`
            : undefined;
        const guestOut = outUrl ? await guestSide(name, benv, outUrl) : undefined;
        console.log(`network: ${v.label}`);
        console.log(
          `  host→guest published port: GET ${fmt(viaPort.latencyMs)} ms (×${(viaPort.latencyMs / loop.latencyMs).toFixed(1)} host loopback), download ${fmt(viaPort.mibPerS)} MiB/s (${((100 * viaPort.mibPerS) / loop.mibPerS).toFixed(1)} % of host loopback)`,
        );
        console.log(
          guestOut
            ? `  guest→host (wget in guest): GET ${fmt(guestOut.latencyMs)} ms (guest loopback ${fmt(guestLoop.latencyMs)} ms), download ${fmt(guestOut.mibPerS)} MiB/s (guest loopback ${fmt(guestLoop.mibPerS)} MiB/s; goal ≥ 80 MiB/s: ${guestOut.mibPerS >= 80 ? 'met' : 'missed'})`
            : '  guest→host: skipped (the host has no non-loopback IPv4 address)',
        );
      } finally {
        await cli(['kill', name], benv);
        await cli(['delete', name], benv);
      }
    }
  } finally {
    host.close();
    lan?.close();
  }
}
