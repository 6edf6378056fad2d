/** The static helpers the build produces (build/<name>). */
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { basename } from 'node:path';
import { MicroagentError } from '../errors.js';

/** HOST_TOOL_MISSING unless the build produced this helper. */
export async function requireBuiltHelper(path: string): Promise<void> {
  try {
    await access(path, constants.X_OK);
  } catch {
    throw new MicroagentError('HOST_TOOL_MISSING', `${path} is missing`, {
      remediation: `Build it with \`npm run build\` (or \`make build/${basename(path)}\`) in the microagent checkout.`,
    });
  }
}
