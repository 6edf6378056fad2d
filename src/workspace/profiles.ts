/**
 * Resource profiles. Names and sizes follow the reference CLI so that people
 * moving between the two find the same words.
 */
import { MicroagentError } from '../errors.js';
import { CPUS, DISK_MIB, MEMORY_MIB } from '../limits.js';

export const PROFILES = {
  tiny: { memoryMiB: 256, cpus: 1, diskMiB: 512 },
  small: { memoryMiB: 512, cpus: 2, diskMiB: 1024 },
  medium: { memoryMiB: 2048, cpus: 2, diskMiB: 8192 },
  large: { memoryMiB: 4096, cpus: 4, diskMiB: 16384 },
} as const;

export type ProfileName = keyof typeof PROFILES;
export const DEFAULT_PROFILE: ProfileName = 'small';

/** A workspace disk's size bounds (--disk-size). */
export const DISK_MIB_MIN = DISK_MIB.min;
export const DISK_MIB_MAX = DISK_MIB.max;

export interface Resources {
  profile: ProfileName;
  cpus: number;
  memoryMiB: number;
  /**
   * The root disk's size: the profile's (a floor: the disk is never smaller
   * than the image) or --disk-size's (pinned: exactly that, or an error
   * when the image does not fit). The record keeps the size the disk got.
   */
  diskMiB: number;
  /** --disk-size was given. */
  diskPinned?: boolean;
}

export function isProfileName(value: string): value is ProfileName {
  return Object.hasOwn(PROFILES, value);
}

/** A profile with optional per-value overrides (the profile name is kept). */
export function resolveResources(options: {
  profile?: string;
  cpus?: number;
  memoryMiB?: number;
  diskMiB?: number;
  diskPinned?: boolean;
}): Resources {
  const profile = options.profile ?? DEFAULT_PROFILE;
  if (!isProfileName(profile)) {
    throw new MicroagentError('INVALID_ARGUMENT', `unknown profile "${profile}"`, {
      remediation: `Use one of: ${Object.keys(PROFILES).join(', ')}.`,
    });
  }
  const base = PROFILES[profile];
  const cpus = options.cpus ?? base.cpus;
  const memoryMiB = options.memoryMiB ?? base.memoryMiB;
  if (!Number.isInteger(cpus) || cpus < CPUS.min || cpus > CPUS.max) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `cpus must be ${CPUS.min}-${CPUS.max} (got ${cpus})`,
    );
  }
  if (!Number.isInteger(memoryMiB) || memoryMiB < MEMORY_MIB.min || memoryMiB > MEMORY_MIB.max) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `memory must be ${MEMORY_MIB.min}-${MEMORY_MIB.max} MiB (got ${memoryMiB})`,
    );
  }
  const diskMiB = options.diskMiB ?? base.diskMiB;
  if (!Number.isInteger(diskMiB) || diskMiB < DISK_MIB_MIN || diskMiB > DISK_MIB_MAX) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `disk size must be ${DISK_MIB_MIN} MiB to ${DISK_MIB_MAX / 1024 / 1024} TiB (got ${diskMiB} MiB)`,
      { remediation: 'Give --disk-size as e.g. 512M, 4G or 1T.' },
    );
  }
  const pinned = options.diskPinned ?? options.diskMiB !== undefined;
  return { profile, cpus, memoryMiB, diskMiB, ...(pinned ? { diskPinned: true } : {}) };
}

/** Parses "512M", "4G", "1T" (or plain MiB) into MiB, for --disk-size. */
export function parseDiskSize(text: string): number {
  const m = /^(\d+)\s*(m|mi|mib|mb|g|gi|gib|gb|t|ti|tib|tb)?$/i.exec(text.trim());
  if (!m) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `--disk-size must look like 512M, 4G or 1T (got "${text}")`,
    );
  }
  const unit = (m[2] ?? 'm').toLowerCase()[0];
  return Number(m[1]) * (unit === 't' ? 1024 * 1024 : unit === 'g' ? 1024 : 1);
}

/** Parses "512", "512M", "512MiB", "2G", "2GiB" into MiB. */
export function parseMemory(text: string): number {
  const m = /^(\d+)\s*(m|mi|mib|mb|g|gi|gib|gb)?$/i.exec(text.trim());
  if (!m) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `--memory must look like 512, 512M or 2G (got "${text}")`,
    );
  }
  const n = Number(m[1]);
  return (m[2] ?? 'm').toLowerCase().startsWith('g') ? n * 1024 : n;
}
