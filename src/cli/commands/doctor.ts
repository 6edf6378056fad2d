/**
 * `microagent doctor [--json]`
 */
import { parseArgs, type FlagSpecs } from '../args.js';
import { paint, table, writeJson, type Output } from '../output.js';
import { doctor } from '../../index.js';

export const DOCTOR_USAGE = 'microagent doctor [--json] [--state-dir DIR]';
export const DOCTOR_FLAGS: FlagSpecs = {
  json: { type: 'boolean', help: 'Print the report as JSON' },
  'state-dir': { type: 'string', arg: 'DIR', help: 'State directory (default ~/.microagent)' },
};

export async function doctorMain(argv: string[], out: Output): Promise<number> {
  const { flags } = parseArgs(argv, DOCTOR_FLAGS, {}, DOCTOR_USAGE);
  const report = await doctor(flags['state-dir'] ? { stateDir: flags['state-dir'] as string } : {});
  if (out.json || flags.json === true) {
    writeJson(out, report);
  } else {
    const mark = {
      ok: paint(out.stdout, 32, 'ok  '),
      warn: paint(out.stdout, 33, 'warn'),
      fail: paint(out.stdout, 31, 'FAIL'),
    };
    out.stdout.write(`Backend: qemu, accelerator ${report.accel.name}\n\n`);
    const rows = report.checks.map((c) => [mark[c.status], c.name, c.detail]);
    out.stdout.write(table(rows) + '\n');
    for (const c of report.checks) {
      if (c.status !== 'ok' && c.remediation) out.stdout.write(`\n${c.name}: ${c.remediation}`);
    }
    out.stdout.write(`\n\nVerdict: ${report.verdict}\n`);
  }
  return report.verdict === 'failed' ? 1 : 0;
}
