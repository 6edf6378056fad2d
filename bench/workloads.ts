/**
 * Benchmarks for images (issue 3) and running workspaces (issue 4), each
 * against a baseline measured in the same run. Called from bench/main.ts.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PACKAGE_ROOT, StatePaths } from '../src/paths.js';
import { pullImage } from '../src/oci/index.js';
import { buildRootfs } from '../src/rootfs/build.js';
import { createWorkspaceDisk, ensureImageBaseline } from '../src/rootfs/baseline.js';
import { ctlRequest } from '../src/supervisors/qemu/ctl-client.js';
import { execInGuest } from '../src/guest/exec-client.js';
import { readGuestFile, writeGuestFile } from '../src/guest/fs-client.js';
import {
  createWorkspace,
  deleteWorkspace,
  killWorkspace,
  startWorkspace,
} from '../src/workspace/lifecycle.js';
import { startRegistry } from '../test/support/registry.js';

const exec = promisify(execFile);

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
}

/**
 * A ~200 MB multi-layer image: the Debian 12 minbase tree (debootstrap,
 * cached in .local) split into three layers.
 */
async function benchImageLayout(dir: string): Promise<string> {
  const tree = join(PACKAGE_ROOT, '.local', 'debian-minbase');
  if (!existsSync(join(tree, 'etc', 'debian_version'))) {
    process.stderr.write('  building a Debian 12 minbase tree with debootstrap (once)…\n');
    await rm(tree, { recursive: true, force: true });
    await exec('debootstrap', ['--variant=minbase', 'bookworm', tree], { maxBuffer: 64 << 20 });
  }
  const layout = join(dir, 'layout');
  await exec('umoci', ['init', '--layout', layout]);
  await exec('umoci', ['new', '--image', `${layout}:v1`]);
  // Three layers: /usr, /var, then everything (the last one repeats nothing
  // new under usr/var but carries /etc, /bin links, …).
  for (const sub of ['usr', 'var']) {
    await exec('umoci', ['insert', '--image', `${layout}:v1`, join(tree, sub), `/${sub}`], {
      maxBuffer: 64 << 20,
    });
  }
  await exec('umoci', ['insert', '--image', `${layout}:v1`, join(tree, 'etc'), '/etc'], {
    maxBuffer: 64 << 20,
  });
  return layout;
}

/** Cold pull + build against skopeo copy + umoci unpack + mke2fs -d. */
export async function benchImages(iterations: number): Promise<void> {
  const dir = join(tmpdir(), `ma-bench-img-${process.pid}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const reg = await startRegistry(join(dir, 'registry'));
  try {
    const layout = await benchImageLayout(dir);
    const ref = `${reg.host}/bench/debian:v1`;
    await exec('skopeo', [
      'copy',
      '--dest-tls-verify=false',
      `oci:${layout}:v1`,
      `docker://${ref}`,
    ]);
    const ours: number[] = [];
    const theirs: number[] = [];
    let size = 0;
    for (let i = 0; i < iterations; i++) {
      // Baseline: the obvious pipeline with the standard tools.
      // (given the same advantage microagent takes: unpack on tmpfs)
      const b = join(
        existsSync('/dev/shm') ? '/dev/shm' : dir,
        `ma-bench-base-${process.pid}-${i}`,
      );
      await mkdir(b);
      let t0 = performance.now();
      await exec('skopeo', [
        'copy',
        '--src-tls-verify=false',
        `docker://${ref}`,
        `oci:${b}/oci:v1`,
      ]);
      await exec('umoci', ['unpack', '--image', `${b}/oci:v1`, `${b}/bundle`], {
        maxBuffer: 64 << 20,
      });
      const du = await exec('du', ['-sb', `${b}/bundle/rootfs`]);
      const bytes = Number(du.stdout.split(/\s/)[0]);
      const mib = Math.ceil((bytes * 1.5) / (1 << 20)) + 256;
      await exec('mke2fs', [
        '-q',
        '-t',
        'ext4',
        '-d',
        `${b}/bundle/rootfs`,
        join(dir, `tools-${i}.ext4`),
        `${mib}M`,
      ]);
      theirs.push(performance.now() - t0);
      await rm(b, { recursive: true, force: true });
      await rm(join(dir, `tools-${i}.ext4`), { force: true });

      // microagent: cold (empty state dir), pull + build.
      const stateDir = join(dir, `state-${i}`);
      const paths = new StatePaths(stateDir);
      t0 = performance.now();
      const pulled = await pullImage(paths, ref);
      await buildRootfs(
        paths,
        {
          layers: pulled.layers.map((l) => ({
            path: l.path,
            mediaType: l.mediaType,
            digest: l.digest,
          })),
          imageDigest: pulled.resolvedDigest,
        },
        { outPath: join(dir, `ours-${i}.ext4`) },
      );
      ours.push(performance.now() - t0);
      size = pulled.totalSize;
      await rm(stateDir, { recursive: true, force: true });
      await rm(join(dir, `ours-${i}.ext4`), { force: true });
      process.stderr.write(
        `  iteration ${i + 1}/${iterations}: tools ${theirs.at(-1)?.toFixed(0)} ms, microagent ${ours.at(-1)?.toFixed(0)} ms\n`,
      );
    }
    const mt = median(theirs);
    const mo = median(ours);
    console.log(
      `cold pull + rootfs build, ${(size / 1e6).toFixed(0)} MB compressed, 3 layers (${iterations} alternating iterations)`,
    );
    console.log(`  skopeo copy + umoci unpack + mke2fs -d   median ${mt.toFixed(0)} ms`);
    console.log(`  microagent pull + build                  median ${mo.toFixed(0)} ms`);
    console.log(`  ratio ${(mo / mt).toFixed(3)} (goal ≤ 0.7)`);

    // Warm path: the baseline is cached; a new workspace needs only its disk.
    const paths = new StatePaths(join(dir, 'warm'));
    const pulled = await pullImage(paths, ref);
    const input = {
      manifestDigest: pulled.resolvedDigest,
      layers: pulled.layers.map((l) => ({
        path: l.path,
        mediaType: l.mediaType,
        digest: l.digest,
      })),
    };
    await ensureImageBaseline(paths, input);
    const warm: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      const baseline = await ensureImageBaseline(paths, input);
      await createWorkspaceDisk(baseline, join(dir, `disk-${i}.qcow2`));
      warm.push(performance.now() - t0);
    }
    console.log(
      `  warm path (cached baseline → new workspace disk) median ${median(warm).toFixed(0)} ms (goal ≤ 300 ms)`,
    );
  } finally {
    await reg.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Exec round trip and cp throughput on a running workspace. */
export async function benchWorkspace(stateDir: string): Promise<void> {
  const name = `bench-${process.pid}`;
  const paths = new StatePaths(stateDir);
  const ws = paths.workspace(name);
  await createWorkspace({ stateDir, name });
  try {
    await startWorkspace({ stateDir, name });
    // Raw channel: a mux PING/PONG measured by the monitor.
    const raw: number[] = [];
    for (let i = 0; i < 200; i++) {
      const r = await ctlRequest(ws.controlSocket, { cmd: 'ping' }, 5_000);
      raw.push((r.rttUs ?? 0) / 1000);
    }
    const execs: number[] = [];
    for (let i = 0; i < 220; i++) {
      const t0 = performance.now();
      await execInGuest(ws.agentSocket, { argv: ['true'] });
      if (i >= 20) execs.push(performance.now() - t0); // 20 warm-up calls
    }
    console.log('exec round trip of `true` through the library (200 calls)');
    console.log(
      `  raw channel echo   p50 ${median(raw).toFixed(2)} ms, p99 ${percentile(raw, 99).toFixed(2)} ms`,
    );
    console.log(
      `  exec true          p50 ${median(execs).toFixed(2)} ms, p99 ${percentile(execs, 99).toFixed(2)} ms (goal p50 ≤ 15 ms)`,
    );

    const file = join(tmpdir(), `ma-bench-cp-${process.pid}`);
    await writeFile(file, randomBytes(100 * 1024 * 1024));
    try {
      let t0 = performance.now();
      await writeGuestFile(ws.agentSocket, '/root/big', file);
      const inMs = performance.now() - t0;
      t0 = performance.now();
      await readGuestFile(ws.agentSocket, '/root/big', `${file}.back`);
      const outMs = performance.now() - t0;
      const size = (await stat(`${file}.back`)).size / (1 << 20);
      console.log('cp of 100 MiB through the guest agent (running workspace, ext4 disk)');
      console.log(
        `  host → guest ${(size / (inMs / 1000)).toFixed(1)} MiB/s, guest → host ${(size / (outMs / 1000)).toFixed(1)} MiB/s (goal ≥ 50 MiB/s)`,
      );
    } finally {
      await rm(file, { force: true });
      await rm(`${file}.back`, { force: true });
    }
  } finally {
    await killWorkspace({ stateDir, name }).catch(() => undefined);
    await deleteWorkspace({ stateDir, name }).catch(() => undefined);
  }
}
