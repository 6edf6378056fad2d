/**
 * The package as a user installs it: `npm pack`, the tarball installed into
 * a new project (its dependencies from the npm registry or npm's cache), a
 * typed example compiled with tsc against the package's own declarations,
 * then run with node: a one-shot `run`, and a workspace created, started,
 * exec'd in and disposed of with `await using`. Real QEMU.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { E2E_STATE_DIR, waitNoProcesses } from '../helpers.js';

function sh(
  argv: string[],
  cwd: string,
  timeoutMs = 300_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

const EXAMPLE = `import {
  createWorkspace,
  isMicroagentError,
  runCommand,
  type RunResult,
  type WorkspaceExecResult,
  type WorkspaceStatus,
} from 'microagent';

const [stateDir, name] = process.argv.slice(2) as [string, string];
const run: RunResult = await runCommand({ argv: ['echo', 'from-run'], stateDir });
let exec: WorkspaceExecResult;
let status: WorkspaceStatus;
{
  await using ws = await createWorkspace({ name, stateDir, env: { GREETING: 'hi' } });
  await ws.start();
  exec = await ws.exec(['sh', '-c', 'echo $GREETING $((6 * 7))']);
  status = await ws.status();
}
let gone = false;
try {
  const { openWorkspace } = await import('microagent');
  await openWorkspace(name, { stateDir });
} catch (err) {
  gone = isMicroagentError(err) && err.code === 'WORKSPACE_NOT_FOUND';
}
console.log(
  JSON.stringify({
    run: { status: run.status, exitCode: run.exitCode },
    exec: { exitCode: exec.exitCode, stdout: exec.stdout.toString() },
    state: status.state,
    disk: status.disk.sizeBytes,
    gone,
  }),
);
`;

describe('the packed package', { timeout: 900_000 }, () => {
  let dir: string;
  const name = `pkg-${process.pid}`;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ma-pkg-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    assert.deepEqual(await waitNoProcesses(join(E2E_STATE_DIR, 'workspaces', name)), []);
  });

  it('installs from its tarball, type-checks a typed example and runs it', async () => {
    let r = await sh(['npm', 'pack', '--pack-destination', dir, '--silent'], PACKAGE_ROOT);
    assert.equal(r.code, 0, r.stderr);
    const tarball = (await readdir(dir)).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball, 'npm pack wrote a tarball');

    const app = join(dir, 'app');
    await mkdir(app);
    await writeFile(
      join(app, 'package.json'),
      JSON.stringify({ name: 'app', private: true, type: 'module' }),
    );
    await writeFile(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2024',
          lib: ['ES2024'],
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmitOnError: true,
          types: ['node'],
          typeRoots: [join(PACKAGE_ROOT, 'node_modules', '@types')],
        },
        files: ['example.ts'],
      }),
    );
    await writeFile(join(app, 'example.ts'), EXAMPLE);
    r = await sh(['npm', 'install', '--prefer-offline', '--no-save', join(dir, tarball)], app);
    assert.equal(r.code, 0, r.stderr);
    r = await sh(
      [process.execPath, join(PACKAGE_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app],
      app,
    );
    assert.equal(r.code, 0, `tsc: ${r.stdout}${r.stderr}`);
    // A type error in a caller's code is caught against the package's types.
    await writeFile(
      join(app, 'bad.ts'),
      "import { createWorkspace } from 'microagent';\nawait createWorkspace({ nam: 'x' });\n",
    );
    r = await sh(
      [
        process.execPath,
        join(PACKAGE_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
        '--noEmit',
        '--module',
        'NodeNext',
        '--moduleResolution',
        'NodeNext',
        '--target',
        'ES2024',
        '--strict',
        '--types',
        'node',
        '--typeRoots',
        join(PACKAGE_ROOT, 'node_modules', '@types'),
        'bad.ts',
      ],
      app,
    );
    assert.notEqual(r.code, 0);
    assert.match(r.stdout, /nam/);

    r = await sh([process.execPath, 'example.js', E2E_STATE_DIR, name], app, 600_000);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout.trim().split('\n').pop() as string) as {
      run: { status: string; exitCode: number };
      exec: { exitCode: number; stdout: string };
      state: string;
      disk: number;
      gone: boolean;
    };
    assert.deepEqual(doc.run, { status: 'exited', exitCode: 0 });
    assert.deepEqual(doc.exec, { exitCode: 0, stdout: 'hi 42\n' });
    assert.equal(doc.state, 'running');
    assert.ok(doc.disk >= 1024 * 1024 * 1024);
    assert.equal(doc.gone, true, 'await using deleted the workspace');
  });
});
