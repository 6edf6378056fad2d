/**
 * The workspace state machine: which operation is allowed from which state,
 * and the error a wrong-state call gets. docs/lifecycle.md renders this table;
 * a unit test keeps the two in step.
 */
import { MicroagentError, type ErrorCode } from '../errors.js';
import type { WorkspaceState } from './record.js';

export type Operation =
  | 'start'
  | 'exec'
  | 'connect'
  | 'cp-live'
  | 'cp-offline'
  | 'halt'
  | 'stop'
  | 'kill'
  | 'pause'
  | 'resume'
  | 'delete';

interface Rule {
  from: readonly WorkspaceState[];
  /** What the operation leads to (for the docs). */
  to: string;
  summary: string;
}

/** The allowed transitions. A state not listed for an operation is refused. */
export const TRANSITIONS: Record<Operation, Rule> = {
  start: {
    from: ['prepared', 'halted', 'stopped', 'failed'],
    to: 'starting → running',
    summary: 'boot the workspace disk',
  },
  exec: { from: ['running'], to: 'running', summary: 'run a command in the guest' },
  connect: { from: ['running'], to: 'running', summary: 'interactive shell' },
  'cp-live': { from: ['running'], to: 'running', summary: 'copy through the guest agent' },
  'cp-offline': {
    from: ['prepared', 'halted', 'stopped', 'failed'],
    to: 'unchanged',
    summary: 'copy through the disk image',
  },
  halt: {
    from: ['running', 'paused', 'starting'],
    to: 'stopping → halted',
    summary: 'clean power-off, disk kept',
  },
  stop: {
    from: ['running', 'paused', 'starting'],
    to: 'stopping → stopped (or failed after 5 s, no escalation)',
    summary: 'ask the guest to stop',
  },
  kill: {
    from: ['starting', 'running', 'paused', 'stopping', 'failed'],
    to: 'stopped',
    summary: 'hard stop of the VM',
  },
  pause: { from: ['running'], to: 'paused', summary: 'freeze the vCPUs' },
  resume: { from: ['paused'], to: 'running', summary: 'thaw the vCPUs' },
  delete: {
    from: ['prepared', 'halted', 'stopped', 'failed'],
    to: '(removed)',
    summary: 'remove the workspace and its disk',
  },
};

/** Live states: a VM process is (supposed to be) running. */
export const LIVE_STATES: readonly WorkspaceState[] = ['starting', 'running', 'paused', 'stopping'];
/** States `wait` returns at. */
export const TERMINAL_STATES: readonly WorkspaceState[] = [
  'prepared',
  'halted',
  'stopped',
  'failed',
];

export function isLive(state: WorkspaceState): boolean {
  return LIVE_STATES.includes(state);
}

/** Throws the wrong-state error for op in state, or returns. */
export function assertTransition(op: Operation, state: WorkspaceState, name: string): void {
  if (TRANSITIONS[op].from.includes(state)) return;
  const [code, remediation] = wrongState(op, state, name);
  throw new MicroagentError(code, `cannot ${op} workspace ${name}: it is ${state}`, {
    remediation,
    data: { name, state, operation: op },
  });
}

function wrongState(op: Operation, state: WorkspaceState, name: string): [ErrorCode, string] {
  if (state === 'paused') {
    return ['WORKSPACE_PAUSED', `Resume it first: microagent resume ${name}`];
  }
  if (isLive(state)) {
    if (op === 'delete' || op === 'cp-offline') {
      return ['WORKSPACE_RUNNING', `Halt or stop it first: microagent halt ${name}`];
    }
    return ['WORKSPACE_RUNNING', `It is already ${state}; see microagent status ${name}`];
  }
  if (op === 'resume') {
    return ['WORKSPACE_NOT_PAUSED', `Only a paused workspace can be resumed; it is ${state}.`];
  }
  return ['WORKSPACE_NOT_RUNNING', `Start it first: microagent start ${name}`];
}
