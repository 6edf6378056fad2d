/**
 * Applies OCI layers, in order, to a staging directory on the host and keeps
 * the metadata ledger: the image's own owners, modes, device numbers,
 * xattrs and mtimes, which the host copy does not (and, without root,
 * cannot) carry. build.ts turns the staged tree into ext4 with `mke2fs -d`
 * and replays the ledger with one `debugfs -w` run (ledgerCommands below).
 *
 * Containment: the in-memory tree mirrors the staging directory and is the
 * only thing consulted to resolve a path. Entry names are normalized
 * ("/a" is "a"; any ".." component rejects the entry); a symlink met while
 * resolving a parent directory is resolved inside the image root, like a
 * chroot, never on the host; the last component is never followed, and a
 * file that replaces anything is created with O_CREAT|O_EXCL|O_NOFOLLOW
 * after the old entry is unlinked. The staging directory is private (0700)
 * and only this code writes to it, so the model and the disk cannot drift.
 * Host copies get safe permissions: owner read/write (and search on
 * directories), never setuid, setgid or sticky.
 */
import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  futimesSync,
  linkSync,
  lutimesSync,
  mkdirSync,
  openSync,
  symlinkSync,
  writeSync,
} from 'node:fs';
import { chmod, mkdir, open, rm, unlink, utimes } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { MicroagentError } from '../errors.js';
import { readTar, type TarEntry } from './tar.js';

export type NodeKind = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo';

/** One inode of the image as the layers define it (shared by hard links). */
export interface Inode {
  kind: NodeKind;
  /** Permission bits incl. setuid/setgid/sticky, as the layer gave them. */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch, possibly with a fraction. */
  mtime: number;
  major: number;
  minor: number;
  xattrs: Map<string, Buffer> | undefined;
  /** Permission bits of the staged host copy (what mke2fs -d will copy). */
  hostMode: number;
  /** Bytes of content (files) or of the target (symlinks). */
  size: number;
}

export interface TreeNode {
  inode: Inode;
  /** Present on directories. */
  children: Map<string, TreeNode> | undefined;
  /** Symlink target, as stored (never followed on the host). */
  target?: string;
}

export interface RejectedEntry {
  layer: number;
  path: string;
  reason: string;
}

export interface LayerStats {
  entries: number;
  bytes: number;
  whiteouts: number;
  rejected: number;
}

export interface StagingOptions {
  /** Notes about skipped or rejected entries (also kept in `notes`). */
  onNote?: (note: string) => void;
}

const S_IFMT: Record<NodeKind, number> = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
};

/** How many symlinks one lookup may pass through (Linux's limit). */
const MAX_SYMLINK_HOPS = 40;
/** Files up to this size are written with synchronous calls (writeFile). */
const SMALL_FILE = 256 * 1024;
/** File creation that never follows a symlink and never reuses an entry. */
const CREATE_FLAGS =
  constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
/** Files finishing (chmod, utimes, close) in the background at once. */
const MAX_PENDING = 64;

class Rejection extends Error {}

/** The staging tree of one rootfs build. */
export class Staging {
  readonly root: TreeNode;
  readonly rejected: RejectedEntry[] = [];
  readonly notes: string[] = [];
  /** Nodes written by the layer being applied (whiteouts spare them). */
  private layerNodes = new Set<TreeNode>();
  private layerIndex = 0;
  private pending = new Set<Promise<void>>();
  private pendingError: unknown;

  private constructor(
    /** Host directory holding the staged tree (the image's "/"). */
    readonly dir: string,
    private readonly options: StagingOptions,
  ) {
    this.root = {
      inode: inode('dir', 0o755, 0, 0, Math.floor(Date.now() / 1000), 0o700),
      children: new Map(),
    };
  }

  /** Creates the (empty, 0700) staging directory dir. */
  static async create(dir: string, options: StagingOptions = {}): Promise<Staging> {
    await mkdir(dir, { mode: 0o700 });
    await chmod(dir, 0o700); // no setgid inherited from a parent: children get our gid
    return new Staging(dir, options);
  }

  /**
   * Applies one layer: `stream` is its tar bytes (openLayer), `path` names
   * the blob in errors.
   * @throws LAYER_INVALID, DISK_FULL
   */
  async applyLayer(stream: Readable, path: string, index: number): Promise<LayerStats> {
    this.layerIndex = index;
    this.layerNodes = new Set();
    const stats: LayerStats = { entries: 0, bytes: 0, whiteouts: 0, rejected: 0 };
    const rejectedBefore = this.rejected.length;
    try {
      for await (const entry of readTar(stream, { onNote: (n) => this.note(n) })) {
        stats.entries++;
        if (entry.type === 'file') stats.bytes += entry.size;
        if (basename(entry.path).startsWith('.wh.')) stats.whiteouts++;
        await this.applyEntry(entry);
      }
      await this.drain();
    } catch (err) {
      stream.destroy();
      await this.drain().catch(() => undefined);
      throw layerError(err, path, index);
    }
    stats.rejected = this.rejected.length - rejectedBefore;
    return stats;
  }

  /** Applies one tar entry; a rejected (hostile or inconsistent) entry is recorded, not thrown. */
  async applyEntry(e: TarEntry): Promise<void> {
    if (this.pendingError !== undefined) throw this.pendingError;
    try {
      await this.applyEntryInner(e);
    } catch (err) {
      if (err instanceof Rejection) {
        this.reject(e.path, err.message);
        if (e.type === 'file') await drainBody(e);
        return;
      }
      throw err;
    }
  }

  private async applyEntryInner(e: TarEntry): Promise<void> {
    const parts = splitPath(e.path);
    const name = parts.at(-1);
    if (name === undefined) {
      // "./" or "/": the image root itself.
      if (e.type !== 'dir') throw new Rejection(`a ${e.type} cannot replace the root directory`);
      this.updateDir(this.root, e); // the host copy of "/" keeps 0700
      return;
    }

    if (name.startsWith('.wh.')) {
      await this.whiteout(parts, name);
      return;
    }

    const parent = await this.resolveDir(parts.slice(0, -1), true, e.mtime);
    const host = join(this.dir, parent.rel, name);
    const existing = parent.node.children!.get(name);

    switch (e.type) {
      case 'dir': {
        if (existing?.inode.kind === 'dir') {
          const before = existing.inode.hostMode;
          this.updateDir(existing, e);
          if (existing.inode.hostMode !== before) await chmod(host, existing.inode.hostMode);
          this.layerNodes.add(existing);
          return;
        }
        if (existing) await this.removeHost(host, existing);
        const node: TreeNode = { inode: inodeFrom(e, 'dir'), children: new Map() };
        // Synchronous, like small files (writeFile): cheaper than the thread pool.
        mkdirSync(host);
        chmodSync(host, node.inode.hostMode); // after mkdir: the umask would clear bits
        this.attach(parent.node, name, node);
        return;
      }
      case 'file': {
        if (existing) await this.removeHost(host, existing);
        const node: TreeNode = { inode: inodeFrom(e, 'file'), children: undefined };
        await this.writeFile(host, node.inode, e);
        this.attach(parent.node, name, node);
        return;
      }
      case 'hardlink': {
        const targetParts = splitPath(e.linkpath);
        const targetName = targetParts.at(-1);
        if (targetName === undefined || targetName.startsWith('.wh.'))
          throw new Rejection(`hard link to ${JSON.stringify(e.linkpath)}`);
        const tparent = await this.resolveDir(targetParts.slice(0, -1), false, 0);
        const target = tparent.node.children!.get(targetName);
        if (!target) {
          throw new Rejection(
            `hard link target ${JSON.stringify(e.linkpath)} does not exist in the image`,
          );
        }
        if (target.inode.kind === 'dir') throw new Rejection('hard link to a directory');
        if (target === existing) return; // a link to itself
        if (existing) {
          if (existing.inode.kind === 'dir' && isInside(existing, target))
            throw new Rejection('hard link target lies inside the entry it replaces');
          await this.removeHost(host, existing);
        }
        linkSync(join(this.dir, tparent.rel, targetName), host);
        const node: TreeNode = { inode: target.inode, children: undefined };
        if (target.target !== undefined) node.target = target.target;
        this.attach(parent.node, name, node);
        return;
      }
      case 'symlink': {
        if (existing) await this.removeHost(host, existing);
        const node: TreeNode = { inode: inodeFrom(e, 'symlink'), children: undefined };
        node.inode.size = Buffer.byteLength(e.linkpath);
        node.target = e.linkpath;
        symlinkSync(e.linkpath, host); // stored as-is: resolved only inside the guest
        const t = Math.floor(e.mtime);
        lutimesSync(host, t, t);
        this.attach(parent.node, name, node);
        return;
      }
      case 'char':
      case 'block':
      case 'fifo': {
        // A placeholder: an empty private file. debugfs makes the real node.
        if (existing) await this.removeHost(host, existing);
        const node: TreeNode = { inode: inodeFrom(e, e.type), children: undefined };
        const h = await open(host, CREATE_FLAGS, 0o600);
        await h.close();
        this.attach(parent.node, name, node);
        return;
      }
    }
  }

  /** `.wh.<name>` removes a lower entry; `.wh..wh..opq` empties a directory of lower entries. */
  private async whiteout(parts: string[], name: string): Promise<void> {
    let parent;
    try {
      parent = await this.resolveDir(parts.slice(0, -1), false, 0);
    } catch (err) {
      if (err instanceof Rejection) return; // nothing there to hide
      throw err;
    }
    if (name === '.wh..wh..opq') {
      await this.makeOpaque(parent.node, join(this.dir, parent.rel));
      return;
    }
    if (name.startsWith('.wh..wh.')) return; // aufs bookkeeping (.wh..wh.plnk, ...)
    const victim = name.slice('.wh.'.length);
    const node = parent.node.children!.get(victim);
    if (!node || this.layerNodes.has(node)) return; // whiteouts hide lower layers only
    await this.removeHost(join(this.dir, parent.rel, victim), node);
    parent.node.children!.delete(victim);
  }

  private async makeOpaque(dir: TreeNode, host: string): Promise<void> {
    for (const [name, child] of [...dir.children!]) {
      if (this.layerNodes.has(child)) {
        // Written by this layer: kept, but lower content below it goes too.
        if (child.children) await this.makeOpaque(child, join(host, name));
        continue;
      }
      await this.removeHost(join(host, name), child);
      dir.children!.delete(name);
    }
  }

  /**
   * Resolves a directory path inside the image: missing directories are
   * created (create) or reject; symlinks are followed within the image
   * root, never on the host. Returns the node and its real relative path.
   */
  private async resolveDir(
    parts: readonly string[],
    create: boolean,
    mtime: number,
  ): Promise<{ node: TreeNode; rel: string }> {
    let node = this.root;
    let stack: Array<{ node: TreeNode; name: string }> = [];
    const queue = [...parts];
    let hops = 0;
    while (queue.length > 0) {
      const c = queue.shift()!;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        // Only from symlink targets (entry names with ".." are rejected):
        // clamps at the root, like a chroot.
        stack.pop();
        node = stack.at(-1)?.node ?? this.root;
        continue;
      }
      let child = node.children!.get(c);
      if (!child) {
        if (!create) throw new Rejection(`${c} does not exist`);
        const rel = stack.map((s) => s.name).join('/');
        child = { inode: inode('dir', 0o755, 0, 0, Math.floor(mtime), 0o755), children: new Map() };
        const host = join(this.dir, rel, c);
        await mkdir(host);
        await chmod(host, 0o755);
        this.attach(node, c, child);
      }
      if (child.inode.kind === 'symlink') {
        if (++hops > MAX_SYMLINK_HOPS) throw new Rejection('too many levels of symbolic links');
        const target = child.target ?? '';
        if (target.startsWith('/')) {
          stack = [];
          node = this.root;
        }
        queue.unshift(...target.split('/'));
        continue;
      }
      if (child.inode.kind !== 'dir') throw new Rejection(`${c} is not a directory`);
      stack.push({ node: child, name: c });
      node = child;
    }
    return { node, rel: stack.map((s) => s.name).join('/') };
  }

  /**
   * Writes a file into the image at imagePath (parents resolved inside the
   * root, created as 0755 root:root when missing), replacing what is there.
   * Used to inject the guest init. Returns the staged host path.
   */
  async injectFile(
    imagePath: string,
    content: Buffer,
    meta: { mode: number; uid: number; gid: number },
  ): Promise<string> {
    const parts = splitPath(imagePath);
    const name = parts.at(-1);
    if (name === undefined) throw new MicroagentError('INTERNAL', `bad inject path ${imagePath}`);
    const now = Math.floor(Date.now() / 1000);
    const parent = await this.resolveDir(parts.slice(0, -1), true, now);
    const host = join(this.dir, parent.rel, name);
    const existing = parent.node.children!.get(name);
    if (existing) await this.removeHost(host, existing);
    const node: TreeNode = {
      inode: inode('file', meta.mode, meta.uid, meta.gid, now, (meta.mode & 0o777) | 0o600),
      children: undefined,
    };
    node.inode.size = content.length;
    const h = await open(host, CREATE_FLAGS, 0o600);
    try {
      await h.writeFile(content);
      await h.chmod(node.inode.hostMode);
      await h.utimes(now, now);
    } finally {
      await h.close();
    }
    this.attach(parent.node, name, node);
    return host;
  }

  /** Creates a top-level directory when nothing has that name (any type counts). */
  async ensureTopDir(name: string, mode: number): Promise<void> {
    if (this.root.children!.has(name)) return;
    const now = Math.floor(Date.now() / 1000);
    const node: TreeNode = {
      inode: inode('dir', mode, 0, 0, now, (mode & 0o777) | 0o700),
      children: new Map(),
    };
    const host = join(this.dir, name);
    await mkdir(host);
    await chmod(host, node.inode.hostMode);
    this.root.children!.set(name, node);
  }

  /**
   * Gives every staged directory its mtime (adding entries changed them),
   * deepest first. Call once, after the last layer and injection.
   */
  async finishDirectoryTimes(): Promise<void> {
    await this.drain();
    const visit = async (node: TreeNode, host: string): Promise<void> => {
      for (const [name, child] of node.children!) {
        if (child.children) await visit(child, join(host, name));
      }
      const t = Math.floor(node.inode.mtime);
      await utimes(host, t, t);
    };
    await visit(this.root, this.dir);
  }

  /** Every path of the tree, parents before children, with its image path ("/a/b"). */
  *walk(): Generator<[string, TreeNode]> {
    const visit = function* (node: TreeNode, path: string): Generator<[string, TreeNode]> {
      yield [path === '' ? '/' : path, node];
      if (!node.children) return;
      for (const [name, child] of node.children) yield* visit(child, `${path}/${name}`);
    };
    yield* visit(this.root, '');
  }

  /** Waits for files still finishing in the background; rethrows their first error. */
  async drain(): Promise<void> {
    await Promise.all(this.pending);
    if (this.pendingError !== undefined) throw this.pendingError;
  }

  private async writeFile(host: string, ino: Inode, e: TarEntry): Promise<void> {
    if (e.size <= SMALL_FILE) {
      // Most of a rootfs is small files: gather the body, then five plain
      // syscalls. Going through the thread pool and a promise per call
      // costs more than the work itself for these.
      const chunks: Buffer[] = [];
      for await (const chunk of e.body()) chunks.push(chunk);
      const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      const fd = openSync(host, CREATE_FLAGS, 0o600);
      try {
        let at = 0;
        while (at < data.length) at += writeSync(fd, data, at, data.length - at);
        fchmodSync(fd, ino.hostMode);
        const t = Math.floor(ino.mtime);
        futimesSync(fd, t, t);
      } finally {
        closeSync(fd);
      }
      return;
    }
    const h = await open(host, CREATE_FLAGS, 0o600);
    try {
      for await (const chunk of e.body()) {
        let at = 0;
        while (at < chunk.length) {
          const { bytesWritten } = await h.write(chunk, at, chunk.length - at);
          at += bytesWritten;
        }
      }
    } catch (err) {
      await h.close().catch(() => undefined);
      throw err;
    }
    // chmod, utimes and close need nothing from the stream: let them finish
    // while the next entry is read.
    await this.background(finishFile(h, ino));
  }

  private async background(p: Promise<void>): Promise<void> {
    const tracked = p.then(
      () => {
        this.pending.delete(tracked);
      },
      (err: unknown) => {
        this.pending.delete(tracked);
        this.pendingError ??= err;
      },
    );
    this.pending.add(tracked);
    // Bounded: with too many in flight, wait for one before reading on.
    if (this.pending.size >= MAX_PENDING) await Promise.race(this.pending);
  }

  private attach(parent: TreeNode, name: string, node: TreeNode): void {
    parent.children!.set(name, node);
    this.layerNodes.add(node);
  }

  private updateDir(node: TreeNode, e: TarEntry): void {
    const ino = node.inode;
    ino.mode = e.mode & 0o7777;
    ino.uid = e.uid;
    ino.gid = e.gid;
    ino.mtime = e.mtime;
    ino.xattrs = e.xattrs.size > 0 ? new Map(e.xattrs) : undefined;
    ino.hostMode = (e.mode & 0o777) | 0o700;
  }

  /** Removes what a node stands for on the host, never following a symlink. */
  private async removeHost(host: string, node: TreeNode): Promise<void> {
    if (node.children) await rm(host, { recursive: true, force: true });
    else await unlink(host);
  }

  private reject(path: string, reason: string): void {
    this.rejected.push({ layer: this.layerIndex, path, reason });
    this.note(`layer ${this.layerIndex}: rejected ${JSON.stringify(path)}: ${reason}`);
  }

  private note(n: string): void {
    if (this.notes.length < 1000) this.notes.push(n);
    this.options.onNote?.(n);
  }
}

async function finishFile(h: FileHandle, ino: Inode): Promise<void> {
  try {
    await h.chmod(ino.hostMode);
    const t = Math.floor(ino.mtime);
    await h.utimes(t, t);
  } finally {
    await h.close();
  }
}

async function drainBody(e: TarEntry): Promise<void> {
  try {
    for await (const _ of e.body()) {
      // discard
    }
  } catch {
    // already read, or the stream failed (reported by the reader next)
  }
}

function inode(
  kind: NodeKind,
  mode: number,
  uid: number,
  gid: number,
  mtime: number,
  hostMode: number,
): Inode {
  return { kind, mode, uid, gid, mtime, major: 0, minor: 0, xattrs: undefined, hostMode, size: 0 };
}

function inodeFrom(e: TarEntry, kind: NodeKind): Inode {
  const perm = e.mode & 0o777;
  const hostMode = kind === 'dir' ? perm | 0o700 : kind === 'file' ? perm | 0o600 : 0o600;
  const ino = inode(kind, e.mode & 0o7777, e.uid, e.gid, e.mtime, hostMode);
  if (kind === 'file') ino.size = e.size;
  if (kind === 'char' || kind === 'block') {
    ino.major = e.devmajor;
    ino.minor = e.devminor;
  }
  if (e.xattrs.size > 0) ino.xattrs = new Map(e.xattrs);
  return ino;
}

/**
 * Splits an entry name into components: "" and "." dropped, a leading "/"
 * ignored ("/etc/passwd" is "etc/passwd" in the image). ".." anywhere, and
 * names debugfs could not address (newlines), reject the entry.
 */
export function splitPath(p: string): string[] {
  const parts: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') throw new Rejection('the name has a ".." component');
    if (/[\n\r\0]/.test(c)) throw new Rejection('the name has a newline or NUL');
    parts.push(c);
  }
  return parts;
}

function basename(p: string): string {
  const parts = p.split('/').filter((c) => c !== '');
  return parts.at(-1) ?? '';
}

function isInside(dir: TreeNode, target: TreeNode): boolean {
  for (const child of dir.children?.values() ?? []) {
    if (child === target || isInside(child, target)) return true;
  }
  return false;
}

function layerError(err: unknown, path: string, index: number): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new MicroagentError('DISK_FULL', `no space left while staging layer ${index}`, {
      data: { layer: path, index },
      cause: err,
    });
  }
  if (err instanceof MicroagentError) {
    if (err.code === 'LAYER_INVALID' || err.code === 'LAYER_UNSUPPORTED') {
      return new MicroagentError(err.code, `layer ${index} (${path}): ${err.message}`, {
        data: { ...err.data, layer: path, index },
        cause: err,
      });
    }
    return err;
  }
  if (
    code === 'Z_DATA_ERROR' ||
    code === 'Z_BUF_ERROR' ||
    /zstd|zlib|gzip|header/i.test(String(err))
  ) {
    return new MicroagentError(
      'LAYER_INVALID',
      `layer ${index} (${path}) cannot be decompressed: ${String(err)}`,
      {
        data: { layer: path, index },
        cause: err,
      },
    );
  }
  if (code === 'ENOENT' && (err as NodeJS.ErrnoException).path === path) {
    return new MicroagentError('LAYER_INVALID', `layer blob ${path} does not exist`, {
      data: { layer: path, index },
      cause: err,
    });
  }
  return new MicroagentError(
    'ROOTFS_BUILD_FAILED',
    `applying layer ${index} failed: ${String(err)}`,
    {
      data: { layer: path, index, errno: code },
      cause: err,
    },
  );
}

/** The ext4 i_mode of an inode, with the setuid policy applied. */
export function imageMode(ino: Inode, allowSetuid: boolean): number {
  let perm = ino.mode & 0o7777;
  if (!allowSetuid && ino.kind !== 'dir') perm &= ~0o6000; // setgid on dirs is inheritance, kept
  return S_IFMT[ino.kind] | perm;
}

export interface LedgerReplay {
  commands: string[];
  /** Xattr values to write to files before running the commands. */
  xattrFiles: Array<{ path: string; value: Buffer }>;
  /** Inodes (unique) and paths in the tree. */
  inodes: number;
  paths: number;
  /** Regular-file content bytes (unique inodes). */
  contentBytes: number;
  /** Estimated ext4 data usage: content in 4 KiB blocks, directories, long symlinks, xattr blocks. */
  dataBytes: number;
  setuidStripped: number;
}

/**
 * The debugfs commands that turn what `mke2fs -d` made of the staged tree
 * into what the layers define: only where the two differ (owner, mode,
 * sub-second mtime), plus device nodes, FIFOs and xattrs, which the host
 * copy never has. host is the owner mke2fs copied from the staged files.
 */
export function ledgerCommands(
  staging: Staging,
  host: { uid: number; gid: number },
  allowSetuid: boolean,
  xattrDir: string,
): LedgerReplay {
  const out: LedgerReplay = {
    commands: [],
    xattrFiles: [],
    inodes: 0,
    paths: 0,
    contentBytes: 0,
    dataBytes: 0,
    setuidStripped: 0,
  };
  const seen = new Set<Inode>();
  const cmd = out.commands;
  for (const [path, node] of staging.walk()) {
    out.paths++;
    const ino = node.inode;
    const device = ino.kind === 'char' || ino.kind === 'block' || ino.kind === 'fifo';
    // Hard links share an inode: its fields are set once. Device nodes are
    // made afresh per path (debugfs cannot hard-link), so they repeat.
    if (seen.has(ino) && !device) continue;
    seen.add(ino);
    out.inodes++;
    if (ino.kind === 'file') {
      out.contentBytes += ino.size;
      out.dataBytes += roundUp(ino.size, 4096);
    } else if (ino.kind === 'dir')
      out.dataBytes += 4096 * Math.max(1, Math.ceil((node.children!.size * 32) / 4096));
    else if (ino.kind === 'symlink' && ino.size >= 60) out.dataBytes += 4096;
    const q = quote(path);
    const mode = imageMode(ino, allowSetuid);
    if ((ino.mode & 0o6000) !== (mode & 0o6000)) out.setuidStripped++;
    const isRoot = path === '/';

    if (device) {
      const slash = path.lastIndexOf('/');
      const parent = slash === 0 ? '/' : path.slice(0, slash);
      const name = path.slice(slash + 1);
      const spec =
        ino.kind === 'fifo' ? 'p' : `${ino.kind === 'char' ? 'c' : 'b'} ${ino.major} ${ino.minor}`;
      // debugfs's mknod takes a name in the current directory only.
      cmd.push(`cd ${quote(parent)}`, `rm ${quote(name)}`, `mknod ${quote(name)} ${spec}`, 'cd /');
      cmd.push(`sif ${q} mode 0${mode.toString(8)}`);
      cmd.push(`sif ${q} uid ${ino.uid}`, `sif ${q} gid ${ino.gid}`);
      cmd.push(`sif ${q} mtime @${Math.floor(ino.mtime)}`);
    } else {
      // mke2fs -E root_owner=0:0 makes "/" 0755 root:root, not the host's.
      const hostModeFull = S_IFMT[ino.kind] | (isRoot ? 0o755 : ino.hostMode);
      if (ino.kind !== 'symlink' && mode !== hostModeFull)
        cmd.push(`sif ${q} mode 0${mode.toString(8)}`);
      const hostUid = isRoot ? 0 : host.uid;
      const hostGid = isRoot ? 0 : host.gid;
      if (ino.uid !== hostUid) cmd.push(`sif ${q} uid ${ino.uid}`);
      if (ino.gid !== hostGid) cmd.push(`sif ${q} gid ${ino.gid}`);
      if (isRoot) cmd.push(`sif ${q} mtime @${Math.floor(ino.mtime)}`);
    }
    const frac = ino.mtime - Math.floor(ino.mtime);
    if (frac > 0) {
      // ext4's extra field: nanoseconds << 2 (the low two bits extend the epoch).
      const ns = Math.min(999_999_999, Math.round(frac * 1e9));
      cmd.push(`sif ${q} mtime_extra ${ns * 4}`);
    }
    if (ino.xattrs) {
      let xbytes = 0;
      for (const [name, value] of ino.xattrs) {
        const file = join(xattrDir, `x${out.xattrFiles.length}`);
        out.xattrFiles.push({ path: file, value });
        cmd.push(`ea_set -f ${quote(file)} ${q} ${quote(name)}`);
        xbytes += name.length + value.length + 16;
      }
      if (xbytes > 80) out.dataBytes += 4096; // beyond the in-inode space: one xattr block
    }
  }
  return out;
}

/** A debugfs argument: double quotes, with embedded quotes doubled. */
export function quote(s: string): string {
  return `"${s.replaceAll('"', '""')}"`;
}

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}
