/**
 * Host-side client of a workspace's agent.sock (docs/protocol.md §2): open a
 * private byte stream to a guest port, with hybrid-vsock semantics for every
 * backend.
 */
import { connect, type Socket } from 'node:net';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { MicroagentError, type ErrorCode } from '../errors.js';
import { VmStatusSchema, type VmStatus } from '../vmkit/schema.js';
import { readTail } from './console.js';

export interface ConnectAgentOptions {
  /** Bound on connect + waiting for the guest to be ready + OPEN. Default 60 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * The first bytes for the guest service, sent behind the CONNECT line:
   * the monitor forwards them right behind its OPEN, a channel round trip
   * sooner than a write after `OK`. Lost if the stream is refused.
   */
  early?: Uint8Array;
}

const MAX_REPLY_LINE = 4096;
const CONSOLE_LINES = 40;

/**
 * Connects to agentSock, asks for `port`, and resolves with the socket
 * positioned right after the `OK <id>` line: from then on it is the raw
 * stream to the guest service (end() = EOF to the guest).
 *
 * Fails with BOOT_FAILED (the VM stopped before the guest was ready),
 * VM_EXITED (it stopped later), BOOT_TIMEOUT (still booting when timeoutMs
 * ran out) — each carrying the serial console's last lines in the message
 * and data.consoleTail — or GUEST_CHANNEL_UNAVAILABLE (no monitor, the guest
 * refused the port, …). An abort rejects with INTERRUPTED.
 */
export async function connectAgent(
  agentSock: string,
  port: number,
  options: ConnectAgentOptions = {},
): Promise<Socket> {
  if (options.signal?.aborted) throw interrupted();
  const runDir = dirname(agentSock);
  const timeoutMs = options.timeoutMs ?? 60_000;
  const sock = connect({ path: agentSock, allowHalfOpen: true });
  return new Promise<Socket>((resolve, reject) => {
    let settled = false;
    let buf = Buffer.alloc(0);
    const finish = (err: Error | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      sock.off('readable', onReadable);
      sock.off('error', onError);
      sock.off('close', onClose);
      if (err) {
        sock.destroy();
        reject(err);
      } else resolve(sock);
    };
    const failFromStatus = (
      fallback: ErrorCode,
      message: string,
      extra: Record<string, unknown> = {},
    ): void => {
      void vmFailure(runDir).then((e) =>
        finish(e ?? new MicroagentError(fallback, message, { data: extra })),
      );
    };
    const onAbort = (): void => finish(interrupted());
    const timer = setTimeout(() => {
      void readStatus(runDir).then(async (st) => {
        if (st && (st.state === 'booting' || st.state === 'starting')) {
          finish(
            await withConsole(
              'BOOT_TIMEOUT',
              `the guest was not ready within ${timeoutMs} ms`,
              runDir,
            ),
          );
        } else {
          failFromStatus(
            'GUEST_CHANNEL_UNAVAILABLE',
            `no answer from ${agentSock} within ${timeoutMs} ms`,
          );
        }
      });
    }, timeoutMs);
    const onError = (err: NodeJS.ErrnoException): void => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        failFromStatus(
          'GUEST_CHANNEL_UNAVAILABLE',
          `no monitor listens on ${agentSock} (${err.code})`,
          { path: agentSock },
        );
      } else {
        failFromStatus('GUEST_CHANNEL_UNAVAILABLE', `${agentSock}: ${err.message}`, {
          path: agentSock,
        });
      }
    };
    const onClose = (): void =>
      failFromStatus('GUEST_CHANNEL_UNAVAILABLE', `${agentSock} closed without answering CONNECT`);
    // 'readable' + read() rather than 'data': once our listener is removed
    // the socket is back in its initial mode, so the caller's own 'data'
    // listener (or pipe) starts the flow and no byte is lost.
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while (!settled && (chunk = sock.read() as Buffer | null) !== null) onData(chunk);
    };
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > MAX_REPLY_LINE)
          finish(new MicroagentError('GUEST_PROTOCOL', `${agentSock} answered an overlong line`));
        return;
      }
      const line = buf.subarray(0, nl).toString('utf8');
      const rest = buf.subarray(nl + 1);
      if (/^OK [0-9]+$/.test(line)) {
        finish(undefined);
        if (rest.length > 0) sock.unshift(rest);
        return;
      }
      const m = /^ERR (\S+)\s*(.*)$/.exec(line);
      if (!m) {
        finish(
          new MicroagentError(
            'GUEST_PROTOCOL',
            `${agentSock} answered ${JSON.stringify(line.slice(0, 200))}`,
          ),
        );
        return;
      }
      const [, token, text] = m as unknown as [string, string, string];
      void errFromReply(token, text, port, runDir).then(finish);
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    sock.on('readable', onReadable);
    sock.on('error', onError);
    sock.on('close', onClose);
    sock.once('connect', () => {
      const line = Buffer.from(`CONNECT ${port}\n`);
      // One write, so that the early bytes usually reach the monitor in the
      // same read as the line.
      sock.write(options.early ? Buffer.concat([line, options.early]) : line);
    });
  });
}

async function errFromReply(
  token: string,
  text: string,
  port: number,
  runDir: string,
): Promise<MicroagentError> {
  switch (token) {
    case 'boot_failed': {
      const st = await readStatus(runDir);
      return withConsole(
        bootFailureCode(st),
        `the VM stopped before the guest was ready: ${text}`,
        runDir,
        st,
      );
    }
    case 'vm_exited':
      return withConsole('VM_EXITED', `the VM has stopped: ${text}`, runDir);
    case 'refused':
      return new MicroagentError(
        'GUEST_CHANNEL_UNAVAILABLE',
        `the guest refused port ${port}: ${text}`,
        {
          data: { port, reason: text },
        },
      );
    case 'bad_request':
      return new MicroagentError('INTERNAL', `the monitor rejected CONNECT ${port}: ${text}`);
    default:
      return new MicroagentError(
        'GUEST_CHANNEL_UNAVAILABLE',
        `CONNECT ${port} failed: ${token} ${text}`.trim(),
        {
          data: { port, reason: `${token} ${text}`.trim() },
        },
      );
  }
}

/** The VM's status from <run>/monitor.json; undefined when absent or unreadable. */
export async function readStatus(runDir: string): Promise<VmStatus | undefined> {
  try {
    return VmStatusSchema.parse(JSON.parse(await readFile(join(runDir, 'monitor.json'), 'utf8')));
  } catch {
    return undefined;
  }
}

/** BOOT_FAILED / VM_EXITED with the console tail when monitor.json says the VM is gone. */
export async function vmFailure(runDir: string): Promise<MicroagentError | undefined> {
  const st = await readStatus(runDir);
  if (!st || st.state !== 'exited') return undefined;
  const how = `${st.exit?.reason ?? 'unknown'}${st.exit?.detail ? `: ${st.exit.detail}` : ''}`;
  if (st.readyAt === undefined)
    return withConsole(
      bootFailureCode(st),
      `the VM stopped before the guest was ready (${how})`,
      runDir,
      st,
    );
  return withConsole('VM_EXITED', `the VM has stopped (${how})`, runDir, st);
}

/** A guest that was still booting when its boot deadline hit may boot on a retry. */
function bootFailureCode(st: VmStatus | undefined): ErrorCode {
  return st?.exit?.reason === 'boot_timeout' ? 'BOOT_TIMEOUT' : 'BOOT_FAILED';
}

async function withConsole(
  code: ErrorCode,
  message: string,
  runDir: string,
  status?: VmStatus,
): Promise<MicroagentError> {
  const tail = await readTail(join(runDir, 'serial.log'), CONSOLE_LINES);
  const st = status ?? (await readStatus(runDir));
  return new MicroagentError(
    code,
    tail ? `${message}\n--- serial console (last lines) ---\n${tail}` : message,
    {
      data: { consoleTail: tail, ...(st?.exit ? { exit: st.exit } : {}) },
    },
  );
}

function interrupted(): MicroagentError {
  return new MicroagentError('INTERRUPTED', 'interrupted before the guest command started');
}
