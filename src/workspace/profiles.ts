/**
 * Resource profiles. Names and sizes follow the reference CLI so that people
 * moving between the two find the same words.
 */
import { MicroagentError } from '../errors.js';

export const PROFILES = {
  tiny: { memoryMiB: 256, cpus: 1, diskMiB: 512 },
  small: { memoryMiB: 512, cpus: 2, diskMiB: 1024 },
  medium: { memoryMiB: 2048, cpus: 2, diskMiB: 8192 },
  large: { memoryMiB: 4096, cpus: 4, diskMiB: 16384 },
} as const;

export type ProfileName = keyof typeof PROFILES;
export const DEFAULT_PROFILE: ProfileName = 'small';

export interface Resources {
  profile: ProfileName;
  cpus: number;
  memoryMiB: number;
}

export function isProfileName(value: string): value is ProfileName {
  return Object.hasOwn(PROFILES, value);
}

/** A profile with optional per-value overrides (the profile name is kept). */
export function resolveResources(options: {
  profile?: string;
  cpus?: number;
  memoryMiB?: number;
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
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) {
    throw new MicroagentError('INVALID_ARGUMENT', `cpus must be 1-64 (got ${cpus})`);
  }
  if (!Number.isInteger(memoryMiB) || memoryMiB < 128 || memoryMiB > 65536) {
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `memory must be 128-65536 MiB (got ${memoryMiB})`,
    );
  }
  return { profile, cpus, memoryMiB };
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
