/**
 * Typed errors with stable codes. Every failure the library reports is a
 * MicroagentError (or a subclass) carrying a code from ERROR_CODES, a kind
 * that tells callers how to react, and a remediation that says what to do.
 * docs/errors.md lists every code; changing one is a breaking change.
 */

/** How a caller should react to a failure. */
export type ErrorKind =
  | 'usage' // the request itself is wrong; fix the arguments
  | 'not_found'
  | 'conflict' // wrong state for this operation
  | 'unsupported'
  | 'policy_denied' // refused on purpose (verification, fail closed)
  | 'resource_exhausted'
  | 'transient' // retrying unchanged may work
  | 'permanent'; // the operation ran and failed

export const ERROR_CODES = {
  USAGE: { kind: 'usage', remediation: 'Run `microagent help` for the command synopsis.' },
  INVALID_ARGUMENT: { kind: 'usage', remediation: 'Correct the named argument and retry.' },
  INVALID_NAME: {
    kind: 'usage',
    remediation:
      'Use 1-63 characters: a letter or digit first, then letters, digits, ".", "_" or "-".',
  },
  HOST_TOOL_MISSING: {
    kind: 'unsupported',
    remediation: 'Run `npm run setup` in the microagent checkout, or install the named package.',
  },
  HOST_TOOL_FAILED: { kind: 'permanent', remediation: 'Read the tool stderr in the message.' },
  KERNEL_NOT_INSTALLED: {
    kind: 'not_found',
    remediation: 'Run `microagent kernel install`.',
  },
  KERNEL_INSTALL_FAILED: {
    kind: 'permanent',
    remediation: 'Check the source named in the message and retry `microagent kernel install`.',
  },
  KERNEL_VERIFY_FAILED: {
    kind: 'policy_denied',
    remediation:
      'The kernel files no longer match their manifest. Reinstall with `microagent kernel install --force` if you did not change them on purpose.',
  },
  KERNEL_CHECKSUM_MISMATCH: {
    kind: 'policy_denied',
    remediation: 'The file does not have the SHA-256 you gave. Check the source and the digest.',
  },
  KERNEL_INVALID: {
    kind: 'permanent',
    remediation: 'Use an x86-64 Linux kernel image (ELF vmlinux or bzImage).',
  },
  KERNEL_BUSY: {
    kind: 'transient',
    remediation:
      'Another microagent process is installing or updating this kernel; retry when it has finished.',
  },
  INTERRUPTED: {
    kind: 'permanent',
    remediation:
      'The caller cancelled the operation (Ctrl-C, SIGTERM or an aborted request) before the guest command started; nothing was left running. Run it again.',
  },
  GUEST_INIT_MISSING: {
    kind: 'unsupported',
    remediation: 'Build it with `npm run build` in the microagent checkout.',
  },
  IMAGE_NOT_FOUND: {
    kind: 'not_found',
    remediation:
      'Check the image name, tag or digest (and the registry host); `microagent image list` shows the images pulled already.',
  },
  IMAGE_BUSY: {
    kind: 'transient',
    remediation:
      'Another microagent process holds the image cache lock for too long; retry when it has finished.',
  },
  REGISTRY_AUTH_FAILED: {
    kind: 'policy_denied',
    remediation:
      'Log in to the registry (`docker login HOST`), or fix the credentials in the Docker config file or credential helper named in the message.',
  },
  REGISTRY_UNREACHABLE: {
    kind: 'transient',
    remediation:
      'Check the network, the registry host and port, and any proxy; images already pulled keep working offline.',
  },
  REGISTRY_ERROR: {
    kind: 'permanent',
    remediation: 'The registry answered with an error; read the status and message it sent.',
  },
  INSECURE_REGISTRY_REFUSED: {
    kind: 'policy_denied',
    remediation:
      'Use https, or add the host to insecureRegistries if you trust the network path (plain http is allowed for loopback hosts only).',
  },
  MANIFEST_DIGEST_MISMATCH: {
    kind: 'policy_denied',
    remediation:
      'The registry served a manifest whose content does not match its digest; check the digest you asked for and the registry (or a proxy in between).',
  },
  BLOB_DIGEST_MISMATCH: {
    kind: 'policy_denied',
    remediation:
      'The registry served a blob whose content does not match its digest, twice; nothing was cached. Check the registry or a proxy in between.',
  },
  UNSUPPORTED_MEDIA_TYPE: {
    kind: 'unsupported',
    remediation:
      'microagent pulls OCI and Docker schema 2 container images (gzip, zstd or uncompressed layers); push the image in one of those formats.',
  },
  PLATFORM_NOT_FOUND: {
    kind: 'not_found',
    remediation: 'Pick one of the listed platforms with --platform os/arch[/variant].',
  },
  IMAGE_BUILD_FAILED: { kind: 'permanent', remediation: 'Read the tool stderr in the message.' },
  LAYER_INVALID: {
    kind: 'permanent',
    remediation:
      'The image layer is not a valid tar stream (corrupt or truncated blob); pull the image again.',
  },
  LAYER_UNSUPPORTED: {
    kind: 'unsupported',
    remediation: 'Use an image whose layers are tar, tar+gzip or tar+zstd.',
  },
  ROOTFS_BUILD_FAILED: {
    kind: 'permanent',
    remediation: 'Read the tool stderr in the message; `microagent doctor` checks e2fsprogs.',
  },
  ROOTFS_TOO_SMALL: {
    kind: 'usage',
    remediation: 'Give a larger disk size, or leave it unset to size the disk from the image.',
  },
  DISK_FULL: {
    kind: 'resource_exhausted',
    remediation:
      'Free space on the file system that holds the state directory (`microagent image prune`), then retry.',
  },
  BASELINE_BUSY: {
    kind: 'transient',
    remediation: 'Another microagent process is building this rootfs; retry when it has finished.',
  },
  BASELINE_NOT_FOUND: {
    kind: 'not_found',
    remediation: 'List the cached rootfs baselines and use one of their keys.',
  },
  WORKSPACE_NOT_FOUND: {
    kind: 'not_found',
    remediation: 'Run `microagent list` to see the workspaces in this state directory.',
  },
  WORKSPACE_EXISTS: {
    kind: 'conflict',
    remediation: 'Pick another --name, or delete the existing workspace first.',
  },
  WORKSPACE_BUSY: {
    kind: 'conflict',
    remediation: 'Another microagent process holds this workspace; retry when it has finished.',
  },
  WORKSPACE_RUNNING: {
    kind: 'conflict',
    remediation: 'Halt or stop the workspace first.',
  },
  WORKSPACE_NOT_RUNNING: {
    kind: 'conflict',
    remediation: 'Start the workspace first: microagent start NAME.',
  },
  WORKSPACE_PAUSED: {
    kind: 'conflict',
    remediation: 'Resume the workspace first: microagent resume NAME.',
  },
  WORKSPACE_NOT_PAUSED: {
    kind: 'conflict',
    remediation: 'Only a paused workspace can be resumed.',
  },
  VERIFICATION_FAILED: {
    kind: 'policy_denied',
    remediation:
      'The kernel, initramfs, guest init or image differ from what was recorded at create; see the divergence list. Recreate the workspace if the change is expected.',
  },
  SETUP_FAILED: {
    kind: 'permanent',
    remediation: 'The --setup command failed in the guest; its output is in the message.',
  },
  STOP_TIMEOUT: {
    kind: 'transient',
    remediation:
      'The guest did not stop in time and the workspace is marked failed; end it with microagent kill NAME.',
  },
  RESULT_NOT_READY: {
    kind: 'not_found',
    remediation:
      'No result was recorded yet; run a command with `run --keep` or wait for the workspace.',
  },
  ARTIFACT_NOT_FOUND: {
    kind: 'not_found',
    remediation: 'List the declared outputs with microagent artifacts NAME.',
  },
  MUTABLE_REFERENCE: {
    kind: 'usage',
    remediation: 'Pin the image by digest (NAME@sha256:...), or pass --allow-mutable.',
  },
  STATE_CORRUPT: {
    kind: 'permanent',
    remediation: 'The state file cannot be read; inspect it, or delete the workspace.',
  },
  STATE_DIR_INVALID: {
    kind: 'usage',
    remediation: 'Choose a shorter --state-dir that you own (sockets need paths under 108 bytes).',
  },
  SUPERVISOR_FAILED: {
    kind: 'permanent',
    remediation: 'Read the supervisor stderr in the message; `microagent doctor` checks the host.',
  },
  SUPERVISOR_PROTOCOL: {
    kind: 'permanent',
    remediation: 'The supervisor answered something microagent cannot read; check its version.',
  },
  VMM_START_FAILED: {
    kind: 'permanent',
    remediation: 'Run `microagent doctor`; the serial console tail is in the message.',
  },
  BOOT_FAILED: {
    kind: 'permanent',
    remediation:
      'The guest stopped before it was ready; the serial console tail is in the message.',
  },
  BOOT_TIMEOUT: {
    kind: 'transient',
    remediation:
      'The guest did not become ready in time; on a loaded host raise --boot-timeout, or check the console tail.',
  },
  VM_EXITED: {
    kind: 'permanent',
    remediation: 'The VM stopped while the operation ran; see the serial console tail.',
  },
  VM_RUNNING: {
    kind: 'conflict',
    remediation: 'This VM is already running; stop it first (`microagent stop`).',
  },
  VM_NOT_RUNNING: {
    kind: 'conflict',
    remediation: 'The VM is not running; check `microagent status`, then start it.',
  },
  GUEST_PROTOCOL: {
    kind: 'permanent',
    remediation: 'The guest init answered something unexpected; rebuild it with `npm run build`.',
  },
  GUEST_CHANNEL_UNAVAILABLE: {
    kind: 'transient',
    remediation: 'The workspace is not running or its monitor is gone; check `microagent status`.',
  },
  EXEC_FAILED: { kind: 'permanent', remediation: 'See the message for the guest error.' },
  GUEST_FILE_NOT_FOUND: {
    kind: 'not_found',
    remediation:
      'Check the guest path (absolute, e.g. /root/file); to write a file its parent directory must already exist in the guest (create it with exec, e.g. `mkdir -p`).',
  },
  GUEST_FILE_ERROR: {
    kind: 'permanent',
    remediation:
      'See data.guestCode: is_directory or not_regular (only regular files can be copied; name the file, not its directory), permission_denied (ownership, mode or a read-only file system in the guest), io_error (e.g. the guest disk is full), invalid_request (a path or size problem; the message says which).',
  },
  OFFLINE_COPY_FAILED: {
    kind: 'permanent',
    remediation:
      'Copying through the stopped workspace disk failed and the disk was left unchanged; read the tool output in the message (qemu-img, debugfs, e2fsck). Starting the workspace and copying through the running guest avoids the disk tools.',
  },
  IDEMPOTENCY_CONFLICT: {
    kind: 'conflict',
    remediation:
      'This idempotency_key was used within the last 15 minutes with different arguments; use a new key for a new request, or repeat the original arguments to get the original answer.',
  },
  SPEC_INVALID: {
    kind: 'usage',
    remediation:
      'Fix the microagent.yaml field at the line named in the message; docs/spec.md lists every field.',
  },
  PORT_IN_USE: {
    kind: 'conflict',
    remediation:
      'Another process (or workspace) listens on that host address and port; pick another host port with -p HOSTPORT:GUESTPORT, or stop the other listener.',
  },
  INTERNAL: {
    kind: 'permanent',
    remediation: 'This is a bug in microagent; please report it with the message.',
  },
} as const satisfies Record<string, { kind: ErrorKind; remediation: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface MicroagentErrorOptions {
  /** Overrides the code's default remediation. */
  remediation?: string;
  /** Structured facts about the failure (argv, exit code, console tail, ...). */
  data?: Record<string, unknown>;
  cause?: unknown;
}

export class MicroagentError extends Error {
  override readonly name: string = 'MicroagentError';
  readonly code: ErrorCode;
  readonly kind: ErrorKind;
  readonly remediation: string;
  readonly data: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: MicroagentErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.kind = ERROR_CODES[code].kind;
    this.remediation = options.remediation ?? ERROR_CODES[code].remediation;
    this.data = options.data ?? {};
  }

  get retryable(): boolean {
    return this.kind === 'transient';
  }

  /** The documented wire shape of an error (AX output, MCP, supervisor). */
  toJSON(): SerializedError {
    return {
      code: this.code,
      kind: this.kind,
      message: this.message,
      remediation: this.remediation,
      retryable: this.retryable,
      ...(Object.keys(this.data).length > 0 ? { data: this.data } : {}),
    };
  }
}

export interface SerializedError {
  code: string;
  kind: ErrorKind;
  message: string;
  remediation: string;
  retryable: boolean;
  data?: Record<string, unknown>;
}

/** An error that came over a wire (supervisor, guest) rather than from this process. */
export class RemoteError extends MicroagentError {
  override readonly name: string = 'RemoteError';
  readonly origin: 'supervisor' | 'guest';

  constructor(
    origin: 'supervisor' | 'guest',
    code: ErrorCode,
    message: string,
    options: MicroagentErrorOptions = {},
  ) {
    super(code, message, options);
    this.origin = origin;
  }
}

/** Rebuilds a typed error from its wire shape; unknown codes become INTERNAL. */
export function errorFromJSON(origin: 'supervisor' | 'guest', value: SerializedError): RemoteError {
  const code = (value.code in ERROR_CODES ? value.code : 'INTERNAL') as ErrorCode;
  return new RemoteError(origin, code, value.message, {
    remediation: value.remediation,
    data: value.data ?? {},
  });
}

export function isMicroagentError(err: unknown): err is MicroagentError {
  return err instanceof MicroagentError;
}

/** Wraps anything thrown into a MicroagentError, keeping typed ones as they are. */
export function toMicroagentError(err: unknown): MicroagentError {
  if (err instanceof MicroagentError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new MicroagentError('INTERNAL', message, { cause: err });
}
