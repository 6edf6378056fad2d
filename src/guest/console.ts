/**
 * The serial console tail: the last lines of <run>/serial.log, which every
 * boot failure carries so the user sees why the guest stopped.
 */
import { open } from 'node:fs/promises';

/** Bytes read from the end of the file (enough for ~40 long lines). */
const TAIL_BYTES = 16 * 1024;

/**
 * The last `lines` lines of a log file, with control characters other than
 * tab stripped (the console can contain escape sequences); '' when the file
 * is missing or empty.
 */
export async function readTail(path: string, lines = 40, maxBytes = TAIL_BYTES): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await handle.stat();
    const start = Math.max(0, size - maxBytes);
    const buf = Buffer.alloc(size - start);
    await handle.read(buf, 0, buf.length, start);
    let text = buf.toString('utf8').replace(/\r/g, '');
    // eslint-disable-next-line no-control-regex
    text = text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
    const all = text.split('\n');
    if (start > 0) all.shift(); // first line is probably cut
    while (all.length > 0 && all[all.length - 1]!.trim() === '') all.pop();
    return all.slice(Math.max(0, all.length - lines)).join('\n');
  } finally {
    await handle.close();
  }
}
