/**
 * The default image's everyday tools, as agents call them: wget (with -T,
 * which Debian's busybox-static lacks and our wrapper provides), nc with
 * a piped request, tar, sed, awk and timeout. One persistent workspace,
 * real QEMU; servers on this host's own address only, stopped at the end.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, E2E_STATE_DIR, hostAddress, listen, waitNoProcesses } from '../helpers.js';

const NAME = `applets-${process.pid}`;

/** exec in the workspace: exit code and output. */
async function sh(script: string): Promise<{ code: number | null; out: string; err: string }> {
  const r = await cli(['exec', NAME, '--', 'sh', '-c', script], { timeoutMs: 60_000 });
  return { code: r.code, out: r.stdout.toString(), err: r.stderr.toString() };
}

describe("the default image's everyday applets", { timeout: 300_000 }, () => {
  const host = hostAddress();
  const http = createHttpServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
    res.end(req.url === '/lines' ? 'one\ntwo\nthree\n' : 'small body\n');
  });
  // Accepts and never answers: what a hung server looks like.
  const held: Socket[] = [];
  const silent = createServer((s) => void held.push(s));
  let httpPort = 0;
  let silentPort = 0;

  before(async () => {
    httpPort = await listen(http, host);
    silentPort = await listen(silent, host);
    let r = await cli(['create', NAME]);
    assert.equal(r.code, 0, r.stderr.toString());
    r = await cli(['start', NAME]);
    assert.equal(r.code, 0, r.stderr.toString());
  });

  after(async () => {
    await cli(['kill', NAME]);
    await cli(['delete', NAME]);
    for (const s of held) s.destroy();
    http.closeAllConnections();
    await new Promise((r) => http.close(r));
    await new Promise((r) => silent.close(r));
    assert.deepEqual(await waitNoProcesses(join(E2E_STATE_DIR, 'workspaces', NAME)), []);
  });

  it('wget: -q -O -, -O FILE, -T N in every spelling, and -T that runs out', async () => {
    const url = `http://${host}:${httpPort}`;
    let r = await sh(`wget -q -O - ${url}/small`);
    assert.deepEqual([r.code, r.out], [0, 'small body\n'], r.err);
    // exec'd directly, `wget` is /usr/bin/wget (the -T wrapper) ...
    for (const t of [['-T', '5'], ['-T5'], ['--timeout=5'], ['--timeout', '5']]) {
      const d = await cli(['exec', NAME, '--', 'wget', ...t, '-q', '-O', '-', `${url}/small`]);
      assert.deepEqual([d.code, d.stdout.toString()], [0, 'small body\n'], d.stderr.toString());
    }
    // ... and scripts reach it by its path (busybox sh runs its own applet
    // for a bare `wget`: docs/images.md).
    r = await sh(`/usr/bin/wget -q -T 5 -O /tmp/lines ${url}/lines && wc -l < /tmp/lines`);
    assert.deepEqual([r.code, r.out.trim()], [0, '3'], r.err);
    // A server that never answers: -T ends it, with wget's network-failure status.
    r = await sh(`/usr/bin/wget -T 2 -q -O - http://${host}:${silentPort}/; echo rc=$?`);
    assert.match(r.out, /rc=4/);
    assert.match(r.err, /timed out after 2 s/);
    r = await sh('/usr/bin/wget -T soon http://x/; echo rc=$?');
    assert.match(r.out, /rc=1/);
    assert.match(r.err, /whole number of seconds/);
  });

  it('nc: a piped request gets its response once, and nc ends', async () => {
    const r = await sh(
      `printf 'GET /lines HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | nc -w 4 ${host} ${httpPort}`,
    );
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.match(/HTTP\/1\.1 200/g)?.length, 1, r.out);
    assert.ok(r.out.endsWith('one\ntwo\nthree\n'), r.out);
  });

  it('tar, sed, awk and timeout with their common flags', async () => {
    let r = await sh(
      'mkdir -p /tmp/t/a && echo payload > /tmp/t/a/f && tar czf /tmp/t.tgz -C /tmp/t a && ' +
        'tar tzf /tmp/t.tgz && mkdir -p /tmp/u && tar xzf /tmp/t.tgz -C /tmp/u && cat /tmp/u/a/f && ' +
        'tar cf - -C /tmp/t a | tar xvf - -C /tmp/u 2>&1 | sort',
    );
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^a\/\na\/f\npayload\n/);
    r = await sh(
      "echo hello | sed -e 's/l/L/g'; printf '1\\n2\\n3\\n' | sed -n '2p'; " +
        "printf 'x=1\\n' > /tmp/s && sed -i 's/1/2/' /tmp/s && cat /tmp/s; " +
        "echo 'a b c' | sed -E 's/(b) (c)/\\2 \\1/'",
    );
    assert.deepEqual([r.code, r.out], [0, 'heLLo\n2\nx=2\na c b\n'], r.err);
    r = await sh(
      "printf '1 2\\n3 4\\n' | awk '{ s += $1 * $2 } END { print s }'; " +
        "echo 'root:x:0' | awk -F: '{ print $3 }'; awk 'BEGIN { printf \"%05.1f\\n\", 3.14159 }'; " +
        "printf 'b\\na\\nb\\n' | awk '!seen[$0]++' | wc -l",
    );
    assert.deepEqual([r.code, r.out], [0, '14\n0\n003.1\n2\n'], r.err);
    r = await sh(
      'timeout 1 sleep 10; echo rc=$?; timeout 5 true; echo rc=$?; timeout -s KILL 1 sleep 10; echo rc=$?',
    );
    assert.match(r.out, /^rc=143\nrc=0\nrc=137\n$/, r.out + r.err);
  });
});
