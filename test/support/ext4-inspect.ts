/**
 * Reads facts out of an ext4 image with debugfs (read-only), for tests.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/proc/spawn.js';

export interface Ext4Stat {
  inode: number;
  type: string;
  /** Permission bits incl. setuid/setgid/sticky. */
  mode: number;
  uid: number;
  gid: number;
  links: number;
  size: number;
  mtime: number;
  mtimeExtra: number;
  device?: [number, number];
  symlinkTarget?: string;
}

/** `debugfs -R 'stat <path>'`, parsed; undefined when the path does not exist. */
export async function ext4Stat(img: string, path: string): Promise<Ext4Stat | undefined> {
  const r = await run(['debugfs', '-R', `stat ${quote(path)}`, img], { allowFailure: true });
  const t = r.stdout.toString('utf8');
  const m = /Inode: (\d+)\s+Type: ([A-Za-z ]+?)\s+Mode:\s+(\d+)/.exec(t);
  if (!m) return undefined;
  const owner = /User:\s+(\d+)\s+Group:\s+(\d+)/.exec(t)!;
  const mt = /mtime: 0x([0-9a-f]+):([0-9a-f]+)/.exec(t)!;
  const st: Ext4Stat = {
    inode: Number(m[1]),
    type: m[2]!.trim(),
    mode: parseInt(m[3]!, 8),
    uid: Number(owner[1]),
    gid: Number(owner[2]),
    links: Number(/Links: (\d+)/.exec(t)![1]),
    size: Number(/Size: (\d+)/.exec(t)![1]),
    mtime: parseInt(mt[1]!, 16),
    mtimeExtra: parseInt(mt[2]!, 16),
  };
  const dev = /Device major\/minor number: (\d+):(\d+)/.exec(t);
  if (dev) st.device = [Number(dev[1]), Number(dev[2])];
  const fast = /Fast link dest: "(.*)"/.exec(t);
  if (fast) st.symlinkTarget = fast[1]!;
  return st;
}

/** The bytes of one xattr (`ea_get -f`), or undefined when absent. */
export async function ext4Xattr(
  img: string,
  path: string,
  name: string,
): Promise<Buffer | undefined> {
  const dir = await mkdtemp(join(tmpdir(), 'ma-ea-'));
  try {
    const out = join(dir, 'v');
    const r = await run(['debugfs', '-R', `ea_get -f ${out} ${quote(path)} ${quote(name)}`, img], {
      allowFailure: true,
    });
    try {
      return await readFile(out);
    } catch {
      void r;
      return undefined;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Names in a directory (`ls`), without "." and "..". */
export async function ext4List(img: string, path: string): Promise<string[]> {
  const r = await run(['debugfs', '-R', `ls -p ${quote(path)}`, img], { allowFailure: true });
  return r.stdout
    .toString('utf8')
    .split('\n')
    .map((l) => l.split('/'))
    .filter((f) => f.length >= 6)
    .map((f) => f[5]!)
    .filter((n) => n !== '.' && n !== '..');
}

/** A file's content (`dump`). */
export async function ext4Read(img: string, path: string): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'ma-dump-'));
  try {
    const out = join(dir, 'f');
    await run(['debugfs', '-R', `dump ${quote(path)} ${out}`, img]);
    return await readFile(out);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `e2fsck -fn`: the full output; throws when the check is not clean. */
export async function e2fsckClean(img: string): Promise<string> {
  const r = await run(['e2fsck', '-fn', img], { allowFailure: true });
  const text = r.stdout.toString('utf8') + r.stderr.toString('utf8');
  if (r.exitCode !== 0) throw new Error(`e2fsck -fn ${img} exited ${r.exitCode}:\n${text}`);
  return text;
}

function quote(s: string): string {
  return `"${s.replaceAll('"', '""')}"`;
}
