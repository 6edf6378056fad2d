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
  toMicroagentError,
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
// The same operations by name (what the CLI and MCP call; the handle's
// methods are these).
export {
  createWorkspace as createWorkspaceRecord,
  startWorkspace,
  execWorkspace,
  haltWorkspace,
  stopWorkspace,
  killWorkspace,
  pauseWorkspace,
  resumeWorkspace,
  deleteWorkspace,
  waitWorkspace,
  readWorkspaceResult,
  type CreateOptions,
  type StartOptions,
  type ExecOptions,
  type NameOptions,
} from './workspace/lifecycle.js';
export {
  copyIn,
  copyOut,
  listArtifacts,
  getArtifact,
  parseGuestLocation,
  type CopyResult,
  type GuestLocation,
} from './workspace/files.js';
export { connectWorkspace, type ConnectOptions } from './workspace/connect.js';
export { buildImageRootfs } from './workspace/rootfs-build.js';
export type { ResolveImageOptions } from './workspace/image.js';
export type {
  WorkspaceRecord,
  WorkspaceEvent,
  WorkspaceState,
  Identity,
} from './workspace/record.js';
export {
  listWorkspaceSummaries as listWorkspaces,
  listWorkspaceSummaries,
  workspaceStatus,
  readLogs,
  followLogs,
  readEvents,
  followEvents,
  type WorkspaceStatus,
  type WorkspaceSummary,
  type DiskView,
  type Readiness,
  type ReadinessSignal,
} from './workspace/views.js';
export { workspaceNetwork, type NetworkView } from './workspace/network-view.js';
export {
  formatPublished,
  parseNetworkMode,
  type NetworkOptions,
  type NetworkSettings,
  type PublishedPort,
} from './workspace/network.js';
export type { ExecExit } from './guest/protocol.js';
export {
  PROFILES,
  DEFAULT_PROFILE,
  DISK_MIB_MIN,
  DISK_MIB_MAX,
  parseMemory,
  parseDiskSize,
  type ProfileName,
  type Resources,
} from './workspace/profiles.js';
export {
  validateWorkspaceName,
  generateRunName,
  WORKSPACE_NAME_PATTERN,
} from './workspace/names.js';
export {
  CPUS,
  MEMORY_MIB,
  DISK_MIB,
  MAX_WAIT_MS,
  CpusSchema,
  MemoryMiBSchema,
  DiskMiBSchema,
} from './limits.js';

// The spec file (microagent.yaml, docs/spec.md).
export {
  loadSpec,
  parseSpec,
  mergeSpecWithFlags,
  specToCreateOptions,
  specToRunOptions,
  SpecSchema,
  type Spec,
} from './spec/index.js';

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
  readDefaultKernelId,
  type KernelSource,
} from './kernel/index.js';
export { doctor, type DoctorReport, type DoctorCheck } from './doctor/doctor.js';
export { hostInfo, packageVersion, type HostInfo } from './doctor/host.js';
export { StatePaths, defaultStateDir, PACKAGE_ROOT } from './paths.js';
