/**
 * microagent's public library API. The CLI and (later) the MCP server are
 * thin fronts over these calls; nothing here writes to stdout/stderr or
 * exits the process.
 */
export {
  MicroagentError,
  RemoteError,
  ERROR_CODES,
  isMicroagentError,
  type ErrorCode,
  type ErrorKind,
  type SerializedError,
} from './errors.js';
export { runCommand, type RunOptions, type RunResult, type RunProgress } from './workspace/run.js';
export { PROFILES, type ProfileName, type Resources } from './workspace/profiles.js';
export { validateWorkspaceName, WORKSPACE_NAME_PATTERN } from './workspace/names.js';
export { doctor, type DoctorReport, type DoctorCheck } from './doctor/doctor.js';
export {
  installKernel,
  listKernels,
  verifyKernel,
  prepareBootKernel,
  type KernelSource,
} from './kernel/index.js';
export { StatePaths, defaultStateDir } from './paths.js';
