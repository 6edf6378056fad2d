/**
 * `npm run bench`: speed figures as ratios against baselines measured in the
 * same run, alternating the two sides so host noise hits both alike. Prints
 * numbers; asserts nothing (timing is not a test on these machines).
 *
 *   BENCH_ITERATIONS=7 npm run bench
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ensureDefaultImage } from '../src/image/default-image.js';
import { prepareBootKernel } from '../src/kernel/index.js';
import { PACKAGE_ROOT, StatePaths } from '../src/paths.js';
import { createOverlay, writeConfigDisk } from '../src/rootfs/disks.js';
import { chooseAccel, realHostProbe } from '../src/supervisors/qemu/accel.js';
import { buildQemuArgs } from '../src/supervisors/qemu/qemu-args.js';
import { ensurePrivateDir } from '../src/util/fs.js';
import { PROFILES, DEFAULT_PROFILE } from '../src/workspace/profiles.js';
import { benchImages, benchWorkspace, median } from './workloads.js';
import { benchNetwork } from './network.js';

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 5);
/**
 * Boots vary by ±0.3 s here (docs/benchmarks.md): the boot benchmark takes
 * more samples, an even number so that each side goes first equally often.
 * With 20 the ratio of the medians still swung by ±0.05 between runs of
 * the same build; 40 halves its variance.
 */
const BOOT_ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 40);
const STATE_DIR =
  process.env.MICROAGENT_BENCH_STATE_DIR ?? join(PACKAGE_ROOT, '.local', 'bench-state');
/**
 * The command a user types: the bin/ wrapper, which starts the CLI from its
 * start-up snapshot (or, without one, with the compile cache it sets up).
 */
const CLI = join(PACKAGE_ROOT, 'bin', 'microagent');

/**
 * Runs argv to its end and times it; a process still running after
 * timeoutMs is killed (`timedOut`), so that a stuck boot cannot hang the
 * benchmark.
 */
function timeProcess(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  timeoutMs = 120_000,
): Promise<{ ms: number; code: number | null; timedOut: boolean }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), {
      env,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ ms: performance.now() - t0, code, timedOut });
    });
  });
}

/**
 * Under TCG a guest kernel very rarely stops dead during boot (`run`'s
 * monitor restarts such a boot itself, docs/architecture.md). A raw boot
 * that has not finished after this long is one of those: it is killed and
 * that iteration's raw boot is done again, and the restart is reported.
 */
const RAW_BOOT_STALL_MS = 30_000;

async function benchRunTrue(): Promise<void> {
  const paths = new StatePaths(STATE_DIR);
  await ensurePrivateDir(paths.root);
  const env = { ...process.env, MICROAGENT_STATE_DIR: STATE_DIR };
  // Warm up: installs the kernel and builds the image outside the timings.
  const warm = await timeProcess([CLI, 'run', '--', 'true'], env);
  if (warm.code !== 0) throw new Error('microagent run -- true failed during warm-up');

  const kernel = await prepareBootKernel(paths, { autoInstall: true });
  const image = await ensureDefaultImage(paths);
  const accel = chooseAccel('auto', realHostProbe);
  const dir = join(paths.tmp, `bench-raw-${process.pid}`);
  await ensurePrivateDir(dir);
  const mux = createServer((socket) => socket.on('error', () => {}).resume());
  await new Promise<void>((r) => mux.listen(join(dir, 'mux.sock'), r));
  await writeConfigDisk(join(dir, 'config.img'), { v: 1, workspace: 'bench', hostname: 'bench' });
  const profile = PROFILES[DEFAULT_PROFILE];

  const raw: number[] = [];
  const ours: number[] = [];
  try {
    // Raw QEMU: the same kernel, initramfs, image and devices; the init
    // powers off right after its mounts (microagent.bench=poweroff).
    let rawRestarts = 0;
    const rawBoot = async (i: number): Promise<number> => {
      const overlay = join(dir, `overlay-${i}.qcow2`);
      await createOverlay(image.path, overlay);
      const argv = buildQemuArgs({
        qemuBinary: 'qemu-system-x86_64',
        accel: accel.accel,
        ...(accel.tscKhz !== undefined ? { tscKhz: accel.tscKhz } : {}),
        cpus: profile.cpus,
        memoryMiB: profile.memoryMiB,
        kernel: kernel.kernelPath,
        initramfs: kernel.initramfsPath,
        cmdline: ['microagent.bench=poweroff'],
        disks: [
          { path: overlay, format: 'qcow2', readOnly: false, serial: 'ma-root' },
          { path: join(dir, 'config.img'), format: 'raw', readOnly: true, serial: 'ma-config' },
        ],
        serialLog: join(dir, 'serial.log'),
        muxSocket: join(dir, 'mux.sock'),
        qmpSocket: join(dir, 'qmp.sock'),
        pidFile: join(dir, 'qemu.pid'),
      });
      const r = await timeProcess(argv, process.env, RAW_BOOT_STALL_MS);
      await rm(overlay, { force: true });
      if (r.timedOut) {
        rawRestarts++;
        if (rawRestarts > 3) throw new Error(`raw QEMU boots stalled ${rawRestarts} times`);
        process.stderr.write(`  raw boot stalled (no exit after ${RAW_BOOT_STALL_MS} ms): again\n`);
        return rawBoot(i);
      }
      if (r.code !== 0)
        throw new Error(`raw QEMU boot exited ${r.code}; see ${join(dir, 'serial.log')}`);
      return r.ms;
    };
    const runTrue = async (): Promise<number> => {
      const o = await timeProcess([CLI, 'run', '--', 'true'], env);
      if (o.code !== 0) throw new Error(`microagent run -- true exited ${o.code}`);
      return o.ms;
    };
    for (let i = 0; i < BOOT_ITERATIONS; i++) {
      // The order alternates too (raw first, then run first), so that
      // whatever one boot leaves behind for the next weighs on both sides.
      if (i % 2 === 0) {
        raw.push(await rawBoot(i));
        ours.push(await runTrue());
      } else {
        ours.push(await runTrue());
        raw.push(await rawBoot(i));
      }
      process.stderr.write(
        `  iteration ${i + 1}/${BOOT_ITERATIONS}: raw ${raw.at(-1)?.toFixed(0)} ms, run ${ours.at(-1)?.toFixed(0)} ms\n`,
      );
    }
  } finally {
    mux.close();
    await rm(dir, { recursive: true, force: true });
  }
  const mr = median(raw);
  const mo = median(ours);
  console.log(
    `run -- true vs raw QEMU boot (${accel.accel}, ${BOOT_ITERATIONS} alternating iterations)`,
  );
  console.log(`  raw QEMU boot+poweroff   median ${mr.toFixed(0)} ms`);
  console.log(`  microagent run -- true   median ${mo.toFixed(0)} ms`);
  console.log(
    `  ratio ${(mo / mr).toFixed(3)} (goal ≤ 1.15), overhead ${(mo - mr).toFixed(0)} ms (goal ≤ 300 ms)`,
  );
  // Each run against the raw boot of the same iteration: less sensitive to drift.
  const paired = ours.map((o, i) => o - (raw[i] as number));
  console.log(`  per-iteration overhead median ${median(paired).toFixed(0)} ms`);
}

/**
 * `npm run bench` runs every benchmark; `npm run bench -- boot image exec`
 * picks some. Each prints its own baseline and ratio.
 */
const BENCHES: Record<string, () => Promise<void>> = {
  boot: benchRunTrue,
  image: () => benchImages(Math.max(1, Math.min(ITERATIONS, 3))),
  exec: () => benchWorkspace(STATE_DIR),
  network: () => benchNetwork(STATE_DIR, Math.max(1, Math.min(ITERATIONS, 3))),
};
const wanted = process.argv.slice(2).filter((a) => a in BENCHES);
for (const name of wanted.length > 0 ? wanted : Object.keys(BENCHES)) {
  await (BENCHES[name] as () => Promise<void>)();
  console.log('');
}
