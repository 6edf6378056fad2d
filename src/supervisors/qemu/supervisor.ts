/**
 * The QEMU supervisor's commands (docs/supervisor-protocol.md). main.ts reads
 * the request from stdin and writes what handleRequest returns to stdout.
 *
 * `start` validates the request, chooses the accelerator, builds the QEMU
 * argv, writes <run>/monitor-config.json and spawns the monitor detached;
 * it answers once the monitor reports QEMU up (QMP answered) or failed.
 * Every other command talks to the monitor over ctl.sock; when the monitor
 * is gone, status is reconciled from monitor.json and pid liveness, and an
 * orphan QEMU (should PR_SET_PDEATHSIG ever have missed) is killed.
 */
import { closeSync, constants, openSync } from 'node:fs';
import { access, mkdir, readFile, stat, unlink } from 'node:fs/promises';
import { ZodError } from 'zod';
import { MicroagentError, toMicroagentError } from '../../errors.js';
import { readTail } from '../../guest/console.js';
import { BUILD, MAX_SOCKET_PATH } from '../../paths.js';
import {
  findHostTool,
  hostToolMissing,
  isAlive,
  processAlive,
  signalGroup,
  sleep,
  spawnDetached,
} from '../../proc/spawn.js';
import { writeJsonAtomic } from '../../util/fs.js';
import { requireBuiltHelper } from '../../util/helpers.js';
import { allSettledOrThrow } from '../../util/promises.js';
import {
  SupervisorExit,
  SupervisorRequestSchema,
  type NetBackend,
  type StartConfig,
  type StartResult,
  type StatusResult,
  type SupervisorRequest,
  type SupervisorResponse,
} from '../../vmkit/schema.js';
import { chooseAccel } from './accel.js';
import { Monitor } from './monitor.js';
import { ctlRequest, isUnreachable } from './ctl-client.js';
import { assertTcpPortsFree } from '../../util/ports.js';
import { buildNetstackArgs } from './netstack.js';
import { buildQemuArgs, type QemuNetwork } from './qemu-args.js';
import {
  MonitorStateSchema,
  runtimeFiles,
  runtimeSockets,
  type MonitorConfig,
  type MonitorState,
  type RuntimeFiles,
} from './state.js';

/** How long `start` waits for the monitor to report QEMU up or failed. */
const START_TIMEOUT_MS = 40_000;
const CTL_TIMEOUT_MS = 15_000;

export interface SupervisorOutcome {
  response: SupervisorResponse;
  exitCode: number;
}

/** Validates and runs one request; never throws. */
export async function handleRequest(raw: unknown): Promise<SupervisorOutcome> {
  let req: SupervisorRequest;
  try {
    req = SupervisorRequestSchema.parse(raw);
  } catch (err) {
    const e = new MicroagentError(
      'INVALID_ARGUMENT',
      `invalid supervisor request: ${zodMessage(err)}`,
      { cause: err },
    );
    return { response: { ok: false, error: e.toJSON() }, exitCode: SupervisorExit.BAD_REQUEST };
  }
  try {
    if (req.identity.backend !== 'qemu') {
      throw new MicroagentError(
        'INVALID_ARGUMENT',
        `this is the qemu supervisor; identity.backend is ${req.identity.backend}`,
      );
    }
    const response = await dispatch(req);
    return { response, exitCode: SupervisorExit.OK };
  } catch (err) {
    return {
      response: { ok: false, error: toMicroagentError(err).toJSON() },
      exitCode: SupervisorExit.FAILED,
    };
  }
}

function zodMessage(err: unknown): string {
  if (err instanceof ZodError) {
    return err.issues.map((i) => `${i.path.join('.') || '(request)'}: ${i.message}`).join('; ');
  }
  return err instanceof Error ? err.message : String(err);
}

async function dispatch(req: SupervisorRequest): Promise<SupervisorResponse> {
  switch (req.command) {
    case 'start':
      return start(req);
    case 'status':
      return viaMonitor(req.command, req.runtimeDir, { cmd: 'status' }, CTL_TIMEOUT_MS);
    case 'stop':
      return viaMonitor(
        req.command,
        req.runtimeDir,
        { cmd: 'stop', graceMs: req.graceMs },
        req.graceMs + CTL_TIMEOUT_MS,
      );
    case 'kill':
      return viaMonitor(req.command, req.runtimeDir, { cmd: 'kill' }, CTL_TIMEOUT_MS);
    case 'wait':
      return viaMonitor(
        req.command,
        req.runtimeDir,
        { cmd: 'wait', ...(req.timeoutMs !== undefined ? { timeoutMs: req.timeoutMs } : {}) },
        (req.timeoutMs ?? 86_400_000) + CTL_TIMEOUT_MS,
      );
    case 'pause':
    case 'resume':
      return viaMonitor(req.command, req.runtimeDir, { cmd: req.command }, CTL_TIMEOUT_MS);
  }
}

type CtlCommand = 'status' | 'stop' | 'kill' | 'wait' | 'pause' | 'resume';

async function viaMonitor(
  command: CtlCommand,
  runtimeDir: string,
  ctl: Parameters<typeof ctlRequest>[1],
  timeoutMs: number,
): Promise<StatusResult> {
  const files = runtimeFiles(runtimeDir);
  try {
    const r = await ctlRequest(files.controlSocket, ctl, timeoutMs);
    return { ok: true, command, status: r.state, ...(r.timedOut ? { timedOut: true } : {}) };
  } catch (err) {
    if (!isUnreachable(err)) throw err;
  }
  const status = await reconcile(files);
  if (
    (command === 'pause' || command === 'resume') &&
    status?.state !== 'paused' &&
    status?.state !== 'ready'
  ) {
    throw new MicroagentError(
      'VM_NOT_RUNNING',
      `cannot ${command}: the VM is ${status ? status.state : 'not started'}`,
      {
        data: { status },
      },
    );
  }
  return { ok: true, command, status, reconciled: true };
}

/** Reads monitor.json; undefined when missing, STATE_CORRUPT when unreadable. */
export async function readMonitorState(files: RuntimeFiles): Promise<MonitorState | undefined> {
  let text: string;
  try {
    text = await readFile(files.monitorState, 'utf8');
  } catch {
    return undefined;
  }
  try {
    return MonitorStateSchema.parse(JSON.parse(text));
  } catch (err) {
    throw new MicroagentError(
      'STATE_CORRUPT',
      `${files.monitorState} is not a valid monitor state: ${zodMessage(err)}`,
      {
        cause: err,
      },
    );
  }
}

/**
 * The status when the monitor does not answer: monitor.json, corrected by
 * pid liveness. A dead monitor with a non-exited state is recorded as
 * exited/monitor_lost (and its QEMU killed if it somehow survived).
 */
async function reconcile(files: RuntimeFiles): Promise<MonitorState | null> {
  const st = await readMonitorState(files);
  if (!st) return null;
  if (st.state === 'exited') return st;
  if (await monitorRuns(st, files.dir)) return st; // still starting up
  let detail = `the monitor (pid ${st.monitorPid}) is gone`;
  if (
    st.qemuPid !== undefined &&
    isAlive(st.qemuPid) &&
    (await isOurProcess(st.qemuPid, files.dir))
  ) {
    signalGroup(st.qemuPid, 'SIGKILL');
    for (let i = 0; i < 250 && isAlive(st.qemuPid); i++) await sleep(20);
    detail += `; its orphan QEMU (pid ${st.qemuPid}) was killed`;
  }
  const next: MonitorState = {
    ...st,
    state: 'exited',
    exit: { code: null, signal: null, reason: 'monitor_lost', detail, at: Date.now() },
  };
  await writeJsonAtomic(files.monitorState, next).catch(() => {});
  for (const p of runtimeSockets(files)) await unlink(p).catch(() => {});
  return next;
}

/**
 * True while the monitor that wrote st runs: its recorded start time when
 * there is one (a monitor hosted by a `run` has no runtime dir in its
 * command line), else its command line.
 */
async function monitorRuns(st: MonitorState, runtimeDir: string): Promise<boolean> {
  if (st.monitorStartTime !== undefined)
    return processAlive({ pid: st.monitorPid, startTime: st.monitorStartTime });
  return isAlive(st.monitorPid) && (await isOurProcess(st.monitorPid, runtimeDir));
}

/** True when pid's command line mentions the runtime dir (guards against pid reuse). */
async function isOurProcess(pid: number, runtimeDir: string): Promise<boolean> {
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(runtimeDir);
  } catch {
    return false;
  }
}

// ---- start --------------------------------------------------------------------

type StartRequest = Extract<SupervisorRequest, { command: 'start' }>;

/** What `start` has checked and written before a monitor runs. */
interface PlannedStart {
  files: RuntimeFiles;
  config: MonitorConfig;
  tscKhz?: number;
}

async function start(req: StartRequest): Promise<StartResult> {
  const plan = await planStart(req, { writeConfig: true });
  const { files } = plan;
  const logFd = openSync(files.monitorLog, 'a', 0o600);
  let monitorPid: number | undefined;
  try {
    const child = spawnDetached([process.execPath, BUILD.qemuMonitor, plan.config.runtimeDir], {
      stdio: ['ignore', logFd, logFd],
    });
    child.on('error', () => {});
    child.unref();
    monitorPid = child.pid;
  } finally {
    closeSync(logFd);
  }
  if (monitorPid === undefined)
    throw new MicroagentError('VMM_START_FAILED', 'cannot spawn the monitor process');
  return startResult(plan, monitorPid, await waitStarted(files, monitorPid));
}

/**
 * `start` with the monitor in this process instead of a detached one, for
 * callers whose lifetime bounds the VM's anyway (`run`): one Node start-up
 * less on the way to QEMU. Everything else is the same: the same monitor
 * code, sockets, monitor.json and ctl protocol. QEMU and netstack carry
 * PDEATHSIG to this process (vmm-exec), so they die with it, even on
 * SIGKILL. The caller must call
 * `Monitor.kill` (or stop the VM through ctl.sock) and await
 * `monitor.done` before it lets go.
 */
export async function startInProcess(
  raw: unknown,
): Promise<{ result: StartResult; monitor: Monitor }> {
  const req = SupervisorRequestSchema.parse(raw);
  if (req.command !== 'start')
    throw new MicroagentError('INTERNAL', 'startInProcess needs a start request');
  const plan = await planStart(req, { writeConfig: false });
  const monitor = new Monitor(plan.config);
  try {
    await monitor.start();
  } catch (err) {
    await monitor.recordCrash(err);
    throw err;
  }
  return { result: await startResult(plan, process.pid, monitor.status), monitor };
}

async function startResult(
  plan: PlannedStart,
  monitorPid: number,
  status: MonitorState,
): Promise<StartResult> {
  const { files, config } = plan;
  if (status.state === 'exited' || status.qemuPid === undefined) {
    const serial = await readTail(files.serialLog, 40);
    throw new MicroagentError(
      'VMM_START_FAILED',
      `QEMU did not start: ${status.exit?.detail ?? status.exit?.reason ?? 'unknown reason'}${serial ? `\n--- serial console (last lines) ---\n${serial}` : ''}`,
      { data: { status, consoleTail: serial, qemuLog: await readTail(files.qemuLog, 20) } },
    );
  }
  return {
    ok: true,
    command: 'start',
    runtimeDir: config.runtimeDir,
    monitorPid,
    qemuPid: status.qemuPid,
    accel: config.accel,
    accelReason: config.accelReason,
    ...(plan.tscKhz !== undefined ? { tscKhz: plan.tscKhz } : {}),
    status,
  };
}

/**
 * Checks a start request against the host, clears the previous boot's
 * runtime files and writes <run>/monitor-config.json.
 */
async function planStart(
  req: StartRequest,
  options: { writeConfig: boolean },
): Promise<PlannedStart> {
  const c = req.config;
  const files = runtimeFiles(c.runtimeDir);
  for (const p of runtimeSockets(files)) {
    if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
      throw new MicroagentError(
        'STATE_DIR_INVALID',
        `socket path ${p} is longer than ${MAX_SOCKET_PATH} bytes`,
      );
    }
  }
  const serials = new Set(c.disks.map((d) => d.serial));
  if (serials.size !== c.disks.length)
    throw new MicroagentError('INVALID_ARGUMENT', 'two disks have the same serial');
  // Independent checks of the host, side by side (each is a round trip to
  // the file system, and this is on the way to QEMU's start); the first
  // failure in this order is the one reported.
  const [, qemuBinary, net] = await allSettledOrThrow([
    allSettledOrThrow([
      mustExist(c.kernel.path, 'kernel'),
      ...(c.kernel.initramfs !== undefined ? [mustExist(c.kernel.initramfs, 'initramfs')] : []),
      ...c.disks.map((d) => mustExist(d.path, `disk ${d.serial}`)),
    ]),
    resolveProgram(c.qemuBinary ?? process.env.MICROAGENT_QEMU ?? 'qemu-system-x86_64'),
    planNetwork(c.network, files),
    requireBuiltHelper(BUILD.vmmExec),
  ]);

  await mkdir(c.workspaceDir, { recursive: true, mode: 0o700 });
  await mkdir(c.runtimeDir, { recursive: true, mode: 0o700 });
  const previous = await readMonitorState(files).catch(() => undefined);
  if (previous && previous.state !== 'exited' && (await monitorRuns(previous, c.runtimeDir))) {
    throw new MicroagentError(
      'VM_RUNNING',
      `a monitor (pid ${previous.monitorPid}) already runs this VM (${previous.state})`,
    );
  }
  // One runtime folder = one boot: clear the previous boot's files.
  await Promise.all(
    Object.values(files)
      .filter((f) => f !== files.dir)
      .map((f) => unlink(f).catch(() => {})),
  );

  let accel;
  try {
    accel = chooseAccel(c.accel);
  } catch (err) {
    throw new MicroagentError('INVALID_ARGUMENT', (err as Error).message);
  }
  if (accel.accel === 'tcg' && accel.tscKhz === undefined) {
    throw new MicroagentError(
      'INTERNAL',
      'cannot read the host TSC frequency from /proc/cpuinfo (needed under TCG)',
    );
  }
  const argv = buildQemuArgs({
    qemuBinary,
    accel: accel.accel,
    ...(accel.tscKhz !== undefined ? { tscKhz: accel.tscKhz } : {}),
    cpus: c.cpus,
    memoryMiB: c.memoryMiB,
    kernel: c.kernel.path,
    ...(c.kernel.initramfs !== undefined ? { initramfs: c.kernel.initramfs } : {}),
    ...(c.kernel.cmdline !== undefined ? { cmdline: c.kernel.cmdline } : {}),
    disks: c.disks,
    serialLog: files.serialLog,
    muxSocket: files.muxSocket,
    qmpSocket: files.qmpSocket,
    pidFile: files.qemuPid,
    ...(net.qemu ? { network: net.qemu } : {}),
  });
  const monitorConfig: MonitorConfig = {
    v: 1,
    identity: req.identity,
    runtimeDir: c.runtimeDir,
    workspaceDir: c.workspaceDir,
    vmmExec: BUILD.vmmExec,
    qemuArgv: argv,
    ...(net.netstackArgv ? { netstackArgv: net.netstackArgv } : {}),
    ...(net.backend ? { networkBackend: net.backend } : {}),
    qmp: true,
    accel: accel.accel,
    accelReason: accel.reason,
    bootTimeoutMs: c.bootTimeoutMs,
    ...(c.deadlineMs !== undefined ? { deadlineAt: Date.now() + c.deadlineMs } : {}),
    ...(c.owner !== undefined ? { owner: c.owner } : {}),
    removeOnOwnerExit: c.removeOnOwnerExit,
  };
  // A detached monitor reads its config from the file; one in this
  // process gets it handed over.
  if (options.writeConfig) await writeJsonAtomic(files.monitorConfig, monitorConfig);
  return {
    files,
    config: monitorConfig,
    ...(accel.tscKhz !== undefined ? { tscKhz: accel.tscKhz } : {}),
  };
}

/** Polls monitor.json until QEMU is up or gone, or the monitor died. */
async function waitStarted(files: RuntimeFiles, monitorPid: number): Promise<MonitorState> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const st = await readMonitorState(files).catch(() => undefined);
    if (st && st.monitorPid === monitorPid && st.state !== 'starting') return st;
    if (!isAlive(monitorPid)) {
      const again = await readMonitorState(files).catch(() => undefined);
      if (again && again.monitorPid === monitorPid && again.state !== 'starting') return again;
      const log = await readTail(files.monitorLog, 20);
      throw new MicroagentError(
        'VMM_START_FAILED',
        `the monitor exited before QEMU started${log ? `:\n${log}` : ''}`,
        {
          data: { monitorLog: log },
        },
      );
    }
    if (Date.now() > deadline) {
      signalGroup(monitorPid, 'SIGTERM'); // its handler kills QEMU
      throw new MicroagentError(
        'VMM_START_FAILED',
        `QEMU did not start within ${START_TIMEOUT_MS} ms`,
        {
          data: { monitorLog: await readTail(files.monitorLog, 20) },
        },
      );
    }
    await sleep(10);
  }
}

async function mustExist(path: string, what: string): Promise<void> {
  try {
    const s = await stat(path);
    if (!s.isFile() && !s.isBlockDevice()) throw new Error('not a file');
  } catch {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `the ${what} ${path} does not exist or is not a file`,
    );
  }
}

/**
 * The NIC for c.network: netstack on QEMU's listening socket (the default),
 * or QEMU's slirp, which cannot keep the guest off the host's loopback and
 * is therefore only accepted with allowHostLoopback. Published host ports
 * are probed first so that a taken port fails the start, not the boot.
 */
async function planNetwork(
  network: StartConfig['network'],
  files: RuntimeFiles,
): Promise<{
  qemu?: QemuNetwork;
  netstackArgv?: string[];
  backend?: NetBackend;
}> {
  if (network === undefined || network.mode === 'isolated') return {};
  await assertTcpPortsFree(network.forwards);
  if (network.backend === 'slirp') {
    if (!network.allowHostLoopback) {
      throw new MicroagentError(
        'INVALID_ARGUMENT',
        'the slirp network backend always lets the guest reach the host loopback (its gateway address maps to 127.0.0.1); it needs allowHostLoopback',
        { remediation: 'Use the netstack backend (the default), or allow host loopback access.' },
      );
    }
    return {
      backend: 'slirp',
      qemu: {
        kind: 'slirp',
        guestAddress: network.guestAddress,
        gateway: network.gateway,
        dns: network.dns,
        forwards: network.forwards,
      },
    };
  }
  // MICROAGENT_NETSTACK names another build of the helper (absolute path).
  const binary = process.env.MICROAGENT_NETSTACK || BUILD.netstack;
  await requireBuiltHelper(binary);
  return {
    backend: 'netstack',
    netstackArgv: buildNetstackArgs(binary, network, files.netSocket),
    qemu: { kind: 'stream', path: files.netSocket },
  };
}

/** An absolute path for a program name (vmm-exec uses execv: no PATH search). */
async function resolveProgram(name: string, pkg = 'qemu-system-x86'): Promise<string> {
  const found = name.includes('/') ? name : findHostTool(name);
  if (found !== undefined) {
    try {
      await access(found, constants.X_OK);
      return found;
    } catch {
      // reported below
    }
  }
  throw new MicroagentError('HOST_TOOL_MISSING', hostToolMissing(name), {
    remediation: `Install it with \`apt-get install ${pkg}\` or run \`npm run setup\`.`,
  });
}
