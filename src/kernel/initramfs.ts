/**
 * The initramfs microagent boots with (docs/kernel.md, docs/protocol.md §5):
 *
 *   /init                 the guest init (stage 1 role), 0755
 *   /modules/LL-NN-<name>.ko  modules in load order; LL is the load wave:
 *                         stage 1 loads a wave's modules in parallel, the
 *                         waves one after the other (moduleWaves)
 *   /dev, /proc, /sys, /newroot  mount points
 *   /dev/console          char 5:1, so the kernel can open the console
 *                         before devtmpfs is mounted (else init has no stdio)
 *
 * Uncompressed: gzip made no boot-time difference here and costs a dependency.
 */
import { writeCpioNewc, type CpioEntry } from './cpio.js';
import { moduleFileName } from './manifest.js';
import { modinfoOf, moduleName } from './modules.js';

export interface InitramfsInput {
  init: Uint8Array;
  /** In load order. */
  modules: ReadonlyArray<{ name: string; data: Uint8Array }>;
}

export function buildInitramfs(input: InitramfsInput): Buffer {
  const entries: CpioEntry[] = [
    { type: 'dir', path: 'dev', mode: 0o755 },
    { type: 'chardev', path: 'dev/console', mode: 0o600, major: 5, minor: 1 },
    { type: 'dir', path: 'proc', mode: 0o755 },
    { type: 'dir', path: 'sys', mode: 0o755 },
    { type: 'dir', path: 'newroot', mode: 0o755 },
    { type: 'dir', path: 'modules', mode: 0o755 },
  ];
  const waves = moduleWaves(input.modules);
  input.modules.forEach((m, i) => {
    entries.push({
      type: 'file',
      path: `modules/${String(waves[i]).padStart(2, '0')}-${moduleFileName(i, m.name)}`,
      mode: 0o644,
      data: m.data,
    });
  });
  entries.push({ type: 'file', path: 'init', mode: 0o755, data: input.init });
  return writeCpioNewc(entries);
}

/**
 * The transports that create virtio devices. A device driver loaded in the
 * same wave as its transport would be probed inside the transport's load,
 * one device after the other; loaded after it, each driver probes its own
 * device, in parallel with the others.
 */
const VIRTIO_TRANSPORTS = new Set(['virtio_mmio', 'virtio_pci']);

/**
 * The load wave of each module (same order as given, which is dependencies
 * first): one more than the highest wave among its dependencies in the
 * list, and virtio drivers after the virtio transports in the list. Built-in
 * dependencies (not in the list) do not count. Under TCG each load costs
 * 5-15 ms (signature check, probe), so the network driver no longer waits
 * for the disk and console drivers before it.
 */
export function moduleWaves(modules: ReadonlyArray<{ name: string; data: Uint8Array }>): number[] {
  const wave = new Map<string, number>();
  const names = modules.map((m) => moduleName(m.name));
  const transports = names.filter((n) => VIRTIO_TRANSPORTS.has(n));
  return modules.map((m, i) => {
    const name = names[i] as string;
    const deps = modinfoOf(m.data, `${m.name}.ko`).depends.map(moduleName);
    if (deps.includes('virtio') && !VIRTIO_TRANSPORTS.has(name)) deps.push(...transports);
    let w = 0;
    for (const d of deps) {
      const dw = wave.get(d);
      if (dw !== undefined) w = Math.max(w, dw + 1);
    }
    wave.set(name, w);
    return w;
  });
}
