/**
 * Thin wrappers over e2fsprogs, one function per tool, a comment per flag.
 */
import { MicroagentError } from '../errors.js';
import { run } from '../proc/spawn.js';

/**
 * Makes an ext4 file system in the (new, sparse) file img from the tree dir.
 * `mke2fs -d` copies modes, owners, symlinks and device nodes from the tree;
 * it cannot read tarballs in 1.47.0 and drops sub-second timestamps.
 */
export async function mkfsExt4(
  tree: string,
  img: string,
  sizeBytes: number,
  label: string,
  opts: { inodes?: number } = {},
): Promise<void> {
  const kib = Math.ceil(sizeBytes / 1024);
  const inodeArgs = opts.inodes === undefined ? [] : ['-N', String(opts.inodes)]; // inode count: the default ratio (1 per 16 KiB) runs out on trees of small files
  try {
    await run(
      [
        'mke2fs',
        '-q', // no progress output
        '-t',
        'ext4',
        '-b',
        '4096', // 4 KiB blocks: mke2fs would pick 1 KiB ("small") below 512 MiB
        '-d',
        tree, // populate from this directory
        '-L',
        label, // volume label (blkid / findfs LABEL=)
        '-E',
        'root_owner=0:0', // the root dir belongs to root, not to the caller
        ...inodeArgs,
        img,
        `${kib}k`, // size; the file is created sparse
      ],
      { providedBy: 'e2fsprogs', timeoutMs: 5 * 60_000 },
    );
  } catch (err) {
    throw asImageError(err, 'mke2fs');
  }
}

/**
 * Runs debugfs commands (one per line) against img, writable. debugfs
 * reports per-command errors on stderr but still exits 0, so stderr lines
 * other than its banner are treated as failures.
 */
export async function debugfsWrite(img: string, commands: readonly string[]): Promise<void> {
  let r;
  try {
    r = await run(
      [
        'debugfs',
        '-w', // open read-write
        '-f',
        '-', // read commands from stdin
        img,
      ],
      { input: commands.join('\n') + '\n', providedBy: 'e2fsprogs', timeoutMs: 5 * 60_000 },
    );
  } catch (err) {
    throw asImageError(err, 'debugfs');
  }
  const errors = r.stderr
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim() !== '' && !/^debugfs [0-9.]+ \(/.test(l));
  if (errors.length > 0) {
    throw new MicroagentError(
      'IMAGE_BUILD_FAILED',
      `debugfs reported errors on ${img}: ${errors.slice(0, 10).join('; ')}`,
      {
        data: { img, stderr: errors.join('\n') },
      },
    );
  }
}

/** Runs one read-only debugfs request (`-R`) and returns its stdout. */
export async function debugfsRead(img: string, request: string): Promise<string> {
  const r = await run(['debugfs', '-R', request, img], {
    providedBy: 'e2fsprogs',
    timeoutMs: 60_000,
  });
  return r.stdout.toString('utf8');
}

function asImageError(err: unknown, tool: string): unknown {
  if (err instanceof MicroagentError && err.code === 'HOST_TOOL_FAILED') {
    return new MicroagentError('IMAGE_BUILD_FAILED', `${tool} failed: ${err.message}`, {
      data: err.data,
      cause: err,
    });
  }
  return err;
}
