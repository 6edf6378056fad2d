/**
 * A stand-in for QEMU in monitor tests: `node fake-vmm.js <mux.sock> <mode>`.
 * Connects to the monitor's mux.sock like QEMU's chardev and plays the guest
 * with FakeGuest. Modes:
 *   normal   HELLO at once; POWEROFF → exit 0
 *   nohello  never says HELLO (boot timeout)
 *   deaf     HELLO, but ignores POWEROFF
 *   result   HELLO, sends a RESULT, then powers off by itself
 *   crash    exits 3 at once
 */
import { connect } from 'node:net';
import { FakeGuest } from './fake-guest.js';

const [path, mode = 'normal'] = process.argv.slice(2);
if (mode === 'crash') {
  process.stderr.write('fake-vmm: crashing as asked\n');
  process.exit(3);
}
const sock = connect(path!);
sock.on('error', (e) => {
  process.stderr.write(`fake-vmm: ${e.message}\n`);
  process.exit(1);
});
sock.on('connect', () => {
  const guest = new FakeGuest(sock, { hello: mode !== 'nohello' });
  guest.on('poweroff', () => {
    if (mode === 'deaf') return;
    sock.end();
    setTimeout(() => process.exit(0), 20);
  });
  if (mode === 'result') {
    guest.on('hello', () => {
      guest.sendResult({
        type: 'exit',
        status: 'exited',
        exitCode: 7,
        stdoutBytes: 0,
        stderrBytes: 0,
        stdoutTruncated: false,
        stderrTruncated: false,
        durationMs: 1,
      });
      setTimeout(() => process.exit(0), 100);
    });
  }
});
setInterval(() => {}, 1000); // stay alive until told otherwise
