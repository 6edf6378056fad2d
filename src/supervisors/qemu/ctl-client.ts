/**
 * Client of a monitor's ctl.sock: one JSON request line, one JSON response
 * line per connection (docs/supervisor-protocol.md "ctl.sock").
 */
import { connect } from 'node:net';
import { MicroagentError, errorFromJSON } from '../../errors.js';
import { CtlResponseSchema, type CtlRequest, type MonitorState } from './state.js';

export interface CtlResult {
  state: MonitorState;
  timedOut?: boolean;
  rttUs?: number;
}

/**
 * Sends one control request. Throws GUEST_CHANNEL_UNAVAILABLE with
 * data.unreachable=true when no monitor listens (socket missing or refused,
 * or the connection reset by a monitor that is exiting),
 * the monitor's own error (a RemoteError) when it answers ok:false.
 */
export function ctlRequest(
  socketPath: string,
  request: CtlRequest,
  timeoutMs: number,
): Promise<CtlResult> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let text = '';
    let settled = false;
    const done = (err: Error | undefined, value?: CtlResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(
      () =>
        done(
          new MicroagentError(
            'SUPERVISOR_FAILED',
            `the monitor did not answer \`${request.cmd}\` within ${timeoutMs} ms`,
          ),
        ),
      timeoutMs,
    );
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(request) + '\n'));
    sock.on('data', (s: string) => {
      text += s;
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      try {
        const r = CtlResponseSchema.parse(JSON.parse(text.slice(0, nl)));
        if (!r.ok) return done(errorFromJSON('supervisor', r.error));
        const out: CtlResult = { state: r.state };
        if (r.timedOut !== undefined) out.timedOut = r.timedOut;
        if (r.rttUs !== undefined) out.rttUs = r.rttUs;
        done(undefined, out);
      } catch (err) {
        done(
          new MicroagentError(
            'SUPERVISOR_PROTOCOL',
            `bad answer from the monitor: ${(err as Error).message}`,
            { cause: err },
          ),
        );
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      // ECONNRESET/EPIPE: the monitor was closing its sockets on its way
      // out (the VM just ended); like a missing socket, monitor.json has
      // the final word.
      const unreachable =
        err.code === 'ENOENT' ||
        err.code === 'ECONNREFUSED' ||
        err.code === 'ECONNRESET' ||
        err.code === 'EPIPE';
      done(
        new MicroagentError(
          'GUEST_CHANNEL_UNAVAILABLE',
          `cannot reach the monitor at ${socketPath}: ${err.message}`,
          {
            data: { unreachable },
            cause: err,
          },
        ),
      );
    });
    sock.on('close', () =>
      done(
        new MicroagentError(
          'GUEST_CHANNEL_UNAVAILABLE',
          'the monitor closed ctl.sock without answering',
          { data: { unreachable: true } },
        ),
      ),
    );
  });
}

export function isUnreachable(err: unknown): boolean {
  return (
    err instanceof MicroagentError &&
    err.code === 'GUEST_CHANNEL_UNAVAILABLE' &&
    err.data.unreachable === true
  );
}
