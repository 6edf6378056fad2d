/**
 * microagent's public library API (`import { … } from 'microagent'`).
 * The CLI and the MCP server are thin fronts over these calls; nothing here
 * writes to stdout/stderr or exits the process. docs/library.md is the guide.
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

// One-shot runs.
export { runCommand, type RunOptions, type RunResult, type RunProgress } from './workspace/run.js';
export { runCommand as run } from './workspace/run.js';
export {
  runDocument,
  execDocument,
  encodeOutput,
  type RunDocument,
  type ExecDocument,
  type OutputEncoding,
} from './workspace/documents.js';

// Persistent workspaces: a typed handle per workspace.
export {
  Workspace,
  createWorkspace,
  openWorkspace,
  EXEC_BUFFER_LIMIT,
  type WorkspaceExecOptions,
  type WorkspaceExecResult,
} from './workspace/handle.js';
export type { CreateOptions, StartOptions } from './workspace/lifecycle.js';
export type { CopyResult } from './workspace/files.js';
export type {
  WorkspaceRecord,
  WorkspaceEvent,
  WorkspaceState,
  Identity,
} from './workspace/record.js';
export {
  listWorkspaceSummaries as listWorkspaces,
  type WorkspaceStatus,
  type WorkspaceSummary,
  type DiskView,
  type Readiness,
  type ReadinessSignal,
} from './workspace/views.js';
export type { NetworkView } from './workspace/network-view.js';
export type { NetworkOptions, NetworkSettings, PublishedPort } from './workspace/network.js';
export type { ExecExit } from './guest/protocol.js';
export {
  PROFILES,
  DEFAULT_PROFILE,
  DISK_MIB_MIN,
  DISK_MIB_MAX,
  type ProfileName,
  type Resources,
} from './workspace/profiles.js';
export { validateWorkspaceName, WORKSPACE_NAME_PATTERN } from './workspace/names.js';

// Images.
export {
  pullImage,
  listImages,
  tagImage,
  removeImage,
  pruneImages,
  parseReference,
  type ImageRecord,
  type PullOptions,
  type PullResult,
  type PullEvent,
} from './oci/index.js';
export { prune, type PruneResult } from './workspace/prune.js';

// Kernels and the host.
export {
  installKernel,
  listKernels,
  verifyKernel,
  prepareBootKernel,
  type KernelSource,
} from './kernel/index.js';
export { doctor, type DoctorReport, type DoctorCheck } from './doctor/doctor.js';
export { StatePaths, defaultStateDir } from './paths.js';
