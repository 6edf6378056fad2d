/* microagent-init: argv[0] "/init" is stage 1 (initramfs), anything else
 * is PID 1 in the root file system. */
#include "roles.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	(void)argc;
	if (getpid() != 1) {
		fprintf(stderr, "microagent-init: must run as PID 1 (the guest init)\n");
		return 1;
	}
	if (argv[0] && strcmp(argv[0], "/init") == 0)
		return stage1_main();
	return pid1_main();
}
