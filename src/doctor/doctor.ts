/**
 * `doctor`: can this host boot workspaces, and if not, why. Each check is
 * ok / warn / fail with a remediation; the verdict is the worst of them.
 */
import { access, constants, stat } from 'node:fs/promises';
import { BUILD, StatePaths } from '../paths.js';
import { findHostTool, hostToolMissing, run } from '../proc/spawn.js';
import { chooseAccel } from '../supervisors/qemu/accel.js';
import { listKernels, verifyKernel } from '../kernel/index.js';
import { sha256File } from '../util/fs.js';
import { supervisorPath } from '../workspace/vm.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface DoctorCheck {
  name: string;
  status: CheckStatus;
  detail: string;
  remediation?: string;
}

export interface DoctorReport {
  verdict: 'ok' | 'degraded' | 'failed';
  backend: 'qemu';
  accel: { name: string; reason: string };
  checks: DoctorCheck[];
}

export async function doctor(options: { stateDir?: string } = {}): Promise<DoctorReport> {
  const paths = new StatePaths(options.stateDir);
  const checks: DoctorCheck[] = [];

  checks.push(await toolCheck('qemu', ['qemu-system-x86_64', '--version'], 'qemu-system-x86'));
  checks.push(await toolCheck('qemu-img', ['qemu-img', '--version'], 'qemu-utils'));

  const accel = chooseAccel('auto');
  checks.push({
    name: 'accelerator',
    status: accel.accel === 'kvm' ? 'ok' : 'warn',
    detail: `${accel.accel}: ${accel.reason}`,
    ...(accel.accel === 'kvm'
      ? {}
      : {
          remediation:
            'Workspaces run under TCG (software emulation, slower). For KVM, run on a host with usable hardware virtualization and access to /dev/kvm.',
        }),
  });

  checks.push(await toolCheck('mke2fs', ['mke2fs', '-V'], 'e2fsprogs'));
  checks.push(await toolCheck('debugfs', ['debugfs', '-V'], 'e2fsprogs'));
  checks.push(
    await fileCheck(
      'busybox-static',
      '/bin/busybox',
      'Install it: apt-get install busybox-static (the embedded default image is built from it).',
    ),
  );
  for (const [name, path] of [
    ['guest init', BUILD.guestInit],
    ['vmm-exec helper', BUILD.vmmExec],
    ['netstack helper', BUILD.netstack],
    ['janitor helper', BUILD.janitor],
  ] as const) {
    checks.push(
      await fileCheck(name, path, 'Build it with `npm run build` in the microagent checkout.'),
    );
  }
  const supervisor = supervisorPath();
  const supervisorCheck = await fileCheck(
    'supervisor',
    supervisor,
    'Build it with `npm run build`.',
  );
  if (supervisorCheck.status === 'ok') {
    supervisorCheck.detail = `${supervisor} (sha256 ${(await sha256File(supervisor)).slice(0, 16)}…)`;
  }
  checks.push(supervisorCheck);
  checks.push(await kernelCheck(paths));
  checks.push(await stateDirCheck(paths));

  const verdict = checks.some((c) => c.status === 'fail')
    ? 'failed'
    : checks.some((c) => c.status === 'warn')
      ? 'degraded'
      : 'ok';
  return { verdict, backend: 'qemu', accel: { name: accel.accel, reason: accel.reason }, checks };
}

/** A host tool: where it was found (PATH, then the sbin folders) and its version line. */
async function toolCheck(name: string, argv: string[], pkg: string): Promise<DoctorCheck> {
  const path = findHostTool(argv[0] ?? '');
  try {
    if (path === undefined) throw new Error('not found');
    const result = await run([path, ...argv.slice(1)], {
      allowFailure: true,
      timeoutMs: 10_000,
      providedBy: pkg,
    });
    const text = (result.stdout.toString() + result.stderr.toString()).trim().split('\n')[0] ?? '';
    return { name, status: 'ok', detail: `${path}: ${text}` };
  } catch {
    return {
      name,
      status: 'fail',
      detail: hostToolMissing(argv[0] ?? ''),
      remediation: `Install it: apt-get install ${pkg} (or run \`npm run setup\`).`,
    };
  }
}

async function fileCheck(name: string, path: string, remediation: string): Promise<DoctorCheck> {
  try {
    await access(path, constants.R_OK);
    return { name, status: 'ok', detail: path };
  } catch {
    return { name, status: 'fail', detail: `${path} is missing`, remediation };
  }
}

async function kernelCheck(paths: StatePaths): Promise<DoctorCheck> {
  try {
    const kernels = await listKernels(paths);
    const current = kernels.find((k) => k.isDefault) ?? kernels[0];
    if (!current) {
      return {
        name: 'kernel',
        status: 'warn',
        detail: 'no kernel installed; the default is installed on first use',
        remediation: 'Run `microagent kernel install` to install it now.',
      };
    }
    const verification = await verifyKernel(paths, current.id);
    if (!verification.ok) {
      return {
        name: 'kernel',
        status: 'fail',
        detail: `${current.id} does not match its manifest (${verification.divergence.join(', ')})`,
        remediation: 'Reinstall it with `microagent kernel install --force`.',
      };
    }
    return { name: 'kernel', status: 'ok', detail: `${current.id} verified` };
  } catch (err) {
    return {
      name: 'kernel',
      status: 'fail',
      detail: err instanceof Error ? err.message : String(err),
      remediation: 'Reinstall it with `microagent kernel install --force`.',
    };
  }
}

async function stateDirCheck(paths: StatePaths): Promise<DoctorCheck> {
  try {
    const s = await stat(paths.root);
    if ((s.mode & 0o077) !== 0) {
      return {
        name: 'state dir',
        status: 'warn',
        detail: `${paths.root} is readable by others (mode ${(s.mode & 0o777).toString(8)})`,
        remediation: `chmod 700 ${paths.root}`,
      };
    }
    await access(paths.root, constants.W_OK);
    return { name: 'state dir', status: 'ok', detail: paths.root };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return { name: 'state dir', status: 'ok', detail: `${paths.root} (created on first use)` };
    }
    return {
      name: 'state dir',
      status: 'fail',
      detail: `${paths.root} is not writable`,
      remediation: 'Use --state-dir with a directory you own.',
    };
  }
}
