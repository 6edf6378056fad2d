/**
 * Which VmBackend the workspace layer uses: chosen here and nowhere else.
 * The built-in QEMU supervisor runs in this process (the same code its
 * executable runs: one Node start-up less per start/stop, ~60-100 ms each,
 * and `run` can host its VM's monitor in-process). MICROAGENT_QEMU_SUPERVISOR
 * (another supervisor executable) or MICROAGENT_SUPERVISOR_EXEC=1 (this
 * build's) goes through the executable and its JSON protocol instead.
 */
import { errorFromJSON } from '../errors.js';
import { BUILD } from '../paths.js';
import { SupervisorBackend, type VmBackend } from '../vmkit/backend.js';
import { callSupervisor } from '../vmkit/client.js';
import { StartResultSchema, StatusResultSchema } from '../vmkit/schema.js';

function useSupervisorExecutable(): boolean {
  return (
    (process.env.MICROAGENT_QEMU_SUPERVISOR !== undefined &&
      process.env.MICROAGENT_QEMU_SUPERVISOR !== '') ||
    process.env.MICROAGENT_SUPERVISOR_EXEC === '1'
  );
}

/** The supervisor executable: pinned to this build, overridable for other backends. */
export function supervisorPath(): string {
  return process.env.MICROAGENT_QEMU_SUPERVISOR || BUILD.qemuSupervisor;
}

const inProcessBackend = new SupervisorBackend(
  async (request) => {
    const { handleRequest } = await import('../supervisors/qemu/supervisor.js');
    const { response } = await handleRequest(request);
    if (!response.ok) throw errorFromJSON('supervisor', response.error);
    return request.command === 'start'
      ? StartResultSchema.parse(response)
      : StatusResultSchema.parse(response);
  },
  async (request) => {
    const { startInProcess } = await import('../supervisors/qemu/supervisor.js');
    const { result, monitor } = await startInProcess(request);
    return {
      accel: result.accel,
      accelReason: result.accelReason,
      monitorPid: result.monitorPid,
      qemuPid: result.qemuPid,
      monitorDone: monitor.done,
      kill: () => monitor.killAndWait(),
    };
  },
);

let override: VmBackend | undefined;

/** The backend for this process's workspaces (read per call: the env may change). */
export function vmBackend(): VmBackend {
  if (override) return override;
  if (useSupervisorExecutable()) {
    return new SupervisorBackend((request, timeoutMs) =>
      callSupervisor(supervisorPath(), request, { timeoutMs }),
    );
  }
  return inProcessBackend;
}

/** Tests: use this backend (a fake) instead of the real one; undefined restores it. */
export function setVmBackend(backend: VmBackend | undefined): void {
  override = backend;
}
