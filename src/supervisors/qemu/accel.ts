/**
 * Accelerator choice for QEMU: KVM only when it really works, TCG otherwise.
 *
 * "Really works" means all of: /dev/kvm opens read-write, the CPU advertises
 * hardware virtualisation (vmx/svm in /proc/cpuinfo), and the KVM provider is
 * not kvm_pvm. kvm_pvm is a nested, page-table based KVM that exposes
 * /dev/kvm without vmx/svm; an ordinary guest kernel crawls or hangs under
 * it (notes/qemu-on-this-host.md), so auto must pick TCG there.
 *
 * The probe reads the host through an injectable HostProbe so the decision
 * logic is unit-tested with fixture /proc text.
 */
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';

import { AccelRequestSchema, AccelSchema } from '../../vmkit/schema.js';

export type Accel = z.infer<typeof AccelSchema>;
export type AccelRequest = z.infer<typeof AccelRequestSchema>;

export interface AccelChoice {
  accel: Accel;
  /** A human sentence saying why this accelerator was chosen. */
  reason: string;
  /** Host TSC frequency in kHz (for tsc_early_khz under TCG); undefined if unknown. */
  tscKhz: number | undefined;
}

/** What the choice reads from the host. */
export interface HostProbe {
  /** True when /dev/kvm can be opened read-write. */
  kvmDeviceUsable(): boolean;
  /** The text of /proc/cpuinfo ('' when unreadable). */
  cpuinfo(): string;
  /** True when the kvm_pvm module is loaded (/sys/module/kvm_pvm). */
  kvmPvmLoaded(): boolean;
}

export const realHostProbe: HostProbe = {
  kvmDeviceUsable() {
    try {
      accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
      return true;
    } catch {
      return false;
    }
  },
  cpuinfo() {
    try {
      return readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      return '';
    }
  },
  kvmPvmLoaded() {
    return existsSync('/sys/module/kvm_pvm');
  },
};

/** True when any "flags" line of /proc/cpuinfo lists vmx (Intel) or svm (AMD). */
export function cpuHasVirtualization(cpuinfo: string): boolean {
  for (const line of cpuinfo.split('\n')) {
    const m = /^flags\s*:\s*(.*)$/.exec(line);
    if (m && /(^|\s)(vmx|svm)(\s|$)/.test(m[1] ?? '')) return true;
  }
  return false;
}

/**
 * Host TSC frequency in kHz from the first "cpu MHz" line of /proc/cpuinfo
 * (×1000, rounded). Under TCG the guest TSC is the host TSC, so this is the
 * value for tsc_early_khz. ("tsc: Detected" in dmesg is not readable
 * unprivileged; on this host both agree.)
 */
export function parseTscKhz(cpuinfo: string): number | undefined {
  const m = /^cpu MHz\s*:\s*([0-9]+(?:\.[0-9]+)?)\s*$/m.exec(cpuinfo);
  if (!m) return undefined;
  const khz = Math.round(Number(m[1]) * 1000);
  return Number.isFinite(khz) && khz > 0 ? khz : undefined;
}

/** Reads MICROAGENT_ACCEL; undefined when unset, throws on a bad value. */
export function accelFromEnv(env: NodeJS.ProcessEnv = process.env): AccelRequest | undefined {
  const raw = env.MICROAGENT_ACCEL;
  if (raw === undefined || raw === '') return undefined;
  const parsed = AccelRequestSchema.safeParse(raw);
  if (!parsed.success) {
    throw new RangeError(`MICROAGENT_ACCEL must be kvm, tcg or auto (got ${JSON.stringify(raw)})`);
  }
  return parsed.data;
}

/**
 * Decides the accelerator. An explicit `kvm` or `tcg` (request field, or
 * MICROAGENT_ACCEL when the request says auto) wins, even when KVM looks
 * unusable: the caller asked for it and QEMU will say why it fails.
 */
export function chooseAccel(
  requested: AccelRequest = 'auto',
  probe: HostProbe = realHostProbe,
  env: NodeJS.ProcessEnv = process.env,
): AccelChoice {
  const cpuinfo = probe.cpuinfo();
  const tscKhz = parseTscKhz(cpuinfo);
  const effective = requested === 'auto' ? (accelFromEnv(env) ?? 'auto') : requested;
  if (effective === 'kvm' || effective === 'tcg') {
    const source = requested === 'auto' ? 'MICROAGENT_ACCEL' : 'the request';
    return {
      accel: effective,
      reason: `${effective.toUpperCase()} was asked for by ${source}.`,
      tscKhz,
    };
  }
  if (!probe.kvmDeviceUsable()) {
    return {
      accel: 'tcg',
      reason: 'TCG: /dev/kvm is missing or cannot be opened read-write.',
      tscKhz,
    };
  }
  if (probe.kvmPvmLoaded()) {
    return {
      accel: 'tcg',
      reason:
        'TCG: /dev/kvm is provided by kvm_pvm (nested, page-table based KVM), under which ordinary guest kernels hang.',
      tscKhz,
    };
  }
  if (!cpuHasVirtualization(cpuinfo)) {
    return {
      accel: 'tcg',
      reason: 'TCG: the CPU does not advertise vmx or svm in /proc/cpuinfo.',
      tscKhz,
    };
  }
  return {
    accel: 'kvm',
    reason: 'KVM: /dev/kvm is usable and the CPU has hardware virtualisation.',
    tscKhz,
  };
}
