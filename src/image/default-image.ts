/**
 * The default rootfs: a small ext4 image made from the host's static
 * busybox plus the guest init, for workspaces that name no OCI image.
 * Built once per (busybox, guest init, builder version) and cached under
 * `<state>/images/default/<key>/`.
 */
import {
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
  lstat,
} from 'node:fs/promises';
import { join, relative } from 'node:path';
import { z } from 'zod';
import { MicroagentError } from '../errors.js';
import { BUILD, type StatePaths } from '../paths.js';
import { run } from '../proc/spawn.js';
import { ensurePrivateDir, sha256, writeJsonAtomic } from '../util/fs.js';
import { hasInterpreter, isX8664Executable } from '../util/elf.js';
import { debugfsWrite, mkfsExt4 } from './e2fs.js';

/** Bump when the tree layout changes: it is part of the cache key. */
export const DEFAULT_IMAGE_BUILDER_VERSION = 2;
export const DEFAULT_BUSYBOX = '/bin/busybox';
const ROOTFS_FILE = 'rootfs.ext4';
const IMAGE_JSON = 'image.json';
/** Sparse: only the used blocks take space; the rest is room for the workload. */
const DEFAULT_SIZE = 256 * 1024 * 1024;

export const DefaultImageRecordSchema = z
  .object({
    v: z.literal(1),
    key: z.string().regex(/^[0-9a-f]{64}$/),
    builderVersion: z.number().int(),
    busyboxSha256: z.string().regex(/^[0-9a-f]{64}$/),
    initSha256: z.string().regex(/^[0-9a-f]{64}$/),
    sizeBytes: z.number().int().positive(),
    createdAt: z.string().datetime(),
  })
  .strict();
export type DefaultImageRecord = z.infer<typeof DefaultImageRecordSchema>;

export interface DefaultImageOptions {
  /** A static busybox (default /bin/busybox, Debian's busybox-static). */
  busybox?: string;
  /** The guest init to install as /sbin/microagent-init (default BUILD.guestInit). */
  guestInit?: string;
  /** File system size (default 256 MiB, or more when the content needs it). */
  sizeBytes?: number;
  /** Rewrite every inode to 0:0 with debugfs even when running as root (tests). */
  forceOwnershipFix?: boolean;
}

export interface DefaultImage {
  path: string;
  key: string;
  initSha256: string;
  busyboxSha256: string;
  sizeBytes: number;
  /** False when the cached image was reused. */
  built: boolean;
}

/**
 * Returns the default rootfs image, building it when the cache has none for
 * the current busybox and guest init. The image is a baseline: never write
 * to it; give each workspace an overlay (src/rootfs/disks.ts).
 *
 * @throws GUEST_INIT_MISSING, IMAGE_BUILD_FAILED, HOST_TOOL_MISSING
 */
export async function ensureDefaultImage(
  paths: StatePaths,
  opts: DefaultImageOptions = {},
): Promise<DefaultImage> {
  const busyboxPath = opts.busybox ?? DEFAULT_BUSYBOX;
  const initPath = opts.guestInit ?? BUILD.guestInit;
  let init: Buffer;
  try {
    init = await readFile(initPath);
  } catch (err) {
    throw new MicroagentError('GUEST_INIT_MISSING', `the guest init ${initPath} is not built`, {
      data: { path: initPath },
      cause: err,
    });
  }
  let busybox: Buffer;
  try {
    busybox = await readFile(busyboxPath);
  } catch (err) {
    throw new MicroagentError('HOST_TOOL_MISSING', `${busyboxPath} does not exist`, {
      remediation: 'Install it with `apt-get install busybox-static`.',
      cause: err,
    });
  }
  if (!isX8664Executable(busybox) || hasInterpreter(busybox)) {
    throw new MicroagentError(
      'IMAGE_BUILD_FAILED',
      `${busyboxPath} is not a static x86-64 executable`,
      {
        remediation: 'Install the static build with `apt-get install busybox-static`.',
      },
    );
  }
  const busyboxSha256 = sha256(busybox);
  const initSha256 = sha256(init);
  const key = sha256(
    JSON.stringify({
      busyboxSha256,
      initSha256,
      builder: DEFAULT_IMAGE_BUILDER_VERSION,
      size: opts.sizeBytes ?? null,
    }),
  );
  const base = join(paths.images, 'default');
  const dir = join(base, key);

  const cached = await readCached(dir, key);
  if (cached)
    return {
      path: join(dir, ROOTFS_FILE),
      key,
      initSha256,
      busyboxSha256,
      sizeBytes: cached.sizeBytes,
      built: false,
    };

  await ensurePrivateDir(base);
  await ensurePrivateDir(paths.tmp);
  const work = await mkdtemp(join(paths.tmp, 'image-default-'));
  try {
    const tree = join(work, 'tree');
    await buildTree(tree, busyboxPath, busybox, init);
    const out = join(work, 'out');
    await mkdir(out, { mode: 0o700 });
    const img = join(out, ROOTFS_FILE);
    const content = await treeBytes(tree);
    const sizeBytes = Math.max(
      opts.sizeBytes ?? DEFAULT_SIZE,
      roundUp(content * 2 + 64 * 1024 * 1024, 1024 * 1024),
    );
    await mkfsExt4(tree, img, sizeBytes, 'microagent-root');
    if (opts.forceOwnershipFix || process.getuid?.() !== 0) {
      // mke2fs -d copies the tree's owners, which are the caller's when not
      // root: make every inode root's (the image's files are system files).
      await debugfsWrite(img, await ownershipCommands(tree));
    }
    await chmod(img, 0o600);
    const record: DefaultImageRecord = {
      v: 1,
      key,
      builderVersion: DEFAULT_IMAGE_BUILDER_VERSION,
      busyboxSha256,
      initSha256,
      sizeBytes: (await stat(img)).size,
      createdAt: new Date().toISOString(),
    };
    await writeJsonAtomic(join(out, IMAGE_JSON), record);
    try {
      await rename(out, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      // Another process built the same key first: same inputs, use theirs.
      const theirs = await readCached(dir, key);
      if (!theirs) throw err;
      return {
        path: join(dir, ROOTFS_FILE),
        key,
        initSha256,
        busyboxSha256,
        sizeBytes: theirs.sizeBytes,
        built: false,
      };
    }
    return {
      path: join(dir, ROOTFS_FILE),
      key,
      initSha256,
      busyboxSha256,
      sizeBytes: record.sizeBytes,
      built: true,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function readCached(dir: string, key: string): Promise<DefaultImageRecord | undefined> {
  try {
    const rec = DefaultImageRecordSchema.parse(
      JSON.parse(await readFile(join(dir, IMAGE_JSON), 'utf8')),
    );
    if (rec.key !== key) return undefined;
    const st = await stat(join(dir, ROOTFS_FILE));
    return st.size === rec.sizeBytes ? rec : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Debian 12's busybox-static is built without wget's -T (network timeout),
 * yet its option parser still takes -T and writes its value through a null
 * pointer: `wget -T 5 URL` dies of SIGSEGV before it does anything (the
 * host's /bin/busybox does the same; nothing in the guest is involved).
 * Where the busybox lacks -T, /usr/bin/wget is this wrapper: it takes -T
 * SEC, -TSEC, --timeout=SEC and --timeout SEC and runs busybox wget under
 * `timeout SEC`, so the whole transfer gets at most SEC seconds (GNU wget's
 * -T bounds each network wait instead), ending with wget's status 4
 * (network failure) when the time runs out. docs/images.md says so.
 */
export const WGET_WRAPPER = `#!/bin/sh
# microagent default image: busybox wget with -T (see docs/images.md).
t=
n=$#
while [ "$n" -gt 0 ]; do
  a=$1; shift; n=$((n - 1))
  case $a in
  -T | --timeout)
    if [ "$n" -eq 0 ]; then echo "wget: option $a needs a value" >&2; exit 1; fi
    t=$1; shift; n=$((n - 1)); continue ;;
  -T*) t=\${a#-T}; continue ;;
  --timeout=*) t=\${a#--timeout=}; continue ;;
  --)
    set -- "$@" --
    while [ "$n" -gt 0 ]; do set -- "$@" "$1"; shift; n=$((n - 1)); done
    break ;;
  esac
  set -- "$@" "$a"
done
case $t in
'' | 0) exec /bin/busybox wget "$@" ;;
*[!0-9]*) echo "wget: -T needs a whole number of seconds, not '$t'" >&2; exit 1 ;;
esac
/bin/busybox timeout "$t" /bin/busybox wget "$@"
rc=$?
if [ "$rc" -eq 143 ]; then echo "wget: timed out after $t s" >&2; exit 4; fi
exit "$rc"
`;

/** Whether this busybox's wget has -T (its usage text lists it). */
async function wgetHasTimeout(busyboxPath: string): Promise<boolean> {
  const r = await run([busyboxPath, 'wget', '--help'], {
    providedBy: 'busybox-static',
    allowFailure: true,
  });
  return /-T SEC/.test(r.stdout.toString('utf8') + r.stderr.toString('utf8'));
}

/** The image tree: FHS dirs, busybox and its applet links, the guest init, /etc basics. */
async function buildTree(
  tree: string,
  busyboxPath: string,
  busybox: Buffer,
  init: Buffer,
): Promise<void> {
  const dirs: Array<[string, number]> = [
    ['', 0o755],
    ['bin', 0o755],
    ['sbin', 0o755],
    ['etc', 0o755],
    ['root', 0o700],
    ['tmp', 0o1777],
    ['proc', 0o555],
    ['sys', 0o555],
    ['dev', 0o755],
    ['run', 0o755],
    ['var', 0o755],
    ['usr', 0o755],
    ['usr/bin', 0o755],
    ['usr/sbin', 0o755],
  ];
  for (const [d, mode] of dirs) {
    await mkdir(join(tree, d), { recursive: true });
    await chmod(join(tree, d), mode); // after mkdir: the umask would clear bits
  }
  await writeFile(join(tree, 'bin/busybox'), busybox);
  await chmod(join(tree, 'bin/busybox'), 0o755);
  await writeFile(join(tree, 'sbin/microagent-init'), init);
  await chmod(join(tree, 'sbin/microagent-init'), 0o755);

  // `--list-full` gives each applet's conventional path (bin/sh, sbin/ip,
  // usr/bin/wget); every link points at the one binary.
  const list = (
    await run([busyboxPath, '--list-full'], { providedBy: 'busybox-static' })
  ).stdout.toString('utf8');
  const wrapWget = !(await wgetHasTimeout(busyboxPath));
  for (const raw of list.split('\n')) {
    const rel = raw.trim().replace(/^\/+/, '');
    if (!/^(bin|sbin|usr\/bin|usr\/sbin)\/[^/]+$/.test(rel)) continue; // e.g. "linuxrc"
    if (rel === 'bin/busybox' || rel === 'sbin/microagent-init') continue;
    if (wrapWget && rel === 'usr/bin/wget') {
      await writeFile(join(tree, rel), WGET_WRAPPER);
      await chmod(join(tree, rel), 0o755);
      continue;
    }
    try {
      await symlink('/bin/busybox', join(tree, rel));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }

  const etc: Array<[string, string]> = [
    ['passwd', 'root:x:0:0:root:/root:/bin/sh\n'],
    ['group', 'root:x:0:\n'],
    ['hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'],
    ['hostname', 'microagent\n'],
    ['resolv.conf', ''], // filled at boot by the guest init from the config disk
    [
      'os-release',
      'NAME="microagent default"\nID=microagent\nPRETTY_NAME="microagent default (busybox)"\n',
    ],
  ];
  for (const [name, text] of etc) {
    await writeFile(join(tree, 'etc', name), text);
    await chmod(join(tree, 'etc', name), 0o644);
  }
}

/** One `set_inode_field` pair per inode of the tree, parents first. */
async function ownershipCommands(tree: string): Promise<string[]> {
  const cmds: string[] = [];
  const visit = async (dir: string): Promise<void> => {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) =>
      a.name.localeCompare(b.name),
    )) {
      const p = join(dir, e.name);
      const rel = '/' + relative(tree, p);
      if (/\s|"/.test(rel))
        throw new MicroagentError('INTERNAL', `unexpected path ${rel} in the default image tree`);
      cmds.push(`set_inode_field ${rel} uid 0`, `set_inode_field ${rel} gid 0`);
      if (e.isDirectory()) await visit(p);
    }
  };
  cmds.push('set_inode_field / uid 0', 'set_inode_field / gid 0');
  await visit(tree);
  return cmds;
}

async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += 4096 + (await treeBytes(p));
    else total += roundUp((await lstat(p)).size, 4096);
  }
  return total;
}

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}
