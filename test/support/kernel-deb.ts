/**
 * An unpacked Debian cloud kernel package (dpkg-deb -x) for tests that need
 * the real kernel's files: boot/vmlinuz-* and lib/modules. Taken from apt's
 * cache or downloaded with the system's apt (checked against apt's hash, as
 * a kernel install is), then kept under .local/test-kdeb/<release> so later
 * runs reuse it. MICROAGENT_TEST_KDEB names another unpacked package.
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { extractDeb, obtainDeb, resolveAptKernel } from '../../src/kernel/apt.js';
import { PACKAGE_ROOT } from '../../src/paths.js';

/** Whether this host can provide one at all (Debian's apt and dpkg-deb). */
export const HAVE_APT = existsSync('/usr/bin/apt-cache') && existsSync('/usr/bin/dpkg-deb');

export interface KernelDeb {
  /** The unpacked package's root. */
  dir: string;
  release: string;
  /** boot/vmlinuz-<release> (a bzImage). */
  bzImage: string;
  /** lib/modules/<release>. */
  modules: string;
}

let pending: Promise<KernelDeb> | undefined;

export function kernelDeb(): Promise<KernelDeb> {
  pending ??= load();
  return pending;
}

async function load(): Promise<KernelDeb> {
  const named = process.env.MICROAGENT_TEST_KDEB;
  const pkg = named ? undefined : await resolveAptKernel();
  const release = pkg?.release ?? '';
  const root = named ?? join(PACKAGE_ROOT, '.local', 'test-kdeb', release);
  if (!named && !existsSync(join(root, 'boot', `vmlinuz-${release}`))) {
    const base = join(PACKAGE_ROOT, '.local', 'test-kdeb');
    await mkdir(base, { recursive: true });
    const work = await mkdtemp(join(base, 'tmp-'));
    try {
      const deb = await obtainDeb(pkg!, work);
      await extractDeb(deb.path, join(work, 'x'));
      await rm(root, { recursive: true, force: true });
      await rename(join(work, 'x'), root);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
  const rel = release || (readdirSync(join(root, 'lib', 'modules'))[0] ?? '');
  return {
    dir: root,
    release: rel,
    bzImage: join(root, 'boot', `vmlinuz-${rel}`),
    modules: join(root, 'lib', 'modules', rel),
  };
}
