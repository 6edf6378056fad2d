// Regenerates docs/errors.md from src/errors.ts (run after the TS build):
//   scripts/node scripts/gen-errors-doc.mjs
import { writeFileSync } from 'node:fs';
import { ERROR_CODES } from '../dist/src/errors.js';

const exit = { usage: 2, transient: 75 };
let text = `# Errors

Every failure carries a stable \`code\`, a \`kind\`, a \`message\` (what failed
and why), a \`remediation\` (what to do) and \`retryable\`. With \`--json\` the
CLI prints \`{"ok": false, "error": {...}}\` on stdout. The kind decides the
exit code: \`usage\` → 2, \`transient\` → 75 (retryable), everything else → 1.
Errors that come over a wire (supervisor, guest) keep their code and are
marked with their origin in the library (\`RemoteError.origin\`).

This page is generated from \`src/errors.ts\` by \`scripts/gen-errors-doc.mjs\`;
a unit test keeps the two in step.

| code | kind | exit | default remediation |
|---|---|---|---|
`;
for (const [code, { kind, remediation }] of Object.entries(ERROR_CODES)) {
  text += `| \`${code}\` | ${kind} | ${exit[kind] ?? 1} | ${remediation.replaceAll('|', '\\|')} |\n`;
}
writeFileSync(new URL('../docs/errors.md', import.meta.url), text);
