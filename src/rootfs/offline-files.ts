/**
 * Copy one regular file into or out of a workspace root disk while the
 * workspace is not running (docs/rootfs.md, "Copying files to a stopped
 * workspace").
 *
 * The disk is a qcow2 overlay on a raw ext4 baseline and debugfs reads raw
 * images only, so every copy first materializes the disk as a sparse raw
 * image in a private directory next to the overlay (`qemu-img convert`).
 * A read dumps the file from that copy and never opens the overlay for
 * writing. A write edits the copy with debugfs, then builds a new overlay
 * that stores only the clusters differing from the baseline (`qemu-img
 * rebase` from the copy onto the baseline), fsyncs it and renames it over
 * the old one: a crash at any point leaves the old overlay as it was.
 *
 * Callers must hold the workspace lock: nothing here serializes two copies
 * of the same disk. qemu's image locks make a copy fail while a VM has the
 * disk open (WORKSPACE_RUNNING).
 */
import { randomBytes } from 'node:crypto';
import {
  chmod,
  lstat,
  mkdir,
  open,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  symlink,
} from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { MicroagentError } from '../errors.js';
import { run, type RunResult } from '../proc/spawn.js';
import { fsyncDir } from '../util/fs.js';
import { quote } from './apply.js';

/** What readFileFromDisk found at the guest path (after following symlinks). */
export interface DiskFileStat {
  size: number;
  /** Permission bits, including setuid/setgid/sticky (0..0o7777). */
  mode: number;
  uid: number;
  gid: number;
}

export interface WriteFileToDiskOptions {
  /** Permission bits (0..0o7777, applied exactly). Default: the source file's (& 0o777). */
  mode?: number;
  /** Owner in the guest. Default 0 (root), as when the running guest's init writes it. */
  uid?: number;
  gid?: number;
}

export interface WriteFileToDiskResult {
  bytes: number;
}

/** The largest uid/gid: 2^32-1 is "no change" to chown(2), not an id. */
const MAX_ID = 0xfffffffe;
const MAX_GUEST_PATH = 4095;
/** Symlinks followed when reading, as the kernel's MAXSYMLINKS (then ELOOP: not found). */
const MAX_SYMLINK_HOPS = 40;
const TOOL_TIMEOUT_MS = 30 * 60_000; // a disk of many GiB on a slow host
const WORK_PREFIX = '.offline-';

/**
 * Copies the regular file at guestPath (absolute; symlinks are followed
 * inside the image, as the guest would) out of the stopped workspace disk
 * diskPath into the host file destination: written to a temp file next to
 * it (0600), then mode 0644 and renamed over destination. The disk is not
 * modified.
 *
 * @throws INVALID_ARGUMENT for a bad path; GUEST_FILE_NOT_FOUND;
 *   GUEST_FILE_ERROR (data.guestCode is_directory or not_regular);
 *   WORKSPACE_RUNNING when a VM has the disk open; DISK_FULL when the raw
 *   copy does not fit next to the disk; OFFLINE_COPY_FAILED; HOST_TOOL_MISSING
 */
export async function readFileFromDisk(
  diskPath: string,
  guestPath: string,
  destination: string,
): Promise<DiskFileStat> {
  checkGuestPath(guestPath, 'read');
  const disk = resolve(diskPath);
  const dest = resolve(destination);
  await diskInfo(disk); // a qcow2 disk that no VM holds: fail before any copying
  const work = await makeWorkDir(disk);
  const tmp = join(dirname(dest), `.${basename(dest)}.ma-${randomBytes(6).toString('hex')}`);
  let tmpCreated = false;
  try {
    const raw = join(work, 'disk.raw');
    await materialize(disk, raw);
    const file = await resolveForRead(raw, work, guestPath);
    // Create the destination's temp file ourselves (exclusive, 0600), then
    // let debugfs fill it through a link in the work dir: no host path
    // ever goes into a debugfs command line.
    await (await open(tmp, 'wx', 0o600)).close();
    tmpCreated = true;
    await symlink(tmp, join(work, 'out'));
    await debugfs(raw, work, [`dump <${file.inode}> out`], false);
    const got = (await stat(tmp)).size;
    if (got !== file.size) {
      throw new MicroagentError(
        'OFFLINE_COPY_FAILED',
        `debugfs dumped ${got} bytes of ${guestPath}, the inode says ${file.size}`,
        { data: { diskPath: disk, guestPath } },
      );
    }
    await chmod(tmp, 0o644);
    await rename(tmp, dest);
    tmpCreated = false;
    return { size: file.size, mode: file.mode, uid: file.uid, gid: file.gid };
  } finally {
    if (tmpCreated) await rm(tmp, { force: true });
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Writes the host file source to guestPath (absolute) on the stopped
 * workspace disk diskPath. The parent directory must exist (symlinks in it
 * are resolved inside the image); whatever non-directory is at guestPath
 * (a file, a symlink: never followed, a device) is replaced by a new inode.
 * The old overlay is replaced atomically (new file, fsync, rename), so a
 * crash leaves it intact; the baseline is only read.
 *
 * @throws INVALID_ARGUMENT for a bad path, option or source;
 *   GUEST_FILE_NOT_FOUND when the parent directory does not exist;
 *   GUEST_FILE_ERROR (is_directory; io_error when the guest file system is
 *   full); WORKSPACE_RUNNING / WORKSPACE_BUSY when a VM has the disk open or
 *   the disk changed meanwhile; DISK_FULL; OFFLINE_COPY_FAILED; HOST_TOOL_MISSING
 */
export async function writeFileToDisk(
  diskPath: string,
  guestPath: string,
  source: string,
  options: WriteFileToDiskOptions = {},
): Promise<WriteFileToDiskResult> {
  const { clean, parent, name } = checkGuestPath(guestPath, 'write');
  for (const key of ['uid', 'gid'] as const) {
    const v = options[key];
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > MAX_ID)) {
      throw new MicroagentError('INVALID_ARGUMENT', `${key} must be an integer 0..${MAX_ID}`, {
        data: { [key]: v },
      });
    }
  }
  if (
    options.mode !== undefined &&
    (!Number.isInteger(options.mode) || options.mode < 0 || options.mode > 0o7777)
  ) {
    throw new MicroagentError('INVALID_ARGUMENT', 'mode must be an integer 0..0o7777', {
      data: { mode: options.mode },
    });
  }
  const src = resolve(source);
  const srcStat = await stat(src).catch((err: unknown) => {
    throw new MicroagentError('INVALID_ARGUMENT', `cannot read ${src}: ${(err as Error).message}`, {
      data: { path: src },
      cause: err,
    });
  });
  if (!srcStat.isFile()) {
    throw new MicroagentError('INVALID_ARGUMENT', `${src} is not a regular file`, {
      data: { path: src },
    });
  }
  const mode = options.mode ?? srcStat.mode & 0o777;
  const uid = options.uid ?? 0;
  const gid = options.gid ?? 0;

  const disk = resolve(diskPath);
  const info = await diskInfo(disk);
  const before = await lstat(disk);
  const work = await makeWorkDir(disk);
  const next = `${work}.qcow2`; // next to the disk: same file system for the rename, same base for a relative backing name
  try {
    const raw = join(work, 'disk.raw');
    await materialize(disk, raw);

    const dir = await ext4Stat(raw, parent === '/' ? '/.' : `${parent}/.`);
    if (dir === 'missing') {
      throw new MicroagentError(
        'GUEST_FILE_NOT_FOUND',
        `write ${guestPath}: the parent directory does not exist`,
        { data: { path: guestPath } },
      );
    }
    const existing = await ext4Stat(raw, clean);
    if (existing !== 'missing' && existing.type === 'directory') {
      throw guestFileError('is_directory', `write ${guestPath}: is a directory`, guestPath);
    }

    await symlink(src, join(work, 'src'));
    const ref = quote(`./${name}`); // "./": sif would read a bare "<12>" as an inode number
    await debugfs(
      raw,
      work,
      [
        `cd <${dir.inode}>`,
        ...(existing === 'missing' ? [] : [`rm ${ref}`]), // frees the inode when this was its last link; a symlink is never followed
        `write src ${quote(name)}`, // write links the name as given into the cwd: a bare name
        `sif ${ref} mode 0${(0o100000 | mode).toString(8)}`,
        `sif ${ref} uid ${uid}`,
        `sif ${ref} gid ${gid}`,
      ],
      true,
    );
    const written = await ext4Stat(raw, clean);
    if (
      written === 'missing' ||
      written.type !== 'regular' ||
      written.mode !== mode ||
      written.uid !== uid ||
      written.gid !== gid
    ) {
      throw new MicroagentError(
        'OFFLINE_COPY_FAILED',
        `debugfs did not write ${guestPath} as asked`,
        {
          data: { diskPath: disk, guestPath, found: written },
        },
      );
    }

    await rebuildOverlay(raw, info, next);
    await chmod(next, before.mode & 0o777);
    const fh = await open(next, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    // Last checks before the swap: the overlay is the one we copied, and no
    // VM has opened it since (qemu-img info needs a lock a VM holds).
    const now = await lstat(disk);
    if (now.ino !== before.ino || now.size !== before.size || now.mtimeMs !== before.mtimeMs) {
      throw new MicroagentError(
        'WORKSPACE_BUSY',
        `${disk} changed while a file was written to it`,
        {
          data: { diskPath: disk },
        },
      );
    }
    await diskInfo(disk);
    await rename(next, disk);
    await fsyncDir(dirname(disk));
    return { bytes: written.size };
  } finally {
    await rm(next, { force: true });
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Removes what an interrupted copy left next to diskPath (its private work
 * directory and unfinished overlay). Only safe while no copy runs on this
 * disk: call it with the workspace lock held.
 */
export async function removeOfflineLeftovers(diskPath: string): Promise<string[]> {
  const disk = resolve(diskPath);
  const prefix = `.${basename(disk)}${WORK_PREFIX}`;
  const removed: string[] = [];
  for (const entry of await readdir(dirname(disk)).catch(() => [] as string[])) {
    if (!entry.startsWith(prefix)) continue;
    const p = join(dirname(disk), entry);
    await rm(p, { recursive: true, force: true });
    removed.push(p);
  }
  return removed;
}

// ---- guest paths ---------------------------------------------------------------------

function checkGuestPath(
  path: string,
  op: 'read' | 'write',
): { clean: string; parent: string; name: string } {
  const bad = (why: string): MicroagentError =>
    new MicroagentError('INVALID_ARGUMENT', `invalid guest path ${JSON.stringify(path)}: ${why}`, {
      data: { path },
    });
  if (typeof path !== 'string' || !path.startsWith('/')) throw bad('it must be absolute');
  if (path.includes('\0')) throw bad('it must not contain NUL');
  if (Buffer.byteLength(path, 'utf8') > MAX_GUEST_PATH)
    throw bad(`it is longer than ${MAX_GUEST_PATH} bytes`);
  if (path.includes('\n')) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `invalid guest path ${JSON.stringify(path)}: debugfs cannot address names with a newline`,
      {
        remediation: 'Start the workspace and copy the file through the running guest.',
        data: { path },
      },
    );
  }
  const clean = path.replace(/\/+/g, '/');
  const slash = clean.lastIndexOf('/');
  const name = clean.slice(slash + 1);
  const parent = slash === 0 ? '/' : clean.slice(0, slash);
  if (op === 'write' && (name === '' || name === '.' || name === '..')) {
    throw bad('it must name a file');
  }
  if (Buffer.byteLength(name, 'utf8') > 255) throw bad('a name is longer than 255 bytes');
  return { clean, parent, name };
}

function guestFileError(guestCode: string, message: string, path: string): MicroagentError {
  return new MicroagentError('GUEST_FILE_ERROR', message, { data: { path, guestCode } });
}

interface Ext4Inode {
  inode: number;
  /** debugfs's word: regular, directory, symlink, FIFO, socket, character special, ... */
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Fast symlinks only (target stored in the inode). */
  fastLink?: string;
}

/**
 * Follows guestPath to a regular file inside the image: parents through
 * debugfs's own lookup, the last component here (relative targets against
 * the link's directory, absolute ones from the image root, never the host).
 */
async function resolveForRead(raw: string, work: string, guestPath: string): Promise<Ext4Inode> {
  let path = guestPath.replace(/\/+/g, '/');
  for (let hops = 0; ; hops++) {
    const st =
      path === '/'
        ? await ext4Stat(raw, '/.')
        : await ext4Stat(raw, path.replace(/(.)\/$/, '$1/.'));
    if (st === 'missing') {
      throw new MicroagentError('GUEST_FILE_NOT_FOUND', `read ${guestPath}: no such file`, {
        data: { path: guestPath, ...(path !== guestPath ? { resolved: path } : {}) },
      });
    }
    if (st.type === 'directory')
      throw guestFileError('is_directory', `read ${guestPath}: is a directory`, guestPath);
    if (st.type === 'regular') return st;
    if (st.type !== 'symlink') {
      throw guestFileError(
        'not_regular',
        `read ${guestPath}: not a regular file (${st.type})`,
        guestPath,
      );
    }
    if (hops >= MAX_SYMLINK_HOPS) {
      throw new MicroagentError(
        'GUEST_FILE_NOT_FOUND',
        `read ${guestPath}: too many levels of symbolic links`,
        {
          data: { path: guestPath },
        },
      );
    }
    const target = st.fastLink ?? (await slowLinkTarget(raw, work, st.inode));
    if (target === '' || target.includes('\n') || target.includes('\0')) {
      throw new MicroagentError(
        'GUEST_FILE_NOT_FOUND',
        `read ${guestPath}: a symlink on the way has an unusable target`,
        {
          data: { path: guestPath, target },
        },
      );
    }
    const dir = path.slice(0, path.lastIndexOf('/')) || '/';
    path = (target.startsWith('/') ? target : `${dir}/${target}`).replace(/\/+/g, '/');
  }
}

/** A symlink target too long for the inode lives in a data block: dump it. */
async function slowLinkTarget(raw: string, work: string, inode: number): Promise<string> {
  const out = join(work, `link-${inode}`);
  await debugfs(raw, work, [`dump <${inode}> ${basename(out)}`], false);
  const target = await readFile(out, 'utf8');
  await rm(out, { force: true });
  return target;
}

/** `debugfs stat`, parsed; 'missing' when a component is absent or not a directory. */
async function ext4Stat(raw: string, path: string): Promise<Ext4Inode | 'missing'> {
  const r = await tool(
    [
      'debugfs',
      '-R',
      `stat ${quote(path)}`, // one request; the last component is not followed
      raw,
    ],
    { allowFailure: true, timeoutMs: 60_000 },
    raw,
  );
  const errors = debugfsErrors(r);
  if (errors.some((l) => /File not found by ext2_lookup|Ext2 inode is not a directory/.test(l))) {
    return 'missing';
  }
  const t = r.stdout.toString('utf8');
  const head = /Inode: (\d+)\s+Type: ([A-Za-z ]+?)\s+Mode:\s+([0-7]+)/.exec(t);
  const owner = /User:\s+(-?\d+)\s+Group:\s+(-?\d+)/.exec(t);
  const size = /Size: (\d+)/.exec(t);
  if (errors.length > 0 || !head || !owner || !size) {
    throw new MicroagentError(
      'OFFLINE_COPY_FAILED',
      `debugfs cannot stat ${path}: ${errors.join('; ') || 'unexpected output'}`,
      {
        data: { path, stderr: errors.join('\n'), stdout: t.slice(0, 2000) },
      },
    );
  }
  const st: Ext4Inode = {
    inode: Number(head[1]),
    type: head[2]!.trim(),
    mode: parseInt(head[3]!, 8) & 0o7777,
    uid: Number(owner[1]) >>> 0, // debugfs prints ids above 2^31 as negative numbers
    gid: Number(owner[2]) >>> 0,
    size: Number(size[1]),
  };
  // The target is the rest of its line: a greedy match keeps quotes inside it.
  const fast = /^\s*Fast link dest: "(.*)"$/m.exec(t);
  if (fast) st.fastLink = fast[1]!;
  return st;
}

// ---- tools ---------------------------------------------------------------------------

interface DiskInfo {
  virtualSize: number;
  /** The backing file as named in the overlay header, and its format. */
  backing?: { name: string; format: string };
}

/** `qemu-img info` of the overlay; also fails while a VM holds the disk. */
async function diskInfo(disk: string): Promise<DiskInfo> {
  const r = await tool(
    [
      'qemu-img',
      'info',
      '--output=json', // machine-readable
      disk,
    ],
    { timeoutMs: 60_000 },
    disk,
  );
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(r.stdout.toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new MicroagentError('OFFLINE_COPY_FAILED', `qemu-img info ${disk} printed no JSON`, {
      cause: err,
    });
  }
  if (j.format !== 'qcow2') {
    throw new MicroagentError(
      'OFFLINE_COPY_FAILED',
      `${disk} is a ${String(j.format)} image, not a qcow2 workspace disk`,
      {
        data: { diskPath: disk, format: j.format },
      },
    );
  }
  const name = j['backing-filename'];
  const info: DiskInfo = { virtualSize: Number(j['virtual-size']) };
  if (typeof name === 'string') {
    const format = j['backing-filename-format'];
    info.backing = { name, format: typeof format === 'string' ? format : 'raw' };
  }
  return info;
}

async function makeWorkDir(disk: string): Promise<string> {
  const work = join(
    dirname(disk),
    `.${basename(disk)}${WORK_PREFIX}${randomBytes(6).toString('hex')}`,
  );
  await mkdir(work, { mode: 0o700 });
  return work;
}

/**
 * The disk as a sparse raw image (the overlay with its backing file read
 * through), with the ext4 journal replayed when the guest did not shut down
 * cleanly: debugfs does not replay it, and would read stale metadata.
 */
async function materialize(disk: string, raw: string): Promise<void> {
  await directReads(
    (cache) => [
      'qemu-img',
      'convert',
      '-q', // no progress
      '-T',
      cache, // source (overlay and baseline) cache mode: see directReads
      '-f',
      'qcow2', // the overlay's format, never probed
      '-O',
      'raw', // what debugfs can open
      // default -S 4k: all-zero runs become holes, so the copy allocates
      // only what the disk holds; default target cache "unsafe": a temp
      // needs no flush
      disk,
      raw,
    ],
    disk,
  );
  const fh = await open(raw, 'r');
  let sb: Buffer;
  try {
    sb = Buffer.alloc(1024);
    await fh.read(sb, 0, 1024, 1024); // the ext4 superblock is at byte 1024
  } finally {
    await fh.close();
  }
  if (sb.readUInt16LE(0x38) !== 0xef53) {
    throw new MicroagentError(
      'OFFLINE_COPY_FAILED',
      `${disk} does not hold an ext2/3/4 file system`,
      {
        data: { diskPath: disk },
      },
    );
  }
  const INCOMPAT_RECOVER = 0x4; // s_feature_incompat: the journal needs replaying
  if ((sb.readUInt32LE(0x60) & INCOMPAT_RECOVER) !== 0) {
    const r = await tool(
      [
        'e2fsck',
        '-E',
        'journal_only', // replay the journal, check and change nothing else
        '-y', // non-interactive
        raw,
      ],
      { timeoutMs: TOOL_TIMEOUT_MS, allowFailure: true },
      disk,
    );
    if (r.exitCode !== 0 && r.exitCode !== 1) {
      throw new MicroagentError(
        'OFFLINE_COPY_FAILED',
        `e2fsck could not replay the journal of ${disk}`,
        {
          remediation:
            'Start and stop the workspace once (the guest kernel replays its journal), or copy the file while it runs.',
          data: {
            diskPath: disk,
            exitCode: r.exitCode,
            stderr: r.stderr.toString('utf8') + r.stdout.toString('utf8'),
          },
        },
      );
    }
  }
}

/**
 * A new overlay equal to raw that stores only the clusters where raw differs
 * from the old overlay's backing file: an empty overlay on raw, rebased
 * (safe mode, comparing both) onto the baseline under its header name.
 */
async function rebuildOverlay(raw: string, info: DiskInfo, out: string): Promise<void> {
  const backing = info.backing;
  if (!backing) {
    await tool(
      [
        'qemu-img',
        'convert',
        '-q', // no progress
        '-f',
        'raw', // the edited copy
        '-O',
        'qcow2', // a flat qcow2, like the disk it replaces
        raw,
        out,
      ],
      { timeoutMs: TOOL_TIMEOUT_MS },
      out,
    );
    return;
  }
  await tool(
    [
      'qemu-img',
      'create',
      '-q', // no "Formatting ..." line
      '-f',
      'qcow2', // the overlay's own format
      '-F',
      'raw', // the temporary backing file's format, never probed
      '-b',
      raw, // everything reads through to the edited copy for now
      out,
    ],
    { timeoutMs: 60_000 },
    out,
  );
  await directReads(
    (cache) => [
      'qemu-img',
      'rebase',
      '-q', // no progress
      '-T',
      cache, // the old and new backing files' cache mode: see directReads
      '-f',
      'qcow2', // the new overlay's format
      '-F',
      backing.format, // the baseline's format, as the old header says
      '-b',
      backing.name, // the old header's name (relative names resolve from the same directory)
      // safe mode (no -u): clusters where the copy and the baseline differ
      // are copied into the overlay; equal ones stay in the baseline
      out,
    ],
    out,
  );
}

/**
 * Runs a qemu-img command that reads whole images with O_DIRECT (cache
 * mode "none"): rebase compares every cluster of the virtual disk, and
 * holes read through the page cache cost a zeroed page each (1 GiB of
 * holes: 1.3-3.6 s cold, against 0.2 s direct). A file system that
 * refuses O_DIRECT gets a second try through the page cache.
 */
async function directReads(argv: (cache: string) => string[], subject: string): Promise<void> {
  try {
    await tool(argv('none'), { timeoutMs: TOOL_TIMEOUT_MS }, subject);
  } catch (err) {
    const stderr = err instanceof MicroagentError ? String(err.data.stderr ?? '') : '';
    if (
      !(err instanceof MicroagentError) ||
      err.code !== 'OFFLINE_COPY_FAILED' ||
      !/Invalid argument/.test(stderr)
    ) {
      throw err;
    }
    await tool(argv('writeback'), { timeoutMs: TOOL_TIMEOUT_MS }, subject);
  }
}

/**
 * Runs debugfs on raw with cwd work (commands name files there, never host
 * paths). debugfs reports per-command errors on stderr and still exits 0:
 * any stderr line but its banner is a failure.
 */
async function debugfs(
  raw: string,
  work: string,
  commands: string[],
  writable: boolean,
): Promise<void> {
  const r = await tool(
    [
      'debugfs',
      ...(writable ? ['-w'] : []), // open read-write
      '-f',
      '-', // commands from stdin, one per line
      raw,
    ],
    { cwd: work, input: commands.join('\n') + '\n', timeoutMs: TOOL_TIMEOUT_MS },
    raw,
  );
  const errors = debugfsErrors(r);
  if (errors.length === 0) return;
  const text = errors.join('; ');
  if (
    /Could not allocate (block|inode)|No free space|Ext2 directory block not found|No space left/i.test(
      text,
    )
  ) {
    throw new MicroagentError('GUEST_FILE_ERROR', `the guest file system is full: ${text}`, {
      data: { guestCode: 'io_error', stderr: errors.join('\n') },
    });
  }
  throw new MicroagentError(
    'OFFLINE_COPY_FAILED',
    `debugfs reported errors: ${errors.slice(0, 10).join('; ')}`,
    {
      data: { commands, stderr: errors.join('\n') },
    },
  );
}

function debugfsErrors(r: RunResult): string[] {
  return r.stderr
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim() !== '' && !/^debugfs [0-9.]+ \(/.test(l));
}

/**
 * run() with the failures of qemu-img and e2fsprogs as typed errors: a
 * lock conflict is a running workspace, ENOSPC is DISK_FULL, anything else
 * OFFLINE_COPY_FAILED (with argv and stderr).
 */
async function tool(
  argv: string[],
  options: { cwd?: string; input?: string; timeoutMs?: number; allowFailure?: boolean },
  subject: string,
): Promise<RunResult> {
  try {
    return await run(argv, {
      ...options,
      providedBy: argv[0] === 'qemu-img' ? 'qemu-utils' : 'e2fsprogs',
    });
  } catch (err) {
    if (!(err instanceof MicroagentError) || err.code !== 'HOST_TOOL_FAILED') throw err;
    const stderr = String(err.data.stderr ?? '');
    if (/Failed to get .*lock|Is another process using the image/.test(stderr)) {
      throw new MicroagentError(
        'WORKSPACE_RUNNING',
        `${subject} is in use by another process (a running VM?)`,
        {
          data: { ...err.data },
          cause: err,
        },
      );
    }
    if (/No space left on device/.test(stderr)) {
      throw new MicroagentError(
        'DISK_FULL',
        `no space for a temporary copy of ${subject}: ${stderr.trim()}`,
        {
          data: { ...err.data },
          cause: err,
        },
      );
    }
    throw new MicroagentError('OFFLINE_COPY_FAILED', err.message, {
      data: { ...err.data },
      cause: err,
    });
  }
}
