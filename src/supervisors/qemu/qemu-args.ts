/**
 * The QEMU command line for one microVM, as a pure function of its spec so it
 * is unit-tested and reproducible. Working lines and the reasons behind each
 * choice: notes/qemu-on-this-host.md.
 */
import { MUX_PORT_NAME } from '../../guest/protocol.js';
import type { PortForward } from '../../vmkit/schema.js';
import type { Accel } from './accel.js';

export interface QemuDisk {
  path: string;
  format: 'raw' | 'qcow2';
  readOnly: boolean;
  /** virtio-blk serial the guest finds the disk by (ma-root, ma-config, …). */
  serial: string;
}

/**
 * The NIC's backend. `stream`: a unix socket QEMU listens on, to which
 * netstack connects (and connects again after a restart). `slirp`: QEMU's
 * built-in user-mode stack. Absent: no NIC at all.
 */
export type QemuNetwork =
  | { kind: 'stream'; path: string }
  | {
      kind: 'slirp';
      guestAddress: string;
      gateway: string;
      dns: string;
      forwards: readonly PortForward[];
    };

export interface QemuSpec {
  qemuBinary: string;
  accel: Accel;
  /** Host TSC kHz; required under TCG (see the -append comment). */
  tscKhz?: number;
  cpus: number;
  memoryMiB: number;
  kernel: string;
  initramfs?: string;
  /** Extra kernel command-line words, appended after the base ones. */
  cmdline?: readonly string[];
  disks: readonly QemuDisk[];
  serialLog: string;
  muxSocket: string;
  qmpSocket: string;
  pidFile: string;
  network?: QemuNetwork;
}

/** Base kernel arguments (docs/protocol.md §5). */
export const BASE_CMDLINE = [
  'console=ttyS0', // the serial port QEMU writes to serial.log
  'panic=-1', // reboot at once on panic; with -no-reboot QEMU then exits
  'reboot=t', // reboot via triple fault: no BIOS/ACPI reset path needed on microvm
] as const;

/**
 * QEMU's option parser splits on ',' and lets ',,' stand for a literal comma;
 * a path with a comma would otherwise inject options.
 */
export function qemuOptValue(value: string): string {
  return value.replaceAll(',', ',,');
}

/** The kernel command line for a spec (base + TCG TSC fix + extra). */
export function kernelCmdline(spec: Pick<QemuSpec, 'accel' | 'tscKhz' | 'cmdline'>): string {
  const words: string[] = [...BASE_CMDLINE];
  if (spec.accel === 'tcg') {
    if (spec.tscKhz === undefined) throw new RangeError('tscKhz is required under TCG');
    // Under TCG the guest calibrates its TSC against the PIT, which fails at
    // random with host jitter and hangs the boot forever; give it the host
    // TSC rate (guest TSC = host TSC under TCG) and skip the watchdog that
    // otherwise demotes the TSC to jiffies.
    words.push(`tsc_early_khz=${spec.tscKhz}`, 'tsc=reliable');
  }
  for (const w of spec.cmdline ?? []) {
    if (w.length === 0 || /\s/.test(w))
      throw new RangeError(`bad kernel argument ${JSON.stringify(w)}`);
    words.push(w);
  }
  return words.join(' ');
}

/** The full argv (argv[0] is the QEMU binary). */
export function buildQemuArgs(spec: QemuSpec): string[] {
  const o = qemuOptValue;
  const argv: string[] = [spec.qemuBinary];
  // microvm: no PCI, no firmware, virtio-mmio devices. ACPI stays on (the
  // default): this kernel lacks VIRTIO_MMIO_CMDLINE_DEVICES, so with
  // acpi=off it would never see its disks.
  argv.push('-M', 'microvm');
  if (spec.accel === 'kvm') {
    argv.push('-accel', 'kvm', '-cpu', 'host'); // pass the host CPU through
  } else {
    // -cpu max exposes x86-64-v3 under TCG; qemu64 is only v1 and would
    // break images built for newer baselines.
    argv.push('-accel', 'tcg', '-cpu', 'max');
  }
  argv.push('-smp', String(spec.cpus));
  argv.push('-m', `${spec.memoryMiB}M`);
  argv.push(
    '-nodefaults', // no default NIC, serial, monitor, VGA, …: only what is listed here
    '-no-user-config', // ignore /etc/qemu config files
    '-display',
    'none',
    '-no-reboot', // a guest reset (panic=-1, reboot=t) makes QEMU exit instead
  );
  // The console goes to a file (serial.log) that survives QEMU and is the
  // source of the console tail in boot-failure messages. append=on: a
  // boot restarted after a stall (monitor.ts) keeps the first boot's lines.
  argv.push(
    '-chardev',
    `file,id=ser0,path=${o(spec.serialLog)},append=on`,
    '-serial',
    'chardev:ser0',
  );
  argv.push('-kernel', spec.kernel);
  if (spec.initramfs !== undefined) argv.push('-initrd', spec.initramfs);
  argv.push('-append', kernelCmdline(spec));
  spec.disks.forEach((disk, i) => {
    const id = `disk${i}`;
    const drive = [
      `id=${id}`,
      `file=${o(disk.path)}`,
      `format=${disk.format}`, // explicit: never let QEMU probe a guest-writable image
      'if=none', // attached by the -device below
      ...(disk.readOnly ? ['readonly=on'] : []),
    ];
    argv.push('-drive', drive.join(','));
    // The serial is how the guest init finds its disks (no udev by-id links).
    argv.push('-device', `virtio-blk-device,drive=${id},serial=${o(disk.serial)}`);
  });
  // The guest channel: one virtio-serial port whose chardev is a unix socket
  // the MONITOR listens on (QEMU is the client, server=off), so the monitor
  // owns the endpoint before QEMU starts and nothing written is lost.
  argv.push(
    '-device',
    'virtio-serial-device',
    '-chardev',
    `socket,id=mux,path=${o(spec.muxSocket)},server=off`,
    '-device',
    `virtserialport,chardev=mux,name=${MUX_PORT_NAME}`,
  );
  if (spec.network !== undefined) argv.push(...networkArgs(spec.network));
  // QMP for pause/resume and the SHUTDOWN event (why the guest stopped);
  // wait=off: QEMU does not block at start waiting for the monitor.
  argv.push('-qmp', `unix:${o(spec.qmpSocket)},server=on,wait=off`);
  argv.push('-pidfile', spec.pidFile);
  return argv;
}

/** -netdev/-device for the NIC (docs/architecture.md "Networking"). */
export function networkArgs(net: QemuNetwork): string[] {
  let netdev: string;
  if (net.kind === 'stream') {
    // QEMU listens: when netstack dies, QEMU accepts the next one, so the
    // stack can be restarted under a running guest. The socket lives in
    // the runtime folder (0700), out of other users' reach.
    netdev = `stream,id=net0,server=on,addr.type=unix,addr.path=${qemuOptValue(net.path)}`;
  } else {
    const prefix = net.guestAddress.split('.').slice(0, 3).join('.');
    const opts = [
      'user',
      'id=net0',
      `net=${prefix}.0/24`, // the guest's /24 (guest config uses the same)
      `host=${net.gateway}`, // slirp ALWAYS maps this address to the host's loopback
      `dns=${net.dns}`, // slirp's built-in forwarder to the host's resolvers
      `dhcpstart=${net.guestAddress}`,
      'ipv6=off', // the guest gets no IPv6 configuration
      ...net.forwards.map(
        (f) => `hostfwd=tcp:${f.hostAddress}:${f.hostPort}-${net.guestAddress}:${f.guestPort}`,
      ),
    ];
    netdev = opts.join(',');
  }
  // virtio-mmio NIC; the guest's virtio_net module is in the initramfs.
  return ['-netdev', netdev, '-device', 'virtio-net-device,netdev=net0'];
}
