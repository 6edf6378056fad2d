/**
 * Network flags shared by `run` and `create`, and `microagent network NAME`
 * (declared and runtime network view). Parsing and validation live in
 * src/workspace/network.ts.
 */
import { parseArgs, UsageError, type FlagSpecs } from '../args.js';
import { table, writeJson, type Output } from '../output.js';
import {
  formatPublished,
  parseNetworkMode,
  type NetworkOptions,
  type NetworkSettings,
  workspaceNetwork,
} from '../../index.js';

export const NETWORK_FLAGS: FlagSpecs = {
  network: {
    type: 'string',
    arg: 'user|isolated',
    help: 'user (default): outbound IPv4 + published ports; isolated: no network device',
  },
  publish: {
    type: 'strings',
    short: 'p',
    arg: '[IP:]HOST:GUEST',
    help: 'Publish a guest TCP port on the host (default IP 127.0.0.1; repeatable)',
  },
  'allow-host-loopback': {
    type: 'boolean',
    help: "Let the guest reach services on the host's 127.0.0.1 (a risk; off by default)",
  },
};

/** CreateOptions/RunOptions.network from parsed flags ({} when none was given). */
export function networkOptionsFrom(flags: Record<string, unknown>): { network?: NetworkOptions } {
  const network: NetworkOptions = {};
  if (typeof flags.network === 'string') network.mode = parseNetworkMode(flags.network);
  if (Array.isArray(flags.publish)) network.publish = flags.publish as string[];
  if (flags['allow-host-loopback'] === true) network.allowHostLoopback = true;
  return Object.keys(network).length > 0 ? { network } : {};
}

/** One line for `status`: mode, published ports, host loopback. */
export function networkSummary(n: NetworkSettings): string {
  if (n.mode === 'isolated') return 'isolated (no network device)';
  const ports = n.publish.map(formatPublished).join(', ');
  return `user${ports ? `, published ${ports}` : ''}${n.allowHostLoopback ? ', host loopback allowed' : ''}`;
}

export const NETWORK_USAGE = 'microagent network NAME [--json]';
export const NETWORK_CMD_FLAGS: FlagSpecs = {
  json: { type: 'boolean', help: 'Print JSON' },
  'state-dir': { type: 'string', arg: 'DIR', help: 'State directory (default ~/.microagent)' },
};

async function networkMain(argv: string[], out: Output): Promise<number> {
  const { flags, positionals } = parseArgs(argv, NETWORK_CMD_FLAGS, {}, NETWORK_USAGE);
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0
        ? 'missing the workspace NAME'
        : `unexpected argument "${positionals[1]}"`,
      `Usage: ${NETWORK_USAGE}`,
    );
  }
  const view = await workspaceNetwork({
    name: positionals[0] as string,
    ...(flags['state-dir'] ? { stateDir: flags['state-dir'] as string } : {}),
  });
  if (out.json || flags.json === true) {
    writeJson(out, view);
    return 0;
  }
  const d = view.declared;
  const rows: string[][] = [
    ['name', view.name],
    ['state', view.state],
    ['mode', d.mode],
  ];
  if (d.mode === 'user' && view.guest.mode === 'user') {
    rows.push(
      [
        'host loopback',
        d.allowHostLoopback ? 'reachable from the guest (--allow-host-loopback)' : 'blocked',
      ],
      [
        'guest',
        `${view.guest.address} via ${view.guest.gateway}, dns ${view.guest.dns.join(' ')}, mtu ${view.guest.mtu}`,
      ],
      ['published', d.publish.map(formatPublished).join(', ') || '-'],
    );
  } else {
    rows.push(['guest', 'lo only (no network device)']);
  }
  const rt = view.runtime;
  if (rt) {
    rows.push([
      'runtime',
      `vm ${rt.vmState}${rt.backend ? `, ${rt.backend}${rt.helperPid ? ` pid ${rt.helperPid}` : ''}` : ', no network stack'}${rt.helperRestarts ? `, restarted ${rt.helperRestarts}x` : ''}`,
    ]);
    if (rt.down) rows.push(['down', rt.down]);
    for (const p of rt.published) {
      rows.push(['listening', `${formatPublished(p)}: ${p.listening ? 'yes' : 'NO'}`]);
    }
  } else {
    rows.push(['runtime', 'no VM running']);
  }
  out.stdout.write(table(rows) + '\n');
  return 0;
}

export const NETWORK_COMMAND = {
  summary: 'Show a workspace network: declared settings and runtime view',
  usage: NETWORK_USAGE,
  flags: NETWORK_CMD_FLAGS,
  main: networkMain,
};
