/**
 * The QEMU command line and the accelerator choice (fixture /proc text).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  chooseAccel,
  cpuHasVirtualization,
  parseTscKhz,
  type HostProbe,
} from '../../src/supervisors/qemu/accel.js';
import {
  buildQemuArgs,
  kernelCmdline,
  qemuOptValue,
  type QemuSpec,
} from '../../src/supervisors/qemu/qemu-args.js';

const spec: QemuSpec = {
  qemuBinary: '/usr/bin/qemu-system-x86_64',
  accel: 'tcg',
  tscKhz: 2596130,
  cpus: 2,
  memoryMiB: 512,
  kernel: '/k/vmlinux',
  initramfs: '/k/initramfs.cpio',
  cmdline: ['microagent.debug=1'],
  disks: [
    { path: '/w/rootfs.qcow2', format: 'qcow2', readOnly: false, serial: 'ma-root' },
    { path: '/w/config.img', format: 'raw', readOnly: true, serial: 'ma-config' },
  ],
  serialLog: '/w/run/serial.log',
  muxSocket: '/w/run/mux.sock',
  qmpSocket: '/w/run/qmp.sock',
  pidFile: '/w/run/qemu.pid',
};

/** The value following a flag (first occurrence). */
function after(argv: string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i < 0 ? undefined : argv[i + 1];
}
function allAfter(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []));
}

describe('buildQemuArgs', () => {
  it('builds a microvm TCG command line with the TSC fix and both disks', () => {
    const argv = buildQemuArgs(spec);
    assert.equal(argv[0], spec.qemuBinary);
    assert.equal(after(argv, '-M'), 'microvm');
    assert.equal(after(argv, '-accel'), 'tcg');
    assert.equal(after(argv, '-cpu'), 'max');
    assert.equal(after(argv, '-smp'), '2');
    assert.equal(after(argv, '-m'), '512M');
    for (const f of ['-nodefaults', '-no-user-config', '-no-reboot'])
      assert.ok(argv.includes(f), f);
    assert.equal(after(argv, '-display'), 'none');
    assert.equal(after(argv, '-kernel'), '/k/vmlinux');
    assert.equal(after(argv, '-initrd'), '/k/initramfs.cpio');
    assert.equal(
      after(argv, '-append'),
      'console=ttyS0 panic=-1 reboot=t tsc_early_khz=2596130 tsc=reliable microagent.debug=1',
    );
    assert.deepEqual(allAfter(argv, '-drive'), [
      'id=disk0,file=/w/rootfs.qcow2,format=qcow2,if=none',
      'id=disk1,file=/w/config.img,format=raw,if=none,readonly=on',
    ]);
    assert.deepEqual(allAfter(argv, '-device'), [
      'virtio-blk-device,drive=disk0,serial=ma-root',
      'virtio-blk-device,drive=disk1,serial=ma-config',
      'virtio-serial-device',
      'virtserialport,chardev=mux,name=org.microagent.mux',
    ]);
    assert.deepEqual(allAfter(argv, '-chardev'), [
      'file,id=ser0,path=/w/run/serial.log,append=on',
      'socket,id=mux,path=/w/run/mux.sock,server=off',
    ]);
    assert.equal(after(argv, '-serial'), 'chardev:ser0');
    assert.equal(after(argv, '-qmp'), 'unix:/w/run/qmp.sock,server=on,wait=off');
    assert.equal(after(argv, '-pidfile'), '/w/run/qemu.pid');
    assert.ok(!argv.some((a) => a.includes('acpi=off')), 'ACPI stays on');
  });

  it('uses -cpu host and no TSC hint under KVM', () => {
    const argv = buildQemuArgs({
      ...spec,
      accel: 'kvm',
      tscKhz: undefined,
      initramfs: undefined,
      cmdline: undefined,
    });
    assert.equal(after(argv, '-accel'), 'kvm');
    assert.equal(after(argv, '-cpu'), 'host');
    assert.equal(after(argv, '-append'), 'console=ttyS0 panic=-1 reboot=t');
    assert.ok(!argv.includes('-initrd'));
  });

  it('escapes commas in paths so they cannot inject QEMU options', () => {
    assert.equal(qemuOptValue('/a,b'), '/a,,b');
    const argv = buildQemuArgs({
      ...spec,
      disks: [{ path: '/w/x,readonly=off', format: 'raw', readOnly: true, serial: 'ma-root' }],
    });
    assert.equal(
      allAfter(argv, '-drive')[0],
      'id=disk0,file=/w/x,,readonly=off,format=raw,if=none,readonly=on',
    );
  });

  it('requires the TSC rate under TCG and rejects kernel args with spaces', () => {
    assert.throws(() => kernelCmdline({ accel: 'tcg' }), /tscKhz/);
    assert.throws(() => kernelCmdline({ accel: 'kvm', cmdline: ['a b'] }), /bad kernel argument/);
  });
});

const CPUINFO_PVM = `processor\t: 0
vendor_id\t: GenuineIntel
cpu MHz\t\t: 2596.122
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep hypervisor lahf_lm
processor\t: 1
cpu MHz\t\t: 2596.122
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep hypervisor lahf_lm
`;
const CPUINFO_VMX = CPUINFO_PVM.replaceAll('hypervisor', 'vmx hypervisor');

function probe(p: Partial<{ dev: boolean; cpuinfo: string; pvm: boolean }>): HostProbe {
  return {
    kvmDeviceUsable: () => p.dev ?? true,
    cpuinfo: () => p.cpuinfo ?? CPUINFO_VMX,
    kvmPvmLoaded: () => p.pvm ?? false,
  };
}

describe('chooseAccel', () => {
  it('parses the TSC rate and the virtualisation flags', () => {
    assert.equal(parseTscKhz(CPUINFO_PVM), 2596122);
    assert.equal(parseTscKhz('nothing'), undefined);
    assert.equal(cpuHasVirtualization(CPUINFO_PVM), false);
    assert.equal(cpuHasVirtualization(CPUINFO_VMX), true);
    assert.equal(cpuHasVirtualization('flags : svm sse'), true);
    assert.equal(cpuHasVirtualization('flags : vmxnet'), false);
  });

  it('picks KVM only when /dev/kvm works, the CPU has vmx/svm and it is not kvm_pvm', () => {
    assert.equal(chooseAccel('auto', probe({}), {}).accel, 'kvm');
    const pvm = chooseAccel('auto', probe({ pvm: true }), {});
    assert.equal(pvm.accel, 'tcg');
    assert.match(pvm.reason, /kvm_pvm/);
    assert.equal(pvm.tscKhz, 2596122);
    assert.match(chooseAccel('auto', probe({ dev: false }), {}).reason, /\/dev\/kvm/);
    assert.match(chooseAccel('auto', probe({ cpuinfo: CPUINFO_PVM }), {}).reason, /vmx or svm/);
  });

  it('lets the request or MICROAGENT_ACCEL override auto', () => {
    assert.equal(chooseAccel('tcg', probe({}), {}).accel, 'tcg');
    assert.equal(chooseAccel('kvm', probe({ pvm: true }), {}).accel, 'kvm');
    const env = chooseAccel('auto', probe({}), { MICROAGENT_ACCEL: 'tcg' });
    assert.equal(env.accel, 'tcg');
    assert.match(env.reason, /MICROAGENT_ACCEL/);
    // The request's explicit value wins over the environment.
    assert.equal(chooseAccel('kvm', probe({}), { MICROAGENT_ACCEL: 'tcg' }).accel, 'kvm');
    assert.throws(
      () => chooseAccel('auto', probe({}), { MICROAGENT_ACCEL: 'fast' }),
      /MICROAGENT_ACCEL/,
    );
  });
});
