/*
 * vmm-exec: exec a VMM so that it dies with the process that started it.
 *
 *   vmm-exec <program> [args...]
 *
 * The per-workspace monitor starts QEMU through this helper. It asks the
 * kernel to send SIGKILL when the parent (the monitor) dies
 * (PR_SET_PDEATHSIG survives execve), then execs the VMM. A VMM can therefore
 * never outlive its monitor, not even when the monitor is SIGKILLed.
 *
 * MICROAGENT_VMM_PARENT=<pid> in the environment names the parent; it is
 * removed before the exec. Without it the parent is whoever getppid()
 * says at start, which misses a parent that died before this program ran.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define PARENT_ENV "MICROAGENT_VMM_PARENT"

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: vmm-exec <program> [args...]\n");
		return 125;
	}
	/* The parent names itself (MICROAGENT_VMM_PARENT): a parent that died
	 * even before this program started (between its fork and our exec)
	 * is then caught too, where comparing getppid() before and after
	 * prctl would see the reaper both times. */
	pid_t parent = getppid();
	const char *named = getenv(PARENT_ENV);
	if (named != NULL) {
		char *end;
		long v = strtol(named, &end, 10);
		if (*named == 0 || *end != 0 || v <= 0) {
			fprintf(stderr, "vmm-exec: %s=%s is not a pid\n", PARENT_ENV, named);
			return 125;
		}
		parent = (pid_t)v;
		unsetenv(PARENT_ENV); /* not the VMM's business */
	}
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
		fprintf(stderr, "vmm-exec: prctl: %s\n", strerror(errno));
		return 125;
	}
	/* The parent may have died before prctl took effect: then we were
	 * reparented and must not start the VMM at all. */
	if (getppid() != parent) {
		fprintf(stderr, "vmm-exec: parent exited before start\n");
		return 125;
	}
	execv(argv[1], &argv[1]);
	fprintf(stderr, "vmm-exec: %s: %s\n", argv[1], strerror(errno));
	return errno == ENOENT ? 127 : 126;
}
