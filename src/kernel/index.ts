/**
 * Kernels: install (apt / file / URL), list, verify, and prepare for boot.
 * See docs/kernel.md.
 */
export {
  installKernel,
  deriveBootImage,
  type InstallKernelOptions,
  type InstallKernelResult,
  type BootImage,
} from './install.js';
export {
  prepareBootKernel,
  verifyKernel,
  regenerateInitramfs,
  type BootKernel,
  type PrepareBootOptions,
  type VerifyKernelResult,
} from './boot.js';
export {
  listKernels,
  readDefaultKernelId,
  writeDefaultKernelId,
  type KernelSummary,
} from './store.js';
export { KernelSourceSchema, type KernelSource } from './source.js';
export { KernelManifestSchema, type KernelManifest, type BootFormat } from './manifest.js';
export type { FileCheck } from './verify.js';
export { DEFAULT_WANTED_MODULES } from './modules.js';
export { DEFAULT_KERNEL_METAPACKAGE } from './apt.js';
