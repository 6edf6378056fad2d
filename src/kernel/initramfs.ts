/**
 * The initramfs microagent boots with (docs/kernel.md, docs/protocol.md §5):
 *
 *   /init                 the guest init (stage 1 role), 0755
 *   /modules/NN-<name>.ko modules in load order (stage 1 loads them by name)
 *   /dev, /proc, /sys, /newroot  mount points
 *   /dev/console          char 5:1, so the kernel can open the console
 *                         before devtmpfs is mounted (else init has no stdio)
 *
 * Uncompressed: gzip made no boot-time difference here and costs a dependency.
 */
import { writeCpioNewc, type CpioEntry } from './cpio.js';
import { moduleFileName } from './manifest.js';

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
  input.modules.forEach((m, i) => {
    entries.push({
      type: 'file',
      path: `modules/${moduleFileName(i, m.name)}`,
      mode: 0o644,
      data: m.data,
    });
  });
  entries.push({ type: 'file', path: 'init', mode: 0o755, data: input.init });
  return writeCpioNewc(entries);
}
