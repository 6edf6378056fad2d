/**
 * The network under the load agents put on it (docs/networking.md): bulk
 * downloads both ways, many workspaces at once, hundreds of connections,
 * and the network helper dying under a running guest. Real CLI, real QEMU,
 * real netstack. Traffic goes only to this host's own addresses (loopback
 * and its non-loopback address); every server and VM made here is stopped
 * at the end, every wait is bounded.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, get, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  cli,
  E2E_STATE_DIR,
  freePort,
  hostAddress,
  jsonOf,
  killProcessesMentioning,
  listen,
  waitNoProcesses,
} from '../helpers.js';

const TAG = `netload-${process.pid}`;
const MiB = 1024 * 1024;
const BLOB_SIZE = 64 * MiB;
const EXEC_TIMEOUT_MS = 180_000;

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** GET to the end, hashing what arrives; bounded in time. */
function httpHash(
  host: string,
  port: number,
  path: string,
): Promise<{ sha: string; size: number }> {
  return new Promise((resolve, reject) => {
    const req = get({ host, port, path, agent: false }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`HTTP ${res.statusCode}`));
        return;
      }
      const h = createHash('sha256');
      let size = 0;
      res.on('data', (c: Buffer) => {
        h.update(c);
        size += c.length;
      });
      res.on('end', () => resolve({ sha: h.digest('hex'), size }));
      res.on('error', reject);
    });
    req.setTimeout(EXEC_TIMEOUT_MS, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** Retries (bounded) while the guest server comes up. */
async function httpHashRetry(host: string, port: number, path: string) {
  let last: unknown;
  for (let i = 0; i < 40; i++) {
    try {
      return await httpHash(host, port, path);
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw last;
}

async function exec(name: string, script: string): Promise<string> {
  const r = await cli(['exec', name, '--', 'sh', '-c', script], { timeoutMs: EXEC_TIMEOUT_MS });
  assert.equal(r.code, 0, `exec in ${name} failed: ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

interface NetStatus {
  state: string;
  vm?: { state: string; network?: { pid?: number; restarts?: number; down?: string } };
}

async function status(name: string): Promise<NetStatus> {
  const r = await cli(['status', name, '--json']);
  assert.equal(r.code, 0, r.stderr.toString());
  return jsonOf<NetStatus>(r);
}

/** The VM runs and its network is up. */
async function assertUp(name: string): Promise<void> {
  const s = await status(name);
  assert.equal(s.state, 'running', `${name} is ${s.state}`);
  assert.equal(s.vm?.network?.down, undefined, `${name}'s network is down`);
}

async function createAndStart(name: string, args: string[] = []): Promise<void> {
  let r = await cli(['create', name, ...args]);
  assert.equal(r.code, 0, r.stderr.toString());
  r = await cli(['start', name]);
  assert.equal(r.code, 0, r.stderr.toString());
}

describe('network under load', { timeout: 20 * 60_000 }, () => {
  const host = hostAddress();
  const blob = randomBytes(BLOB_SIZE);
  const blobSha = sha256(blob);
  const names: string[] = [];
  let servers: Server[] = [];
  let hostPort = 0;
  let loopbackPort = 0;

  const serveBlob = (res: ServerResponse): void => {
    res.writeHead(200, { 'content-length': blob.length, connection: 'close' });
    res.end(blob);
  };

  before(async () => {
    const onHost = createHttpServer((_req, res) => serveBlob(res));
    const onLoopback = createHttpServer((_req, res) => serveBlob(res));
    servers = [onHost, onLoopback];
    hostPort = await listen(onHost, host);
    loopbackPort = await listen(onLoopback, '127.0.0.1');
  });

  after(async () => {
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
    killProcessesMentioning(join(E2E_STATE_DIR, 'workspaces', TAG));
    for (const n of names) await cli(['delete', n]);
  });

  const track = (name: string): string => {
    names.push(name);
    return name;
  };
  const cleanUp = async (name: string): Promise<void> => {
    await cli(['kill', name]);
    await cli(['delete', name]);
    assert.deepEqual(await waitNoProcesses(join(E2E_STATE_DIR, 'workspaces', name)), []);
  };

  /** Downloads the host's blob n times into the guest, checking each copy. */
  async function downloads(name: string, url: string, n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const out = await exec(
        name,
        `wget -q -O /tmp/blob ${url} && sha256sum /tmp/blob | cut -d' ' -f1 && wc -c < /tmp/blob; rm -f /tmp/blob`,
      );
      assert.equal(out, `${blobSha}\n${BLOB_SIZE}\n`, `download ${i + 1} of ${url} in ${name}`);
      await assertUp(name);
    }
  }

  it("downloads 3 x 64 MiB from the host's own address, the VM up after each", async () => {
    const name = track(`${TAG}-dl`);
    try {
      await createAndStart(name);
      await downloads(name, `http://${host}:${hostPort}/blob`, 3);
    } finally {
      await cleanUp(name);
    }
  });

  it('downloads 3 x 64 MiB from the host loopback with --allow-host-loopback', async () => {
    const name = track(`${TAG}-lo`);
    try {
      await createAndStart(name, ['--allow-host-loopback']);
      await downloads(name, `http://10.0.2.2:${loopbackPort}/blob`, 3);
    } finally {
      await cleanUp(name);
    }
  });

  it('serves 3 x 64 MiB to the host through a published port', async () => {
    const name = track(`${TAG}-up`);
    const port = await freePort();
    try {
      await createAndStart(name, ['-p', `${port}:8080`]);
      const guestSha = (
        await exec(
          name,
          `mkdir -p /srv && head -c ${BLOB_SIZE} /dev/urandom > /srv/blob && ` +
            `httpd -p 8080 -h /srv && sha256sum /srv/blob | cut -d' ' -f1`,
        )
      ).trim();
      for (let i = 0; i < 3; i++) {
        const got = await httpHashRetry('127.0.0.1', port, '/blob');
        assert.deepEqual(got, { sha: guestSha, size: BLOB_SIZE }, `upload ${i + 1}`);
        await assertUp(name);
      }
    } finally {
      await cleanUp(name);
    }
  });

  it('moves 64 MiB each way at once in 4 workspaces at the same time', async () => {
    const ws = await Promise.all(
      [0, 1, 2, 3].map(async (i) => ({ name: track(`${TAG}-m${i}`), port: await freePort() })),
    );
    try {
      await Promise.all(ws.map((w) => createAndStart(w.name, ['-p', `${w.port}:8080`])));
      const guestShas = await Promise.all(
        ws.map(async (w) =>
          (
            await exec(
              w.name,
              `mkdir -p /srv && head -c ${BLOB_SIZE} /dev/urandom > /srv/blob && ` +
                `httpd -p 8080 -h /srv && sha256sum /srv/blob | cut -d' ' -f1`,
            )
          ).trim(),
        ),
      );
      const results = await Promise.all(
        ws.map((w) =>
          Promise.all([
            exec(
              w.name,
              `wget -q -O /tmp/blob http://${host}:${hostPort}/blob && sha256sum /tmp/blob | cut -d' ' -f1; rm -f /tmp/blob`,
            ),
            httpHashRetry('127.0.0.1', w.port, '/blob'),
          ]),
        ),
      );
      results.forEach(([down, up], i) => {
        assert.equal(down, `${blobSha}\n`, `guest download in ${ws[i]?.name}`);
        assert.deepEqual(
          up,
          { sha: guestShas[i], size: BLOB_SIZE },
          `host download from ${ws[i]?.name}`,
        );
      });
      for (const w of ws) await assertUp(w.name);
    } finally {
      await Promise.all(ws.map((w) => cleanUp(w.name)));
    }
  });

  it('holds 200 concurrent TCP connections from the guest to a host server', async () => {
    const WANT = 200;
    const held: ServerResponse[] = [];
    let most = 0;
    const release = (): void => {
      clearTimeout(releaseTimer);
      for (const res of held.splice(0)) res.end('ok\n');
    };
    // Every request is held until WANT are open at once (or a bounded
    // wait ends), so the answers prove they were concurrent.
    const server = createHttpServer((_req, res) => {
      res.writeHead(200, { connection: 'close' });
      held.push(res);
      most = Math.max(most, held.length);
      if (held.length >= WANT) release();
    });
    server.maxConnections = 1000;
    servers.push(server);
    const port = await listen(server, host);
    const releaseTimer = setTimeout(release, 90_000);
    const name = track(`${TAG}-conns`);
    try {
      await createAndStart(name);
      const out = await exec(
        name,
        `i=0; while [ $i -lt ${WANT} ]; do wget -q -O /tmp/c$i http://${host}:${port}/$i & i=$((i+1)); done; ` +
          `wait; cat /tmp/c* | grep -c '^ok$'`,
      );
      assert.equal(out.trim(), String(WANT));
      assert.equal(most, WANT, `only ${most} requests were open at once`);
      await assertUp(name);
    } finally {
      release();
      await cleanUp(name);
    }
  });

  it('restarts a network helper that dies, and reports the network down when it keeps dying', async () => {
    const name = track(`${TAG}-crash`);
    const url = `http://${host}:${hostPort}/blob`;
    try {
      await createAndStart(name);
      const first = (await status(name)).vm?.network?.pid;
      assert.ok(first, 'netstack runs');
      process.kill(first, 'SIGKILL');
      // Restarted under the running guest; new connections work again.
      let s = await status(name);
      for (let i = 0; i < 50 && (s.vm?.network?.restarts ?? 0) < 1; i++) {
        await new Promise((r) => setTimeout(r, 100));
        s = await status(name);
      }
      assert.equal(s.vm?.network?.restarts, 1);
      assert.ok(s.vm?.network?.pid && s.vm.network.pid !== first, 'a new netstack runs');
      await downloads(name, url, 1);

      // Killed again and again within seconds of each start: it stays down.
      for (let k = 0; k < 4 && (await status(name)).vm?.network?.down === undefined; k++) {
        let pid: number | undefined;
        for (let i = 0; i < 50 && pid === undefined; i++) {
          pid = (await status(name)).vm?.network?.pid;
          if (pid === undefined) await new Promise((r) => setTimeout(r, 100));
        }
        if (pid !== undefined) process.kill(pid, 'SIGKILL');
        await new Promise((r) => setTimeout(r, 600));
      }
      s = await status(name);
      assert.equal(s.state, 'running', 'the VM goes on without its network');
      assert.match(s.vm?.network?.down ?? '', /netstack exited with SIGKILL.*not restarted again/);
      const text = (await cli(['status', name])).stdout.toString();
      assert.match(text, /DOWN: the network helper netstack exited/);
      // exec does not need the network.
      assert.equal(await exec(name, 'echo still-here'), 'still-here\n');
    } finally {
      await cleanUp(name);
    }
  });
});
