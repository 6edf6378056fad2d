/**
 * Kernel modules for the initramfs. The Debian package ships no modules.dep
 * (depmod runs in its postinst), so dependencies come from each module's
 * own `.modinfo` section (`depends=a,b`). Module names treat '-' and '_' as
 * the same character, as the kernel does.
 */
import { readdir, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { MicroagentError } from '../errors.js';
import { run } from '../proc/spawn.js';
import { readSection } from '../util/elf.js';

/** What stage 1 needs: the microvm transport, the disks, the guest channel, the network. */
export const DEFAULT_WANTED_MODULES: readonly string[] = [
  'virtio_mmio',
  'virtio_blk',
  'virtio_console',
  'virtio_net',
];

/** Canonical module name: '-' → '_'. */
export function moduleName(name: string): string {
  return name.replace(/-/g, '_');
}

export interface ModInfo {
  name?: string;
  depends: string[];
  vermagic?: string;
}

/** Parses a `.modinfo` section: NUL-separated `key=value` strings. */
export function parseModinfo(section: Uint8Array): ModInfo {
  const info: ModInfo = { depends: [] };
  for (const entry of Buffer.from(section).toString('utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const key = entry.slice(0, eq);
    const value = entry.slice(eq + 1);
    if (key === 'depends') {
      info.depends = value
        .split(',')
        .map((d) => d.trim())
        .filter((d) => d !== '')
        .map(moduleName);
    } else if (key === 'name') info.name = moduleName(value);
    else if (key === 'vermagic') info.vermagic = value;
  }
  return info;
}

/** Reads the modinfo of an uncompressed module image. */
export function modinfoOf(ko: Uint8Array, label: string): ModInfo {
  let section: Uint8Array | undefined;
  try {
    section = readSection(ko, '.modinfo');
  } catch (err) {
    throw new MicroagentError('KERNEL_INVALID', `${label} is not a valid kernel module`, {
      cause: err,
    });
  }
  if (!section) throw new MicroagentError('KERNEL_INVALID', `${label} has no .modinfo section`);
  return parseModinfo(section);
}

export interface ModuleFile {
  name: string;
  path: string;
}

/** Indexes the modules under <root>/lib/modules/<release>/ (or /usr/lib/...). */
export class ModuleTree {
  private constructor(
    readonly dir: string,
    private readonly files: Map<string, string>,
    private readonly builtin: Set<string>,
  ) {}

  static async open(dir: string): Promise<ModuleTree> {
    const files = new Map<string, string>();
    await walk(join(dir, 'kernel'), (path) => {
      const m = /^(.*)\.ko(\.xz|\.zst)?$/.exec(basename(path));
      if (m?.[1]) files.set(moduleName(m[1]), path);
    });
    const builtin = new Set<string>();
    try {
      const text = await readFile(join(dir, 'modules.builtin'), 'utf8');
      for (const line of text.split('\n')) {
        const m = /([^/]+)\.ko$/.exec(line.trim());
        if (m?.[1]) builtin.add(moduleName(m[1]));
      }
    } catch {
      // A tree without modules.builtin: assume nothing is built in.
    }
    return new ModuleTree(dir, files, builtin);
  }

  isBuiltin(name: string): boolean {
    return this.builtin.has(moduleName(name));
  }

  has(name: string): boolean {
    return this.files.has(moduleName(name));
  }

  /** The uncompressed bytes of a module (.ko.xz / .ko.zst via the CLIs). */
  async load(name: string): Promise<Buffer> {
    const path = this.files.get(moduleName(name));
    if (!path) throw new MicroagentError('KERNEL_INVALID', `module ${name} is not in ${this.dir}`);
    return loadModuleFile(path);
  }

  /**
   * The wanted modules and everything they depend on, dependencies first
   * (the order stage 1 must load them in). Built-in modules are skipped.
   * Deterministic: wanted order, then each module's depends in sorted order.
   */
  async closure(wanted: readonly string[]): Promise<Array<{ name: string; data: Buffer }>> {
    const order: Array<{ name: string; data: Buffer }> = [];
    const state = new Map<string, 'visiting' | 'done'>();
    const visit = async (raw: string, chain: string[]): Promise<void> => {
      const name = moduleName(raw);
      if (this.isBuiltin(name)) return;
      const s = state.get(name);
      if (s === 'done') return;
      if (s === 'visiting') {
        throw new MicroagentError(
          'KERNEL_INVALID',
          `module dependency cycle: ${[...chain, name].join(' -> ')}`,
        );
      }
      if (!this.has(name)) {
        throw new MicroagentError(
          'KERNEL_INVALID',
          `module ${name} (needed by ${chain.at(-1) ?? 'the initramfs'}) is neither built in nor in ${this.dir}`,
        );
      }
      state.set(name, 'visiting');
      const data = await this.load(name);
      const info = modinfoOf(data, `${name}.ko`);
      for (const dep of [...info.depends].sort()) await visit(dep, [...chain, name]);
      state.set(name, 'done');
      order.push({ name, data });
    };
    for (const w of wanted) await visit(w, []);
    return order;
  }
}

/** Reads a module file, decompressing .ko.xz / .ko.zst with the CLIs. */
export async function loadModuleFile(path: string): Promise<Buffer> {
  if (path.endsWith('.ko.xz')) {
    return (await run(['xz', '-dc', path], { providedBy: 'xz-utils' })).stdout;
  }
  if (path.endsWith('.ko.zst')) {
    return (await run(['zstd', '-dcq', path], { providedBy: 'zstd' })).stdout;
  }
  return readFile(path);
}

async function walk(dir: string, onFile: (path: string) => void): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await walk(p, onFile);
    else if (e.isFile()) onFile(p);
  }
}
