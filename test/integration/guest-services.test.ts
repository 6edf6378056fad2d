/**
 * The guest services against a real VM: exec on a pseudo-terminal (size,
 * resize, reset) and the fs service (write/read round trip with throughput,
 * ownership and mode, errors, symlinks, concurrency with exec).
 *
 * Boots one workspace with the default image in the shared test state
 * directory (MICROAGENT_TEST_STATE_DIR or .local/test-state; the kernel and
 * image are built or installed there on first use). MICROAGENT_TEST_ACCEL
 * (auto | kvm | tcg, default auto) picks the accelerator; the throughput
 * figures are reported as test diagnostics. Skips without QEMU or the built
 * guest init.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { MicroagentError } from '../../src/errors.js';
import { connectAgent } from '../../src/guest/agent-client.js';
import { execInGuest, startExec } from '../../src/guest/exec-client.js';
import { readGuestFile, writeGuestFile } from '../../src/guest/fs-client.js';
import {
  encodeExecJson,
  ExecDecoder,
  ExecKind,
  GuestPort,
  type ExecExit,
} from '../../src/guest/protocol.js';
import { BUILD, StatePaths, type WorkspacePaths } from '../../src/paths.js';
import {
  killVm,
  prepareBoot,
  resolveImageAndKernel,
  startVm,
  stopVm,
} from '../../src/workspace/vm.js';
import { DEFAULT_IMAGE } from '../../src/workspace/image.js';
import { resolveResources } from '../../src/workspace/profiles.js';
import type { Identity } from '../../src/workspace/record.js';
import { E2E_STATE_DIR } from '../helpers.js';

const missing = ['/usr/bin/qemu-system-x86_64', BUILD.guestInit, BUILD.qemuSupervisor].filter(
  (p) => !existsSync(p),
);
const skip = missing.length > 0 ? `needs ${missing.join(', ')} (npm run build)` : false;
const accel = (process.env.MICROAGENT_TEST_ACCEL ?? 'auto') as 'auto' | 'kvm' | 'tcg';

const MiB = 1024 * 1024;

describe('guest services on a real VM', { skip, timeout: 600_000 }, () => {
  const paths = new StatePaths(E2E_STATE_DIR);
  const name = `gs-${randomBytes(4).toString('hex')}`;
  let ws: WorkspacePaths;
  let identity: Identity;
  let agentSock: string;
  let hostDir: string;
  let started = false;
  let accelUsed = '';

  before(async () => {
    ws = paths.workspace(name);
    ws.checkSocketPaths();
    await mkdir(paths.workspaces, { recursive: true, mode: 0o700 });
    await mkdir(ws.dir, { mode: 0o700 });
    hostDir = await mkdtemp(join(tmpdir(), 'ma-gs-'));
    identity = {
      requestId: `req-${name}`,
      runtimeId: name,
      role: 'test',
      backend: 'qemu',
      labels: {},
    };
    const plan = await prepareBoot(ws, {
      name,
      ...(await resolveImageAndKernel(paths, DEFAULT_IMAGE, {})),
      env: {},
      resources: resolveResources({}),
    });
    const vm = await startVm(paths, ws, plan, {
      identity,
      accel,
      bootTimeoutMs: 120_000,
      ownerLease: true, // the monitor tears the VM down if this process dies
      removeOnOwnerExit: true,
    });
    started = true;
    accelUsed = vm.accel;
    agentSock = ws.agentSocket;
  });

  after(async () => {
    if (started) {
      const stopped = await stopVm(ws, identity, 5000).catch(() => ({ timedOut: true }));
      if (stopped.timedOut) await killVm(ws, identity).catch(() => undefined);
    }
    await rm(ws.dir, { recursive: true, force: true });
    if (hostDir) await rm(hostDir, { recursive: true, force: true });
  });

  async function sh(script: string): Promise<{ exit: ExecExit; out: string; err: string }> {
    let out = '';
    let err = '';
    const exit = await execInGuest(
      agentSock,
      { argv: ['sh', '-c', script] },
      {
        onStdout: (c) => void (out += c.toString()),
        onStderr: (c) => void (err += c.toString()),
        timeoutMs: 120_000,
      },
    );
    return { exit, out, err };
  }

  function waitFor(pred: () => boolean, what: string, ms = 30_000): Promise<void> {
    const end = Date.now() + ms;
    return new Promise((resolve, reject) => {
      const tick = (): void => {
        if (pred()) resolve();
        else if (Date.now() > end) reject(new Error(`timed out waiting for ${what}`));
        else setTimeout(tick, 20);
      };
      tick();
    });
  }

  test('a tty exec gets a pts of the requested size, follows resizes, and reads its input', async (t) => {
    t.diagnostic(`accelerator: ${accelUsed}`);
    const stdin = new PassThrough();
    let out = '';
    const handle = await startExec(
      agentSock,
      {
        argv: ['sh', '-c', 'tty; stty size; echo "TERM=$TERM"; read x; stty size; echo "got=$x"'],
        tty: { rows: 33, cols: 101 },
      },
      { stdin, onStdout: (c) => void (out += c.toString()), timeoutMs: 120_000 },
    );
    await waitFor(() => out.includes('TERM='), 'the first size');
    handle.resize(50, 132);
    stdin.write('hello\n');
    const exit = await handle.exit;
    stdin.end();
    assert.equal(exit.status, 'exited');
    assert.equal(exit.exitCode, 0);
    assert.equal(exit.stderrBytes, 0);
    assert.match(out, /^\/dev\/pts\/\d+\r\n33 101\r\nTERM=xterm-256color\r\n/);
    assert.match(out, /hello\r\n50 132\r\ngot=hello\r\n$/); // the terminal echoes the input
    assert.equal(exit.stdoutBytes, Buffer.byteLength(out));
  });

  test('an interactive shell on a tty: term override, stty after a resize, exit status', async () => {
    const stdin = new PassThrough();
    let out = '';
    const handle = await startExec(
      agentSock,
      { argv: ['sh', '-i'], tty: { rows: 24, cols: 80, term: 'vt100' }, env: { PS1: '$ ' } },
      { stdin, onStdout: (c) => void (out += c.toString()), timeoutMs: 120_000 },
    );
    stdin.write('echo T=$TERM; echo $((6*7))\n');
    await waitFor(() => out.includes('42'), 'the first answer');
    handle.resize(40, 100);
    stdin.write('stty size\n');
    await waitFor(() => out.includes('40 100'), 'the new size');
    stdin.write('exit 3\n');
    const exit = await handle.exit;
    stdin.end();
    assert.equal(exit.exitCode, 3);
    assert.match(out, /T=vt100/);
  });

  test('a resize sends SIGWINCH to the foreground process group', async () => {
    let out = '';
    const handle = await startExec(
      agentSock,
      {
        argv: [
          'sh',
          '-c',
          "trap 'stty size; exit 7' WINCH; echo ready; while :; do sleep 0.1; done",
        ],
        tty: { rows: 24, cols: 80 },
      },
      { onStdout: (c) => void (out += c.toString()), timeoutMs: 120_000 },
    );
    await waitFor(() => out.includes('ready'), 'ready');
    handle.resize(61, 99);
    const exit = await handle.exit;
    assert.equal(exit.exitCode, 7);
    assert.match(out, /61 99/);
  });

  test('a tty client that goes away hangs up and kills the whole session', async () => {
    const sock = await connectAgent(agentSock, GuestPort.EXEC, { timeoutMs: 60_000 });
    const decoder = new ExecDecoder();
    let startedPid = 0;
    let exit: ExecExit | undefined;
    sock.on('data', (c: Buffer) => {
      for (const m of decoder.push(c))
        if (m.kind === ExecKind.JSON) {
          const j = JSON.parse(m.payload.toString()) as { type: string; pid?: number };
          if (j.type === 'started') startedPid = j.pid ?? 0;
          if (j.type === 'exit') exit = j as ExecExit;
        }
    });
    sock.write(
      encodeExecJson({
        type: 'exec',
        v: 1,
        // A job that ignores SIGHUP, in its own process group: only the SIGKILL sweep ends it.
        argv: ['sh', '-c', 'set -m; sh -c "trap \'\' HUP; exec sleep 777" & wait'],
        tty: { rows: 24, cols: 80 },
      }),
    );
    await waitFor(() => startedPid > 0, 'started');
    await new Promise((r) => setTimeout(r, 300));
    const before = await sh('ps -o pid,args | grep "[s]leep 777" || true');
    assert.match(before.out, /sleep 777/);
    // A closed connection reaches the guest as EOF (a unix socket has no reset).
    sock.end();
    await waitFor(() => exit !== undefined, 'the exit after the hang-up');
    assert.equal(exit?.status, 'signaled');
    assert.equal(exit?.signal, 1);
    await new Promise((r) => setTimeout(r, 1000));
    const after = await sh('ps -o pid,args | grep "[s]leep 777" || true');
    assert.equal(after.out, '', 'the session is gone');
    sock.destroy();
  });

  let bigSha = '';
  test('fs: 50 MiB write then read back byte-exact, with mode/uid/gid; throughput', async (t) => {
    const src = join(hostDir, 'big.bin');
    const data = randomBytes(50 * MiB);
    bigSha = createHash('sha256').update(data).digest('hex');
    await writeFile(src, data);
    let t0 = performance.now();
    const w = await writeGuestFile(agentSock, '/root/big.bin', src, {
      mode: 0o640,
      uid: 1000,
      gid: 1001,
    });
    const writeMs = performance.now() - t0;
    assert.equal(w.bytes, 50 * MiB);
    const dest = join(hostDir, 'back.bin');
    t0 = performance.now();
    const r = await readGuestFile(agentSock, '/root/big.bin', dest);
    const readMs = performance.now() - t0;
    assert.deepEqual(r, { size: 50 * MiB, mode: 0o640, uid: 1000, gid: 1001, bytes: 50 * MiB });
    const back = await readFile(dest);
    assert.equal(createHash('sha256').update(back).digest('hex'), bigSha);
    const g = await sh("stat -c '%a %u %g %s' /root/big.bin; sha256sum /root/big.bin");
    assert.equal(g.out, `640 1000 1001 ${50 * MiB}\n${bigSha}  /root/big.bin\n`);
    t.diagnostic(
      `accel ${accelUsed}: write ${((50 * 1000) / writeMs).toFixed(1)} MiB/s (${writeMs.toFixed(0)} ms), ` +
        `read ${((50 * 1000) / readMs).toFixed(1)} MiB/s (${readMs.toFixed(0)} ms)`,
    );
  });

  test('fs: Buffer source, Writable destination, set-id mode bits applied exactly', async () => {
    await writeGuestFile(agentSock, '/tmp/small', Buffer.from('small\n'), { mode: 0o4751 });
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
    });
    const r = await readGuestFile(agentSock, '/tmp/small', sink);
    assert.equal(Buffer.concat(chunks).toString(), 'small\n');
    assert.equal(r.mode, 0o4751);
    await writeGuestFile(agentSock, '/tmp/empty', Buffer.alloc(0));
    const e = await readGuestFile(agentSock, '/tmp/empty', join(hostDir, 'empty'));
    assert.equal(e.bytes, 0);
    assert.equal(e.mode, 0o644);
    assert.equal((await readFile(join(hostDir, 'empty'))).length, 0);
  });

  test('fs errors: not_found, is_directory, not_regular, a missing parent, bad paths', async () => {
    const code = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
        return 'ok';
      } catch (err) {
        assert.ok(err instanceof MicroagentError, String(err));
        return `${err.code}${err.data.guestCode ? `/${String(err.data.guestCode)}` : ''}`;
      }
    };
    const out = join(hostDir, 'x');
    assert.equal(
      await code(readGuestFile(agentSock, '/nonexistent', out)),
      'GUEST_FILE_NOT_FOUND/not_found',
    );
    assert.equal(
      await code(readGuestFile(agentSock, '/root', out)),
      'GUEST_FILE_ERROR/is_directory',
    );
    assert.equal(
      await code(readGuestFile(agentSock, '/dev/null', out)),
      'GUEST_FILE_ERROR/not_regular',
    );
    assert.equal(
      await code(writeGuestFile(agentSock, '/nonexistent/dir/x', Buffer.from('x'))),
      'GUEST_FILE_NOT_FOUND/not_found',
    );
    assert.equal(
      await code(writeGuestFile(agentSock, '/root', Buffer.from('x'))),
      'GUEST_FILE_ERROR/is_directory',
    );
    assert.equal(await code(readGuestFile(agentSock, 'relative', out)), 'INVALID_ARGUMENT');
    assert.equal(existsSync(out), false, 'no partial host file');
    // A failed write of a big file stops early and leaves no temp file in the guest.
    const big = join(hostDir, 'big.bin');
    assert.equal(
      await code(writeGuestFile(agentSock, '/nonexistent/big', big)),
      'GUEST_FILE_NOT_FOUND/not_found',
    );
    const ls = await sh('ls -A /root /tmp | grep -c ma-cp || true');
    assert.equal(ls.out.trim(), '0');
  });

  test('fs: a write to a symlink replaces the link and leaves its target alone', async () => {
    await sh('echo orig > /root/target && ln -sf /root/target /root/link');
    await writeGuestFile(agentSock, '/root/link', Buffer.from('new\n'));
    const g = await sh(
      'cat /root/target; if [ -L /root/link ]; then echo link; else echo file; fi; cat /root/link',
    );
    assert.equal(g.out, 'orig\nfile\nnew\n');
  });

  test('fs and exec streams run concurrently', async () => {
    const src = join(hostDir, 'mid.bin');
    const data = randomBytes(8 * MiB);
    await writeFile(src, data);
    let lines = 0;
    const [w, r, e] = await Promise.all([
      writeGuestFile(agentSock, '/root/mid.bin', src),
      readGuestFile(agentSock, '/root/big.bin', join(hostDir, 'big2.bin')),
      execInGuest(
        agentSock,
        { argv: ['sh', '-c', 'i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done'] },
        { onStdout: (c) => void (lines += c.toString().split('\n').length - 1) },
      ),
    ]);
    assert.equal(w.bytes, 8 * MiB);
    assert.equal(r.bytes, 50 * MiB);
    assert.equal(e.exitCode, 0);
    assert.equal(lines, 2000);
    const back = await readFile(join(hostDir, 'big2.bin'));
    assert.equal(createHash('sha256').update(back).digest('hex'), bigSha);
    const g = await sh('sha256sum /root/mid.bin');
    assert.equal(g.out.split(' ')[0], createHash('sha256').update(data).digest('hex'));
  });
});
