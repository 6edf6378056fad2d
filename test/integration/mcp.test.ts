/**
 * `microagent serve mcp` end to end: the SDK's own client drives the real
 * CLI, which boots real VMs in the shared e2e state directory.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import {
  E2E_STATE_DIR,
  killProcessesMentioning,
  processesMentioning,
  waitNoProcesses,
} from '../helpers.js';

const BIN = join(PACKAGE_ROOT, 'bin', 'microagent');
const SERVER_ARGS = ['serve', 'mcp', '--state-dir', E2E_STATE_DIR];

interface Envelope {
  ok: boolean;
  result?: Record<string, unknown>;
  error?: { kind: string; code: string; message: string; remediation: string; retryable: boolean };
  meta: { tool: string; durationMs: number; requestId: string; replayed?: boolean };
}

const created: string[] = [];
function wsName(prefix: string): string {
  const name = `mcp-${prefix}-${randomBytes(3).toString('hex')}`;
  created.push(name);
  return name;
}

function wsDir(name: string): string {
  return join(E2E_STATE_DIR, 'workspaces', name) + '/';
}

describe('serve mcp', { timeout: 600_000 }, () => {
  let client: Client;
  let scratch: string;

  async function call(name: string, args: Record<string, unknown> = {}): Promise<Envelope> {
    const r = (await client.callTool({ name, arguments: args }, undefined, {
      timeout: 300_000,
    })) as CallToolResult;
    const env = r.structuredContent as unknown as Envelope;
    assert.equal(typeof env?.ok, 'boolean', `${name}: no envelope in ${JSON.stringify(r)}`);
    assert.equal(r.isError === true, !env.ok, `${name}: isError must match ok`);
    assert.deepEqual(
      JSON.parse((r.content[0] as { text: string }).text),
      env,
      'text content mirrors structured content',
    );
    return env;
  }

  async function ok(
    name: string,
    args: Record<string, unknown> = {},
  ): Promise<Record<string, unknown>> {
    const env = await call(name, args);
    assert.equal(env.ok, true, `${name} failed: ${JSON.stringify(env.error)}`);
    assert.equal(env.meta.tool, name);
    return env.result ?? {};
  }

  before(async () => {
    scratch = await mkdtemp(join(PACKAGE_ROOT, '.local', 'mcp-test-'));
    client = new Client({ name: 'microagent-test', version: '0' });
    await client.connect(
      new StdioClientTransport({ command: BIN, args: SERVER_ARGS, stderr: 'inherit' }),
    );
  });

  after(async () => {
    for (const name of created) {
      await client.callTool({ name: 'kill', arguments: { name } }).catch(() => undefined);
      await client.callTool({ name: 'delete', arguments: { name } }).catch(() => undefined);
    }
    await client.close();
    for (const name of created) killProcessesMentioning(wsDir(name));
    await rm(scratch, { recursive: true, force: true });
  });

  it('lists every tool with described inputs and hints', async () => {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name).sort();
    for (const expected of [
      'run',
      'create',
      'start',
      'status',
      'list',
      'exec',
      'cp',
      'artifacts',
      'halt',
      'stop',
      'kill',
      'pause',
      'resume',
      'delete',
      'logs',
      'events',
      'result',
      'image_pull',
      'image_list',
      'kernel_status',
      'doctor',
      'describe',
    ]) {
      assert.ok(names.includes(expected), `missing tool ${expected}`);
    }
    for (const t of tools) {
      assert.ok(t.description, `${t.name} has a description`);
      for (const hint of ['readOnlyHint', 'destructiveHint', 'idempotentHint'] as const) {
        assert.equal(typeof t.annotations?.[hint], 'boolean', `${t.name}.${hint}`);
      }
      const props = (t.inputSchema.properties ?? {}) as Record<string, { description?: string }>;
      for (const [field, schema] of Object.entries(props)) {
        assert.ok(schema.description, `${t.name}.${field} has a description`);
      }
      assert.equal(
        (t.inputSchema as { additionalProperties?: unknown }).additionalProperties,
        false,
        `${t.name} rejects unknown arguments`,
      );
    }
    const create = tools.find((t) => t.name === 'create');
    assert.ok(
      create?.inputSchema.properties?.idempotency_key,
      'mutating tools take idempotency_key',
    );
    assert.equal(tools.find((t) => t.name === 'status')?.annotations?.readOnlyHint, true);
    assert.equal(tools.find((t) => t.name === 'delete')?.annotations?.destructiveHint, true);
  });

  it('a missing or wrong-typed argument is a usage error naming the field', async () => {
    const missing = await call('status', {});
    assert.equal(missing.ok, false);
    assert.equal(missing.error?.kind, 'usage');
    assert.equal(missing.error?.code, 'INVALID_ARGUMENT');
    assert.match(missing.error?.message ?? '', /\bname\b.*required/);
    const wrong = await call('exec', { name: 'x', command: 42 });
    assert.equal(wrong.error?.code, 'INVALID_ARGUMENT');
    assert.match(wrong.error?.message ?? '', /\bcommand\b/);
    const fixed = await call('list', { state_dir: '/tmp/elsewhere' });
    assert.equal(fixed.error?.code, 'INVALID_ARGUMENT');
    assert.match(fixed.error?.message ?? '', /state_dir/);
  });

  it('an unknown workspace is a classified not_found error', async () => {
    const r = await call('status', { name: 'mcp-no-such-workspace' });
    assert.equal(r.ok, false);
    assert.equal(r.error?.kind, 'not_found');
    assert.equal(r.error?.code, 'WORKSPACE_NOT_FOUND');
    assert.equal(r.error?.retryable, false);
    assert.ok(r.error?.remediation);
    const halt = await call('halt', { name: 'mcp-no-such-workspace' });
    assert.equal(halt.error?.code, 'WORKSPACE_NOT_FOUND');
  });

  it('create → start → exec → cp in and out → artifacts → halt → delete', async () => {
    const name = wsName('life');
    const createdWs = await ok('create', {
      name,
      labels: { via: 'mcp' },
      outputs: { report: '/root/report.txt' },
    });
    assert.equal(createdWs.state, 'prepared');
    assert.equal((await ok('start', { name })).state, 'running');
    assert.equal((await ok('status', { name })).state, 'running');

    const exec = await ok('exec', {
      name,
      command: ['sh', '-c', 'echo out; echo err >&2; exit 3'],
    });
    assert.equal(exec.exitCode, 3, 'a non-zero exit is a result');
    assert.equal(exec.stdout, 'out\n');
    assert.equal(exec.stderr, 'err\n');

    const payload = `from the host ${randomBytes(8).toString('hex')}\n`;
    const hostIn = join(scratch, 'in.txt');
    await writeFile(hostIn, payload);
    const cpIn = await ok('cp', {
      name,
      direction: 'in',
      host_path: hostIn,
      guest_path: '/root/in.txt',
    });
    assert.equal(cpIn.bytes, payload.length);
    assert.equal((await ok('exec', { name, command: 'cat /root/in.txt' })).stdout, payload);

    await ok('exec', { name, command: 'tr a-z A-Z < /root/in.txt > /root/report.txt' });
    const hostOut = join(scratch, 'out.txt');
    await ok('cp', { name, direction: 'out', host_path: hostOut, guest_path: '/root/report.txt' });
    assert.equal(await readFile(hostOut, 'utf8'), payload.toUpperCase());

    const listed = await ok('artifacts', { name });
    assert.deepEqual(listed.artifacts, [{ name: 'report', path: '/root/report.txt' }]);
    const artifactOut = join(scratch, 'report.txt');
    await ok('artifacts', { name, artifact: 'report', host_path: artifactOut });
    assert.equal(await readFile(artifactOut, 'utf8'), payload.toUpperCase());
    assert.equal(
      (await call('artifacts', { name, artifact: 'nope', host_path: artifactOut })).error?.code,
      'ARTIFACT_NOT_FOUND',
    );

    const busy = await call('delete', { name });
    assert.equal(busy.error?.kind, 'conflict', 'a running workspace cannot be deleted');
    assert.equal((await ok('halt', { name })).state, 'halted');
    assert.equal(
      (await call('exec', { name, command: 'true' })).error?.code,
      'WORKSPACE_NOT_RUNNING',
    );
    const events = await ok('events', { name });
    assert.deepEqual(
      (events.events as { state: string }[]).map((e) => e.state),
      ['prepared', 'starting', 'running', 'stopping', 'halted'],
    );
    await ok('delete', { name });
    assert.equal((await call('status', { name })).error?.code, 'WORKSPACE_NOT_FOUND');
    assert.deepEqual(await waitNoProcesses(wsDir(name)), []);
  });

  it('run boots a throwaway workspace, returns the output and leaves nothing behind', async () => {
    const name = wsName('run');
    const r = await ok('run', { name, command: ['sh', '-c', 'echo hello from $(uname -s)'] });
    assert.equal(r.status, 'exited');
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, 'hello from Linux\n');
    assert.equal(r.kept, false);
    assert.equal((await call('status', { name })).error?.code, 'WORKSPACE_NOT_FOUND');
    assert.equal(existsSync(wsDir(name)), false);
  });

  it('run and exec return the same document through MCP, the CLI --json and the library', async () => {
    const { runDocument } = await import('../../src/workspace/documents.js');
    const { runCommand } = await import('../../src/workspace/run.js');
    const argv = ['sh', '-c', 'echo out; echo err >&2'];
    const viaMcp = await ok('run', { command: argv });
    const cliOut = await new Promise<string>((resolve, reject) => {
      const child = spawn(BIN, ['run', '--json', '--state-dir', E2E_STATE_DIR, '--', ...argv], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let text = '';
      child.stdout.on('data', (c: Buffer) => (text += c.toString()));
      child.on('error', reject);
      child.on('close', () => resolve(text));
    });
    const viaCli = (JSON.parse(cliOut) as { result: Record<string, unknown> }).result;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const result = await runCommand({
      argv,
      stateDir: E2E_STATE_DIR,
      onStdout: (c) => void out.push(c),
      onStderr: (c) => void err.push(c),
    });
    const viaLib = runDocument(result, Buffer.concat(out), Buffer.concat(err)) as unknown as Record<
      string,
      unknown
    >;
    const stable = (d: Record<string, unknown>) => {
      const { workspace: _w, timings: _t, ...rest } = d;
      return rest;
    };
    assert.deepEqual(Object.keys(viaMcp), Object.keys(viaCli), 'the same fields, in order');
    assert.deepEqual(Object.keys(viaLib), Object.keys(viaCli));
    assert.deepEqual(stable(viaMcp), stable(viaCli));
    assert.deepEqual(stable(viaLib), stable(viaCli));
    assert.equal(viaCli.stdout, 'out\n');
    assert.equal(viaCli.stderr, 'err\n');

    // exec: a workspace that runs, the same document both ways.
    const name = wsName('docs');
    await ok('create', { name });
    await ok('start', { name });
    const execMcp = await ok('exec', { name, command: argv });
    const execCli = await new Promise<string>((resolve, reject) => {
      const child = spawn(
        BIN,
        ['exec', '--json', '--state-dir', E2E_STATE_DIR, name, '--', ...argv],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let text = '';
      child.stdout.on('data', (c: Buffer) => (text += c.toString()));
      child.on('error', reject);
      child.on('close', () => resolve(text));
    });
    const execDoc = (JSON.parse(execCli) as { result: Record<string, unknown> }).result;
    const noTime = (d: Record<string, unknown>) => {
      const { durationMs: _d, ...rest } = d;
      return rest;
    };
    assert.deepEqual(Object.keys(execMcp), Object.keys(execDoc));
    assert.deepEqual(noTime(execMcp), noTime(execDoc));
    assert.equal(execDoc.workspace, name);
    await ok('kill', { name });
  });

  it('replays a create with the same idempotency_key and refuses the key with other arguments', async () => {
    const name = wsName('idem');
    const key = `key-${randomBytes(4).toString('hex')}`;
    const first = await call('create', { name, profile: 'tiny', idempotency_key: key });
    assert.equal(first.ok, true, JSON.stringify(first.error));
    const again = await call('create', { profile: 'tiny', name, idempotency_key: key });
    assert.equal(again.ok, true, 'a replay is the first answer, not WORKSPACE_EXISTS');
    assert.deepEqual(again.result, first.result);
    assert.equal(again.meta.replayed, true);
    assert.equal(again.meta.requestId, first.meta.requestId);
    const list = await ok('list');
    assert.equal((list.workspaces as { name: string }[]).filter((w) => w.name === name).length, 1);

    const conflict = await call('create', { name, profile: 'small', idempotency_key: key });
    assert.equal(conflict.ok, false);
    assert.equal(conflict.error?.kind, 'conflict');
    assert.equal(conflict.error?.code, 'IDEMPOTENCY_CONFLICT');
    // Without the key the same call is a new request.
    assert.equal((await call('create', { name, profile: 'tiny' })).error?.code, 'WORKSPACE_EXISTS');
    await ok('delete', { name });
  });

  it('exits promptly when stdin closes, ending a run in flight and its VM', async () => {
    const name = wsName('close');
    const child = spawn(BIN, SERVER_ARGS, { stdio: ['pipe', 'pipe', 'inherit'] });
    const exited = new Promise<number | null>((resolve) =>
      child.on('exit', (code) => resolve(code)),
    );
    let buffered = '';
    const messages: { id?: number; method?: string; params?: { message?: string } }[] = [];
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let nl;
      while ((nl = buffered.indexOf('\n')) !== -1) {
        messages.push(JSON.parse(buffered.slice(0, nl)) as (typeof messages)[number]);
        buffered = buffered.slice(nl + 1);
      }
    });
    const send = (m: unknown): void => void child.stdin.write(JSON.stringify(m) + '\n');
    send({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: {
        protocolVersion: '2025-06-18',
        capabilities: {},
        clientInfo: { name: 'raw', version: '0' },
      },
    });
    send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    send({
      jsonrpc: '2.0',
      id: 2,
      method: 'tools/call',
      params: {
        name: 'run',
        arguments: { name, command: ['sleep', '300'] },
        _meta: { progressToken: 'p' },
      },
    });
    const deadline = Date.now() + 120_000;
    while (
      !messages.some(
        (m) => m.method === 'notifications/progress' && /ready/.test(m.params?.message ?? ''),
      )
    ) {
      assert.ok(Date.now() < deadline, `the run never became ready: ${JSON.stringify(messages)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(processesMentioning(wsDir(name)).length > 0, 'the VM runs');
    const t0 = Date.now();
    child.stdin.end();
    const code = await exited;
    const ms = Date.now() - t0;
    assert.equal(code, 0);
    assert.ok(ms < 8_000, `exit took ${ms} ms`);
    assert.deepEqual(await waitNoProcesses(wsDir(name), 5_000), []);
    assert.equal(existsSync(wsDir(name)), false, 'the throwaway workspace is deleted');
  });
});
