/*
 * vmm-exec: exec a VMM so that it dies with the process that started it.
 *
 *   vmm-exec <program> [args...]
 *
 * The per-workspace monitor starts QEMU through this helper. It asks the
 * kernel to send SIGKILL when the parent (the monitor) dies
 * (PR_SET_PDEATHSIG survives execve), then execs the VMM. A VMM can therefore
 * never outlive its monitor, not even when the monitor is SIGKILLed.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: vmm-exec <program> [args...]\n");
		return 125;
	}
	pid_t parent = getppid();
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
