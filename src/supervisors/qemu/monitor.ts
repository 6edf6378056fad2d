/**
 * The per-workspace monitor: a small detached process that owns everything
 * live for one VM (ARCHITECTURE D3). It
 *  - listens on mux.sock (QEMU's chardev connects to it), agent.sock (hybrid
 *    vsock for host clients) and ctl.sock (control: status/stop/kill/…);
 *  - starts QEMU through vmm-exec (PR_SET_PDEATHSIG: QEMU dies with us);
 *  - talks QMP (pause/resume, the SHUTDOWN event that says why QEMU exits);
 *  - enforces the boot timeout, the run deadline and the owner lease;
 *  - writes monitor.json atomically on every state change and result.json
 *    when the guest sends its boot command's RESULT;
 *  - on QEMU's exit fails every pending client with the reason, removes its
 *    sockets and exits. It never leaves QEMU behind.
 *
 * Its log is <run>/monitor.log.
 */
import {
  appendFileSync,
  closeSync,
  constants,
  fstatSync,
  openSync,
  readFileSync,
  statSync,
  writeSync,
} from 'node:fs';
import { rm, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { join } from 'node:path';
import { MicroagentError, toMicroagentError } from '../../errors.js';
import { readTail } from '../../guest/console.js';
import {
  currentProcess,
  processAlive,
  signalGroup,
  spawnDetached,
  stopProcessGroup,
} from '../../proc/spawn.js';
import { writeJsonAtomic } from '../../util/fs.js';
import { Mux, type MuxStream } from './mux.js';
import { QmpClient, type QmpEvent } from './qmp.js';
import {
  CtlRequestSchema,
  MonitorConfigSchema,
  runtimeFiles,
  runtimeSockets,
  type CtlRequest,
  type CtlResponse,
  type ExitReason,
  type MonitorConfig,
  type MonitorState,
  type RuntimeFiles,
  type VmState,
} from './state.js';

/** How long a guest-channel client gets to take its last answer once the VM is gone. */
const CLIENT_DRAIN_MS = 1000;
const OWNER_POLL_MS = 200;
/** How long QEMU may take to answer QMP after it was spawned. */
const QMP_CONNECT_TIMEOUT_MS = 30_000;
/** Longest CONNECT line / ctl request we read. */
const MAX_CONNECT_LINE = 64;
const MAX_CTL_LINE = 64 * 1024;
/** A client must send its CONNECT/ctl line within this time. */
const REQUEST_LINE_TIMEOUT_MS = 10_000;
const MAX_TIMER_MS = 2 ** 31 - 1;
/** How long after netstack's exit QEMU's own exit may still arrive (see onNetstackExit). */
const NETSTACK_EXIT_GRACE_MS = 300;
/**
 * netstack restarts: one that ran less than NETSTACK_QUICK_MS counts as a
 * quick failure, and after NETSTACK_MAX_QUICK in a row the network stays
 * down (a stack that cannot run is not restarted forever).
 */
const NETSTACK_QUICK_MS = 5_000;
const NETSTACK_MAX_QUICK = 3;
/** Boots per VM start: the first, plus one restart after a boot stall. */
const MAX_BOOT_ATTEMPTS = 2;
const BOOT_STALL_POLL_MS = 1000;
/** Console silence before HELLO that counts as a boot stall (watchBootStall). */
const DEFAULT_BOOT_STALL_MS = 15_000;

/**
 * The stall window for a boot timeout, or undefined when stall detection is
 * off: MICROAGENT_BOOT_STALL_MS (0 = off) overrides the default, and a boot
 * timeout too short for a stall and a second boot leaves it off.
 */
export function bootStallMs(
  bootTimeoutMs: number,
  env: NodeJS.ProcessEnv = process.env,
): number | undefined {
  const raw = env.MICROAGENT_BOOT_STALL_MS;
  const ms = raw !== undefined && /^[0-9]{1,9}$/.test(raw) ? Number(raw) : DEFAULT_BOOT_STALL_MS;
  if (ms <= 0 || bootTimeoutMs < 2 * ms) return undefined;
  return ms;
}

type ExitInfo = NonNullable<MonitorState['exit']>;

export class Monitor {
  private readonly files: RuntimeFiles;
  private state: MonitorState;
  private qemu: ChildProcess | undefined;
  /** The user-mode network stack (netstack), when the VM has one. */
  private netstack: ChildProcess | undefined;
  private netstackStartedAt = 0;
  /** net.log's size when the running netstack started: its own lines follow. */
  private netstackLogStart = 0;
  /** netstack's quick failures in a row (NETSTACK_QUICK_MS). */
  private netstackQuickFailures = 0;
  /** Overrides the detail of the exit reason (e.g. why netstack ended). */
  private killDetail: string | undefined;
  private qmp: QmpClient | undefined;
  private mux: Mux | undefined;
  /** Why we are ending the VM (set before we kill it). */
  private killReason: ExitReason | undefined;
  private shutdownEvent: string | undefined;
  private powerOffSent = false;
  private powerOffPending = false;
  private stateBeforePause: VmState = 'booting';
  private exited = false;
  /** 1 for the first boot, 2 after a boot-stall restart. */
  private bootAttempt = 0;
  /** QEMU was killed to restart a stalled boot; its exit is not the VM's. */
  private restartPending = false;
  private readonly servers: Server[] = [];
  private readonly clients = new Set<Socket>();
  private readonly readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private readonly exitWaiters: (() => void)[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private persistChain: Promise<void> = Promise.resolve();
  private finished!: (code: number) => void;
  private logCreated = false;
  readonly done: Promise<number>;

  constructor(private readonly config: MonitorConfig) {
    this.files = runtimeFiles(config.runtimeDir);
    this.state = {
      v: 1,
      runtimeId: config.identity.runtimeId,
      monitorPid: process.pid,
      monitorStartTime: currentProcess().startTime,
      state: 'starting',
      accel: config.accel,
      accelReason: config.accelReason,
      startedAt: Date.now(),
    };
    if (config.networkBackend) this.state.network = { backend: config.networkBackend };
    this.done = new Promise((resolve) => (this.finished = resolve));
  }

  /** A copy of the state monitor.json records. */
  get status(): MonitorState {
    return structuredClone(this.state);
  }

  /** Reads <run>/monitor-config.json and runs the monitor to its end. */
  static fromRuntimeDir(runtimeDir: string): Monitor {
    const raw = JSON.parse(readFileSync(runtimeFiles(runtimeDir).monitorConfig, 'utf8')) as unknown;
    return new Monitor(MonitorConfigSchema.parse(raw));
  }

  log(message: string): void {
    // Only the first line may create monitor.log. Later lines (the last
    // ones come after a stop has been answered) must never re-create it in
    // a folder the caller is deleting: its `rm -r` would fail ENOTEMPTY.
    const flags = this.logCreated
      ? constants.O_WRONLY | constants.O_APPEND
      : constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT;
    try {
      const fd = openSync(this.files.monitorLog, flags, 0o600);
      try {
        writeSync(fd, `${new Date().toISOString()} [${process.pid}] ${message}\n`);
      } finally {
        closeSync(fd);
      }
      this.logCreated = true;
    } catch {
      // the runtime dir may be gone (owner_exit removal, a deleted
      // workspace); nothing else to do
    }
  }

  /** Kills QEMU at once, synchronously; for crash paths. */
  emergencyKill(reason: ExitReason): void {
    this.killReason ??= reason;
    if (this.qemu?.pid !== undefined && !this.exited) signalGroup(this.qemu.pid, 'SIGKILL');
    if (this.netstack?.pid !== undefined) signalGroup(this.netstack.pid, 'SIGKILL');
  }

  async start(): Promise<void> {
    this.log(`monitor starting for ${this.config.identity.runtimeId} (accel ${this.config.accel})`);
    await this.persist();
    for (const p of runtimeSockets(this.files)) await unlink(p).catch(() => {});
    await this.listen(this.files.controlSocket, (s) => this.onControl(s), false);
    await this.listen(this.files.muxSocket, (s) => this.onMuxConnection(s), false);
    await this.listen(this.files.agentSocket, (s) => this.onAgent(s), true);

    if (this.config.owner !== undefined) {
      const owner = this.config.owner;
      this.timers.push(
        setInterval(() => {
          if (!processAlive(owner)) {
            if (!this.exited && this.killReason === undefined) {
              this.log(`owner ${owner.pid} is gone: killing QEMU`);
              this.kill('owner_exit');
            }
          }
        }, OWNER_POLL_MS),
      );
    }
    await this.launch();
  }

  /**
   * Starts QEMU and netstack (when the VM has a user-mode network), connects
   * QMP and watches the boot. Called again by restartStalledBoot.
   */
  private async launch(): Promise<void> {
    this.bootAttempt++;
    // QEMU first: netstack starts while it initialises (a spawn is a few
    // ms of this process's time, which QEMU need not wait for) and
    // connects once QEMU's NIC socket is there, long before the guest's
    // driver is up. QEMU's stdout/stderr (its own errors) go to qemu.log.
    const logFd = openSync(this.files.qemuLog, 'a', 0o600);
    let child: ChildProcess;
    try {
      child = this.spawnVmmExec(this.config.qemuArgv, ['ignore', logFd, logFd]);
    } finally {
      closeSync(logFd);
    }
    this.qemu = child;
    child.once('error', (err) => {
      this.log(`cannot start QEMU: ${err.message}`);
      this.killReason ??= 'vmm_start_failed';
      void this.onQemuExit(null, null, `cannot start ${this.config.vmmExec}: ${err.message}`);
    });
    child.once('exit', (code, signal) => {
      if (this.restartPending && child === this.qemu) void this.relaunch(code, signal);
      else void this.onQemuExit(code, signal);
    });
    if (child.pid === undefined) return; // 'error' follows
    if (this.config.netstackArgv) {
      try {
        this.startNetstack(this.config.netstackArgv);
      } catch (err) {
        // QEMU is already up: it must not outlive a start that failed.
        this.killDetail ??= `the network helper netstack could not start: ${(err as Error).message}`;
        this.kill('vmm_start_failed');
        throw err;
      }
    }
    this.state.qemuPid = child.pid;
    this.log(
      `QEMU started (boot attempt ${this.bootAttempt}), pid ${child.pid}: ${this.config.qemuArgv.join(' ')}`,
    );
    // A kill asked for while a stalled boot was being restarted applies to
    // the new QEMU too.
    if (this.killReason !== undefined) signalGroup(child.pid, 'SIGKILL');

    if (this.bootAttempt === 1 && this.config.deadlineAt !== undefined)
      this.armDeadline(this.config.deadlineAt);

    if (this.config.qmp) {
      try {
        const qmp = await QmpClient.connect(
          this.files.qmpSocket,
          QMP_CONNECT_TIMEOUT_MS,
          () => !this.exited && child === this.qemu && !this.restartPending,
        );
        if (this.exited || child !== this.qemu || this.restartPending) {
          qmp.close();
          return;
        }
        this.qmp = qmp;
        qmp.on('event', (e: QmpEvent) => this.onQmpEvent(e));
      } catch (err) {
        if (!this.exited && child === this.qemu && !this.restartPending) {
          this.log(`QMP failed: ${(err as Error).message}; killing QEMU`);
          this.kill('vmm_start_failed');
        }
        return;
      }
    }
    if (this.exited) return;
    if (this.bootAttempt === 1) {
      // The boot timeout counts from QEMU being up (not from the spawn), so
      // a slow QEMU start on a loaded host is not mistaken for a slow guest.
      // One budget for every attempt: a restarted boot does not extend it.
      this.timers.push(
        setTimeout(() => {
          if (this.state.readyAt === undefined && !this.exited) {
            this.log(`no guest HELLO within ${this.config.bootTimeoutMs} ms: killing QEMU`);
            this.kill('boot_timeout');
          }
        }, this.config.bootTimeoutMs),
      );
    }
    this.watchBootStall();
    this.state.qemuStartedAt ??= Date.now();
    if (this.state.state === 'starting') this.state.state = 'booting';
    this.log(
      `QEMU is up (${Date.now() - this.state.startedAt} ms after monitor start, boot attempt ${this.bootAttempt})`,
    );
    await this.persist();
  }

  /**
   * Under TCG a guest kernel very rarely stops dead during boot (seen once
   * in hundreds of boots, after "sched_clock: Marking stable", console
   * silent until the boot timeout). A kernel that prints nothing for
   * bootStallMs before the guest says HELLO is restarted once, on the same
   * disks: nothing in the guest has run yet that a fresh boot cannot
   * redo. Clients waiting for readiness keep waiting; the restart is in
   * monitor.log, the console and monitor.json's bootRestarts.
   */
  private watchBootStall(): void {
    const stallMs = bootStallMs(this.config.bootTimeoutMs);
    if (stallMs === undefined || this.bootAttempt >= MAX_BOOT_ATTEMPTS) return;
    let lastSize = -1;
    let quietSince = Date.now();
    const t = setInterval(() => {
      if (this.exited || this.restartPending || this.state.readyAt !== undefined) {
        clearInterval(t);
        return;
      }
      let size = 0;
      try {
        size = statSync(this.files.serialLog).size;
      } catch {
        // not created yet
      }
      // A pause (asked for by a client) is not a stall.
      if (size !== lastSize || this.state.state === 'paused') {
        lastSize = size;
        quietSince = Date.now();
        return;
      }
      if (Date.now() - quietSince < stallMs) return;
      clearInterval(t);
      this.restartStalledBoot(stallMs);
    }, BOOT_STALL_POLL_MS);
    this.timers.push(t);
  }

  private restartStalledBoot(stallMs: number): void {
    if (this.exited || this.killReason !== undefined || this.qemu?.pid === undefined) return;
    this.log(
      `the guest printed nothing for ${stallMs} ms before it was ready (boot stall): restarting the VM`,
    );
    this.state.bootRestarts = (this.state.bootRestarts ?? 0) + 1;
    void this.persist();
    this.restartPending = true;
    signalGroup(this.qemu.pid, 'SIGKILL');
  }

  /** The stalled QEMU is gone: drop what belonged to it and launch again. */
  private async relaunch(code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    this.qmp?.close();
    this.qmp = undefined;
    this.mux?.shutdown('the VM is restarting after a boot stall');
    this.mux = undefined;
    this.shutdownEvent = undefined;
    await this.stopNetstack();
    this.netstack = undefined;
    this.restartPending = false;
    if (this.killReason !== undefined) {
      // Killed (timeout, owner, request) while restarting: that is the end.
      await this.onQemuExit(code, signal);
      return;
    }
    try {
      appendFileSync(
        this.files.serialLog,
        `\n--- microagent: no console output for a while before the guest was ready; restarting the VM (boot attempt ${this.bootAttempt + 1}) ---\n`,
      );
    } catch {
      // the console file is QEMU's; a missing one is not a reason to stop
    }
    await this.launch();
  }

  /**
   * Starts netstack through vmm-exec (PDEATHSIG: it dies with this
   * process). It connects to QEMU's listening NIC socket by itself, so a
   * restart needs nothing from QEMU. As root it drops to `nobody` and arms
   * its parent-death signal again (native/netstack.c).
   */
  private startNetstack(argv: readonly string[]): void {
    const logFd = openSync(this.files.netLog, 'a', 0o600);
    let child: ChildProcess;
    try {
      this.netstackLogStart = fstatSync(logFd).size;
      child = this.spawnVmmExec(argv, ['ignore', logFd, logFd]);
    } finally {
      closeSync(logFd);
    }
    this.netstack = child;
    this.netstackStartedAt = Date.now();
    child.once('error', (err) => this.onNetstackExit(child, null, null, err.message));
    child.once('exit', (code, signal) => this.onNetstackExit(child, code, signal));
    if (child.pid !== undefined) {
      this.state.network = {
        ...(this.state.network?.restarts !== undefined
          ? { restarts: this.state.network.restarts }
          : {}),
        backend: 'netstack',
        pid: child.pid,
      };
      this.log(`netstack started, pid ${child.pid}: ${argv.join(' ')}`);
    }
  }

  /**
   * Starts argv through vmm-exec, which ties it to this process with
   * PDEATHSIG. It names this process as that parent, so a parent that dies
   * between the fork and vmm-exec's start is caught too (native/vmm-exec.c).
   */
  private spawnVmmExec(argv: readonly string[], stdio: StdioOptions): ChildProcess {
    return spawnDetached([this.config.vmmExec, ...argv], {
      env: { ...process.env, MICROAGENT_VMM_PARENT: String(process.pid) },
      stdio,
    });
  }

  /**
   * netstack also ends (EOF) whenever QEMU does, and its exit may be seen
   * first: give QEMU's own exit a moment to arrive before acting on it.
   */
  private onNetstackExit(
    child: ChildProcess,
    code: number | null,
    signal: NodeJS.Signals | null,
    error?: string,
  ): void {
    if (this.exited || child !== this.netstack || this.restartPending) return;
    const t = setTimeout(() => {
      if (child === this.netstack && !this.restartPending) this.netstackLost(code, signal, error);
    }, NETSTACK_EXIT_GRACE_MS);
    this.timers.push(t);
  }

  /**
   * netstack died while the VM runs. Before the guest is ready that is a
   * failed start (a stack that cannot start is a host problem: say so at
   * once). Afterwards the VM goes on: the stack is started again (QEMU
   * accepts the new one on its socket), unless it keeps failing at once or
   * rejected its arguments; then the network is down, with the reason in
   * monitor.json, and exec and files still work over the guest channel.
   */
  private netstackLost(code: number | null, signal: NodeJS.Signals | null, error?: string): void {
    if (this.exited || this.shutdownEvent !== undefined || this.killReason !== undefined) return;
    let logTail = '';
    try {
      logTail = readFileSync(this.files.netLog)
        .subarray(this.netstackLogStart)
        .toString('utf8')
        .split('\n')
        .filter((l) => l.trim() !== '' && !l.includes('connected to QEMU'))
        .slice(-3)
        .join(' | ');
    } catch {
      // no log
    }
    const detail = `the network helper netstack ${error ? `could not start: ${error}` : `exited with ${signal ?? `code ${code}`}`}${logTail ? `: ${logTail}` : ''}`;
    this.log(detail);
    this.netstack = undefined;
    if (this.state.network) delete this.state.network.pid;
    if (this.state.readyAt === undefined) {
      if (this.state.network) this.state.network.down = detail;
      this.killDetail ??= detail;
      this.kill('vmm_error');
      return;
    }
    const quick = Date.now() - this.netstackStartedAt < NETSTACK_QUICK_MS;
    this.netstackQuickFailures = quick ? this.netstackQuickFailures + 1 : 1;
    const argv = this.config.netstackArgv;
    let why: string | undefined;
    if (argv === undefined || error !== undefined || code === 2) why = detail;
    else if (this.netstackQuickFailures > NETSTACK_MAX_QUICK)
      why = `${detail} (it failed ${this.netstackQuickFailures} times in a row within ${NETSTACK_QUICK_MS / 1000} s of its start; not restarted again)`;
    if (why === undefined && argv !== undefined) {
      const restarts = (this.state.network?.restarts ?? 0) + 1;
      this.state.network = { backend: 'netstack', restarts };
      try {
        this.startNetstack(argv);
        this.log(
          `netstack restarted (restart ${restarts}); the guest's open connections were lost`,
        );
      } catch (err) {
        why = `${detail}; the restart failed: ${(err as Error).message}`;
      }
    }
    if (why !== undefined) {
      this.state.network = { ...(this.state.network ?? { backend: 'netstack' }), down: why };
      delete this.state.network.pid;
      this.log(`the guest's network is down: ${why}`);
    }
    void this.persist();
  }

  private async stopNetstack(): Promise<void> {
    // It normally exits by itself on QEMU's EOF; bounded, then SIGKILL.
    const h = this.netstack;
    if (h?.pid !== undefined) await stopProcessGroup(h, 1000).catch(() => undefined);
  }

  private armDeadline(at: number): void {
    const ms = at - Date.now();
    const t = setTimeout(
      () => {
        if (Date.now() < at) return this.armDeadline(at);
        if (!this.exited) {
          this.log('run deadline reached: killing QEMU');
          this.kill('deadline');
        }
      },
      Math.max(0, Math.min(ms, MAX_TIMER_MS)),
    );
    this.timers.push(t);
  }

  /** SIGKILL to QEMU's process group, remembering why. */
  kill(reason: ExitReason): void {
    if (this.exited || this.qemu?.pid === undefined) return;
    this.killReason ??= reason;
    signalGroup(this.qemu.pid, 'SIGKILL');
    // netstack would end on QEMU's EOF once it is gone (~10 ms); told
    // now, it ends while QEMU dies, and onQemuExit finds it gone.
    const h = this.netstack;
    if (h?.pid !== undefined && h.exitCode === null && h.signalCode === null)
      signalGroup(h.pid, 'SIGTERM');
  }

  /**
   * Kills the VM and waits (bounded) until it is gone and monitor.json says
   * so: ctl.sock's `kill`, and the teardown of a `run` hosting this monitor.
   */
  async killAndWait(): Promise<void> {
    this.log('kill requested');
    this.kill('killed');
    await this.waitExit(10_000);
  }

  private listen(path: string, onConn: (s: Socket) => void, allowHalfOpen: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      // Connections that arrive while the VM is going away are still
      // served: they get the final status (ERR with the reason) rather
      // than a bare close.
      const server = createServer({ allowHalfOpen }, (s) => {
        this.clients.add(s);
        s.once('close', () => this.clients.delete(s));
        onConn(s);
      });
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        server.on('error', (err) => this.log(`server ${path}: ${err.message}`));
        this.servers.push(server);
        resolve();
      });
    });
  }

  private async persist(): Promise<void> {
    const snapshot = structuredClone(this.state);
    this.persistChain = this.persistChain
      .then(() => writeJsonAtomic(this.files.monitorState, snapshot))
      .catch((err: unknown) => this.log(`cannot write monitor.json: ${(err as Error).message}`));
    return this.persistChain;
  }

  // ---- mux ----------------------------------------------------------------------

  private onMuxConnection(socket: Socket): void {
    if (this.mux !== undefined && !this.mux.closed) {
      this.log('a second connection on mux.sock: refused');
      socket.destroy();
      return;
    }
    const mux = new Mux(socket);
    this.mux = mux;
    this.log('QEMU connected the guest channel');
    mux.on('hello', (hello) => {
      this.state.readyAt = Date.now();
      this.state.guest = { init: hello.init, bootMs: hello.bootMs };
      if (this.state.state === 'booting' || this.state.state === 'starting')
        this.state.state = 'ready';
      else if (this.state.state === 'paused') this.stateBeforePause = 'ready';
      this.log(
        `guest ready: init ${hello.init}, ${hello.bootMs} ms after guest boot, ${this.state.readyAt - this.state.startedAt} ms after monitor start`,
      );
      void this.persist();
      for (const w of this.readyWaiters.splice(0)) w.resolve();
      if (this.powerOffPending) this.sendPowerOff();
    });
    mux.on('result', (result) => {
      this.log(`guest result: ${JSON.stringify(result)}`);
      writeJsonAtomic(join(this.config.workspaceDir, 'result.json'), result).catch((err: unknown) =>
        this.log(`cannot write result.json: ${(err as Error).message}`),
      );
    });
    mux.on('error', (err: MicroagentError) => {
      this.log(`guest protocol error: ${err.message}; killing QEMU`);
      this.kill('guest_protocol');
    });
    mux.on('close', (reason: string) => this.log(`guest channel closed: ${reason}`));
  }

  private sendPowerOff(): void {
    try {
      this.mux?.powerOff('stop requested');
      this.powerOffSent = true;
      this.powerOffPending = false;
      this.log('POWEROFF sent');
    } catch (err) {
      this.log(`cannot send POWEROFF: ${(err as Error).message}`);
    }
  }

  private waitReady(): Promise<void> {
    if (this.state.readyAt !== undefined && this.mux && !this.mux.closed) return Promise.resolve();
    // Once exited, the exit is recorded; before that, waiters are failed by
    // onQemuExit after monitor.json is final.
    if (this.state.state === 'exited') return Promise.reject(this.exitError());
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  private exitError(): MicroagentError {
    const exit = this.state.exit;
    const reason = exit?.reason ?? 'vmm_error';
    const before = this.state.readyAt === undefined;
    return new MicroagentError(
      before ? 'BOOT_FAILED' : 'VM_EXITED',
      `${before ? 'boot_failed' : 'vm_exited'} ${reason}${exit?.detail ? `: ${exit.detail}` : ''}`,
      { data: { reason } },
    );
  }

  // ---- agent.sock ---------------------------------------------------------------

  private onAgent(sock: Socket): void {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(
      () => reply('ERR bad_request no CONNECT line within 10 s'),
      REQUEST_LINE_TIMEOUT_MS,
    );
    const reply = (line: string): void => {
      clearTimeout(timer);
      if (!sock.destroyed) sock.end(line + '\n');
      setTimeout(() => sock.destroy(), 1000).unref();
    };
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > MAX_CONNECT_LINE) {
          sock.off('data', onData);
          reply('ERR bad_request CONNECT line too long');
        }
        return;
      }
      sock.off('data', onData);
      sock.pause(); // pipelined bytes wait in the socket until the stream is open
      clearTimeout(timer);
      const line = buf.subarray(0, nl).toString('utf8').replace(/\r$/, '');
      const leftover = buf.subarray(nl + 1);
      const m = /^CONNECT ([0-9]{1,10})$/.exec(line);
      const port = m ? Number(m[1]) : NaN;
      if (!m || port > 0xffffffff) {
        reply('ERR bad_request expected "CONNECT <port>"');
        return;
      }
      void this.connectClient(sock, port, leftover).catch((err: unknown) => {
        // A stream that failed because the VM went away reports that, not
        // the channel closure it caused (monitor.json is already final).
        const e = this.exited ? this.exitError() : toMicroagentError(err);
        const reason = typeof e.data.reason === 'string' ? e.data.reason : e.message;
        const msg =
          e.code === 'BOOT_FAILED' || e.code === 'VM_EXITED' ? e.message : `refused ${reason}`;
        reply(`ERR ${msg.replace(/\n/g, ' ')}`);
      });
    };
    sock.on('data', onData);
    sock.on('error', () => {});
  }

  private async connectClient(sock: Socket, port: number, leftover: Buffer): Promise<void> {
    await this.waitReady();
    const mux = this.mux;
    if (!mux || mux.closed)
      throw this.exited
        ? this.exitError()
        : new MicroagentError('GUEST_CHANNEL_UNAVAILABLE', 'the guest channel is closed');
    // What the client sent behind its CONNECT line (an exec request, say)
    // follows OPEN at once: the guest acts on it a channel round trip
    // sooner (~10 ms under TCG).
    const stream = await mux.openStream(port, leftover);
    if (sock.destroyed) {
      stream.reset('the host client went away');
      return;
    }
    sock.write(`OK ${stream.id}\n`);
    this.bridge(sock, stream);
  }

  /** Pipes a client socket and a mux stream both ways, with backpressure. */
  private bridge(sock: Socket, stream: MuxStream): void {
    stream.on('data', (chunk: Buffer, consumed: () => void) => {
      if (sock.destroyed || !sock.writable) return consumed();
      sock.write(chunk, () => consumed());
    });
    stream.on('end', () => sock.end());
    stream.on('reset', () => sock.destroy());
    sock.on('data', (chunk: Buffer) => {
      if (!stream.write(chunk)) sock.pause();
    });
    stream.on('drain', () => sock.resume());
    sock.on('end', () => stream.end());
    sock.on('close', () => stream.reset('the host client closed the connection'));
    if (stream.needsDrain) return; // the early bytes are still queued: 'drain' resumes
    sock.resume();
  }

  // ---- ctl.sock -------------------------------------------------------------------

  private onControl(sock: Socket): void {
    let text = '';
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    const timer = setTimeout(() => sock.destroy(), REQUEST_LINE_TIMEOUT_MS);
    const onData = (s: string): void => {
      text += s;
      const nl = text.indexOf('\n');
      if (nl < 0 && text.length <= MAX_CTL_LINE) return;
      sock.off('data', onData);
      clearTimeout(timer);
      const respond = (r: CtlResponse): void => {
        if (!sock.destroyed) sock.end(JSON.stringify(r) + '\n');
      };
      let req: CtlRequest;
      try {
        if (nl < 0) throw new MicroagentError('INVALID_ARGUMENT', 'control request line too long');
        req = CtlRequestSchema.parse(JSON.parse(text.slice(0, nl)));
      } catch (err) {
        const e =
          err instanceof MicroagentError
            ? err
            : new MicroagentError(
                'INVALID_ARGUMENT',
                `bad control request: ${(err as Error).message}`,
              );
        respond({ ok: false, error: e.toJSON() });
        return;
      }
      this.handleControl(req).then(respond, (err: unknown) =>
        respond({ ok: false, error: toMicroagentError(err).toJSON() }),
      );
    };
    sock.on('data', onData);
  }

  private async handleControl(req: CtlRequest): Promise<CtlResponse> {
    const ok = (extra: { timedOut?: boolean; rttUs?: number } = {}): CtlResponse => ({
      ok: true,
      state: structuredClone(this.state),
      ...extra,
    });
    switch (req.cmd) {
      case 'status':
        return ok();
      case 'ping': {
        if (!this.mux || this.state.readyAt === undefined) {
          throw new MicroagentError(
            'GUEST_CHANNEL_UNAVAILABLE',
            `the guest is not ready (state ${this.state.state})`,
          );
        }
        return ok({ rttUs: await this.mux.ping() });
      }
      case 'wait': {
        const timedOut = !(await this.waitExit(req.timeoutMs));
        return ok(timedOut ? { timedOut } : {});
      }
      case 'kill':
        await this.killAndWait();
        return ok();
      case 'stop': {
        if (this.exited) return ok();
        this.log(`stop requested (grace ${req.graceMs} ms)`);
        if (this.state.state === 'paused') await this.resumeVm();
        if (this.state.state !== 'stopping') {
          this.state.state = 'stopping';
          void this.persist();
        }
        if (this.state.readyAt !== undefined && this.mux && !this.mux.closed) this.sendPowerOff();
        else this.powerOffPending = true; // sent when the guest says HELLO
        const exited = await this.waitExit(req.graceMs);
        return ok(exited ? {} : { timedOut: true });
      }
      case 'pause': {
        if (!this.qmp)
          throw new MicroagentError(
            'INVALID_ARGUMENT',
            'this VM has no QMP socket; it cannot be paused',
            { remediation: 'Start it with QMP enabled.' },
          );
        if (this.state.state === 'paused') return ok();
        if (this.state.state !== 'booting' && this.state.state !== 'ready') {
          throw new MicroagentError(
            'INVALID_ARGUMENT',
            `cannot pause a VM in state ${this.state.state}`,
          );
        }
        await this.qmp.execute('stop');
        this.stateBeforePause = this.state.state;
        this.state.state = 'paused';
        this.log('paused');
        await this.persist();
        return ok();
      }
      case 'resume': {
        if (this.state.state !== 'paused') return ok();
        await this.resumeVm();
        return ok();
      }
    }
  }

  private async resumeVm(): Promise<void> {
    if (!this.qmp) return;
    await this.qmp.execute('cont');
    this.state.state = this.stateBeforePause;
    this.log('resumed');
    await this.persist();
  }

  /** True when QEMU exited within timeoutMs (forever when undefined). */
  private waitExit(timeoutMs?: number): Promise<boolean> {
    if (this.exited && this.state.state === 'exited') return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => resolve(false), Math.min(timeoutMs, MAX_TIMER_MS));
      this.exitWaiters.push(() => {
        if (timer) clearTimeout(timer);
        resolve(true);
      });
    });
  }

  // ---- QEMU exit ----------------------------------------------------------------------

  private onQmpEvent(e: QmpEvent): void {
    this.log(`QMP event ${e.event}${e.data ? ' ' + JSON.stringify(e.data) : ''}`);
    if (e.event === 'SHUTDOWN' && typeof e.data?.reason === 'string')
      this.shutdownEvent = e.data.reason;
  }

  private async onQemuExit(
    code: number | null,
    signal: NodeJS.Signals | null,
    detail?: string,
  ): Promise<void> {
    if (this.exited) return;
    this.exited = true;
    for (const t of this.timers) clearTimeout(t);
    // QEMU sends its SHUTDOWN event just before exiting: read QMP to its end
    // (bounded) so the event is not lost in a race with SIGCHLD.
    if (this.qmp && !this.qmp.closed) {
      const qmp = this.qmp;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 500);
        qmp.once('close', () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    const reason = await this.exitReason(code, signal);
    const exit: ExitInfo = { code, signal, reason, at: Date.now() };
    exit.detail = detail ?? this.killDetail ?? (await this.exitDetail(reason, code, signal));
    await this.stopNetstack();
    this.state.exit = exit;
    this.state.state = 'exited';
    this.log(
      `QEMU exited (code ${code}, signal ${signal}): ${reason}${exit.detail ? ' — ' + exit.detail : ''}`,
    );

    // monitor.json first: clients that see their stream fail read it to
    // explain why (agent-client's BOOT_FAILED / VM_EXITED).
    await this.persist();
    const err = this.exitError();
    for (const w of this.readyWaiters.splice(0)) w.reject(err);
    this.mux?.shutdown(err.message);
    this.qmp?.close();
    for (const w of this.exitWaiters.splice(0)) w();
    await this.finish();
  }

  private async exitReason(
    code: number | null,
    signal: NodeJS.Signals | null,
  ): Promise<ExitReason> {
    if (this.killReason) return this.killReason;
    if (this.config.qmp && this.state.qemuStartedAt === undefined) return 'vmm_start_failed';
    switch (this.shutdownEvent) {
      case 'guest-shutdown':
        return 'poweroff';
      case 'guest-reset':
      case 'guest-panic':
        return 'guest_panic_or_reset';
      case 'host-qmp-quit':
      case 'host-signal':
      case 'host-ui':
        return 'killed';
    }
    if (signal !== null) return 'killed';
    if (code !== 0) return 'vmm_error';
    if (this.powerOffSent) return 'poweroff';
    // No QMP: tell a panic from a power-off by the console.
    const tail = await readTail(this.files.serialLog, 60);
    return /Kernel panic|reboot: Restarting system/.test(tail)
      ? 'guest_panic_or_reset'
      : 'poweroff';
  }

  private async exitDetail(
    reason: ExitReason,
    code: number | null,
    signal: NodeJS.Signals | null,
  ): Promise<string | undefined> {
    switch (reason) {
      case 'vmm_start_failed':
      case 'vmm_error': {
        const qemuErr = (await readTail(this.files.qemuLog, 5)).trim();
        return `QEMU exited with ${signal ?? `code ${code}`}${qemuErr ? `: ${qemuErr.replace(/\n/g, ' | ')}` : ''}`;
      }
      case 'boot_timeout':
        return `the guest did not say HELLO within ${this.config.bootTimeoutMs} ms`;
      case 'owner_exit':
        return `the owner process ${this.config.owner?.pid} went away`;
      case 'deadline':
        return 'the run deadline passed';
      case 'guest_panic_or_reset': {
        const tail = await readTail(this.files.serialLog, 60);
        const panic = /Kernel panic[^\n]*/.exec(tail);
        return panic ? panic[0].trim() : 'the guest reset (panic, reboot or triple fault)';
      }
      default:
        return undefined;
    }
  }

  private async finish(): Promise<void> {
    // Answers to clients whose waits just failed or ended (BOOT_FAILED, the
    // exit, kill/wait/stop on ctl.sock) are written from promise callbacks:
    // let them run first. Control connections then end by themselves.
    await new Promise((r) => setImmediate(r));
    for (const s of this.servers) s.close();
    // Guest-channel clients may have a last answer (BOOT_FAILED, the exit)
    // still being written: end them, and cut off any that do not drain.
    for (const c of this.clients) {
      c.end();
      setTimeout(() => c.destroy(), CLIENT_DRAIN_MS).unref();
    }
    // QEMU's NIC socket too: QEMU leaves its listening socket file behind.
    for (const p of runtimeSockets(this.files)) await unlink(p).catch(() => {});
    if (this.state.exit?.reason === 'owner_exit' && this.config.removeOnOwnerExit) {
      this.log(`removing workspace ${this.config.workspaceDir} (owner gone)`);
      await rm(this.config.workspaceDir, { recursive: true, force: true }).catch(() => {});
    }
    this.log('monitor exiting');
    this.finished(0);
  }

  /** Records a monitor bug as the exit reason (the VM was already killed). */
  async recordCrash(err: unknown): Promise<void> {
    this.log(`monitor error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    this.emergencyKill('monitor_error');
    if (!this.exited) {
      this.state.state = 'exited';
      this.state.exit = {
        code: null,
        signal: 'SIGKILL',
        reason: 'monitor_error',
        detail: err instanceof Error ? err.message : String(err),
        at: Date.now(),
      };
      await this.persist();
    }
  }
}
