/**
 * The default kernel from Debian's archive through the system's apt. The
 * signed Release → Packages chain vouches for the SHA256 field apt-cache
 * shows; the .deb we use must have exactly that hash.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { MicroagentError } from '../errors.js';
import { run } from '../proc/spawn.js';
import { exists, sha256File } from '../util/fs.js';

export const DEFAULT_KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';
const APT_ARCHIVES = '/var/cache/apt/archives';
/**
 * Stable, untranslated apt output. A function: the environment is read
 * when apt runs, never at load time (src/cli/snapshot.ts).
 */
function aptEnv(): NodeJS.ProcessEnv {
  return { ...process.env, LC_ALL: 'C', LANG: 'C' };
}

export interface AptKernelPackage {
  /** e.g. linux-image-6.1.0-56-cloud-amd64 */
  package: string;
  /** e.g. 6.1.192-2 */
  version: string;
  /** Kernel release: the package name without "linux-image-". */
  release: string;
  architecture: string;
  /** SHA-256 values the archive index lists for this package version. */
  sha256: string[];
}

/**
 * Resolves a kernel package (a metapackage like linux-image-cloud-amd64 is
 * followed to the linux-image-<release> it depends on) to its candidate
 * version and archive SHA-256.
 */
export async function resolveAptKernel(
  pkg = DEFAULT_KERNEL_METAPACKAGE,
): Promise<AptKernelPackage> {
  let name = pkg;
  if (!/^linux-image-[0-9]/.test(name)) {
    const metaVersion = await candidateVersion(name);
    const deps = await aptCache(['depends', `${name}=${metaVersion}`]);
    const m = /^\s*Depends:\s*(linux-image-[0-9][^\s:]*)/m.exec(deps);
    if (!m?.[1]) {
      throw new MicroagentError(
        'KERNEL_INSTALL_FAILED',
        `${name} ${metaVersion} does not depend on a linux-image-<release> package`,
        {
          data: { package: name, depends: deps },
        },
      );
    }
    name = m[1];
  }
  const version = await candidateVersion(name);
  const show = await aptCache(['show', `${name}=${version}`]);
  const sha256: string[] = [];
  let architecture = 'amd64';
  for (const rec of show.split(/\n\n+/)) {
    const v = /^Version:\s*(\S+)/m.exec(rec)?.[1];
    if (v !== version) continue;
    const h = /^SHA256:\s*([0-9a-f]{64})\s*$/m.exec(rec)?.[1];
    if (h) sha256.push(h);
    architecture = /^Architecture:\s*(\S+)/m.exec(rec)?.[1] ?? architecture;
  }
  if (sha256.length === 0) {
    throw new MicroagentError(
      'KERNEL_INSTALL_FAILED',
      `apt-cache show lists no SHA256 for ${name}=${version}`,
      {
        remediation: 'Run `apt-get update` and retry.',
      },
    );
  }
  return {
    package: name,
    version,
    release: name.slice('linux-image-'.length),
    architecture,
    sha256,
  };
}

/**
 * Returns a .deb of the package whose SHA-256 is one the archive index
 * lists: apt's own cache when it holds a good copy, else `apt-get download`
 * into dir. Refuses (KERNEL_CHECKSUM_MISMATCH) a download that does not match.
 */
export async function obtainDeb(
  pkg: AptKernelPackage,
  dir: string,
): Promise<{ path: string; sha256: string; cached: boolean }> {
  // apt's cache names files <name>_<version, ':' as %3a>_<arch>.deb.
  const cached = join(
    APT_ARCHIVES,
    `${pkg.package}_${pkg.version.replace(/:/g, '%3a')}_${pkg.architecture}.deb`,
  );
  if (await exists(cached)) {
    const h = await sha256File(cached);
    // A cached copy that does not match (partial, corrupt) is ignored, not used.
    if (pkg.sha256.includes(h)) return { path: cached, sha256: h, cached: true };
  }
  // As root apt warns that the download is unsandboxed (user _apt cannot
  // write dir); harmless, the hash check below is what vouches for the file.
  await run(['apt-get', 'download', '-q', `${pkg.package}=${pkg.version}`], {
    cwd: dir,
    env: aptEnv(),
    providedBy: 'apt',
    timeoutMs: 15 * 60_000,
  });
  const debs = (await readdir(dir)).filter(
    (f) => f.startsWith(`${pkg.package}_`) && f.endsWith('.deb'),
  );
  if (debs.length !== 1 || !debs[0]) {
    throw new MicroagentError(
      'KERNEL_INSTALL_FAILED',
      `apt-get download left ${debs.length} .deb files for ${pkg.package} in ${dir}`,
    );
  }
  const path = join(dir, debs[0]);
  const h = await sha256File(path);
  if (!pkg.sha256.includes(h)) {
    throw new MicroagentError(
      'KERNEL_CHECKSUM_MISMATCH',
      `${pkg.package}_${pkg.version}.deb has SHA-256 ${h}, but the archive index lists ${pkg.sha256.join(' or ')}`,
      {
        remediation:
          'Refusing to install it. Run `apt-get update` and retry; if it persists, check the mirror.',
        data: { package: pkg.package, version: pkg.version, expected: pkg.sha256, actual: h },
      },
    );
  }
  return { path, sha256: h, cached: false };
}

/** Unpacks a .deb's file tree into dir (`dpkg-deb -x`: data only, no scripts run). */
export async function extractDeb(deb: string, dir: string): Promise<void> {
  await run(['dpkg-deb', '-x', deb, dir], { providedBy: 'dpkg', timeoutMs: 5 * 60_000 });
}

async function candidateVersion(name: string): Promise<string> {
  const out = await aptCache(['policy', name]);
  const v = /^\s*Candidate:\s*(\S+)/m.exec(out)?.[1];
  if (!v || v === '(none)') {
    throw new MicroagentError(
      'KERNEL_INSTALL_FAILED',
      `apt knows no installable version of ${name}`,
      {
        remediation: 'Run `apt-get update` (Debian main must be in the sources) and retry.',
        data: { package: name },
      },
    );
  }
  return v;
}

async function aptCache(args: string[]): Promise<string> {
  const r = await run(['apt-cache', ...args], {
    env: aptEnv(),
    providedBy: 'apt',
    timeoutMs: 120_000,
  });
  return r.stdout.toString('utf8');
}
