/* Stage 1 (/init in the initramfs): mount /dev /proc /sys, load the
 * modules, mount the ma-root disk, switch root, exec the PID 1 role. */
#include "log.h"
#include "mux.h"
#include "roles.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ROOT_WAIT_MS 10000
#define MAX_MODULES 128

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Loads the .ko files in /modules in name order (the initramfs builder numbers them in
 * dependency order) in a child process, and returns at once: the parent
 * only needs the root disk, which appears as soon as virtio_blk is in,
 * while the console and network drivers are still loading. The child keeps
 * the modules open, so the parent can switch root and exec PID 1 (whose
 * waits for the channel port and the NIC cover the rest); PID 1 reaps it.
 * A failure is logged on the console, where the wait that then times out
 * (root disk, channel) points to it.
 */
static void load_modules(void)
{
	DIR *d = opendir("/modules");
	if (!d) {
		if (errno != ENOENT)
			fatal("opendir /modules: %s", strerror(errno));
		return;
	}
	static char names[MAX_MODULES][256];
	static char *sorted[MAX_MODULES];
	static int fds[MAX_MODULES];
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (l < 4 || strcmp(de->d_name + l - 3, ".ko") != 0)
			continue;
		if (n == MAX_MODULES)
			fatal("more than %d modules in /modules", MAX_MODULES);
		strncpy(names[n], de->d_name, sizeof names[n] - 1);
		sorted[n] = names[n];
		n++;
	}
	closedir(d);
	qsort(sorted, (size_t)n, sizeof sorted[0], cmp_str);
	for (int i = 0; i < n; i++) {
		char path[300];
		snprintf(path, sizeof path, "/modules/%s", sorted[i]);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			fatal("open %s: %s", path, strerror(errno));
		/* The open descriptor keeps the data; the initramfs name can go. */
		if (unlink(path) != 0)
			log_debug("unlink %s: %s", path, strerror(errno));
	}
	pid_t c = fork();
	if (c < 0)
		log_msg("fork: %s; loading the modules in line", strerror(errno));
	if (c <= 0) {
		for (int i = 0; i < n; i++) {
			if (syscall(SYS_finit_module, fds[i], "", 0) != 0 && errno != EEXIST) {
				log_msg("finit_module %s: %s", sorted[i], strerror(errno));
				if (c == 0)
					_exit(1);
				fatal("cannot load the kernel modules");
			}
			close(fds[i]);
			log_debug("loaded %s", sorted[i]);
		}
		if (c == 0)
			_exit(0);
		return;
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

int stage1_main(void)
{
	if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") != 0 && errno != EBUSY)
		fatal("mount /dev: %s", strerror(errno));
	ensure_stdio();
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0 && errno != EBUSY)
		fatal("mount /proc: %s", strerror(errno));
	log_debug_enabled = cmdline_has("microagent.debug=1");
	log_debug("stage 1 start");
	if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0 && errno != EBUSY)
		fatal("mount /sys: %s", strerror(errno));
	load_modules();

	char dev[64];
	int64_t deadline = now_ms() + ROOT_WAIT_MS;
	while (find_disk_by_serial(ROOT_DISK_SERIAL, dev, sizeof dev) != 0) {
		if (now_ms() >= deadline)
			fatal("no root disk (virtio-blk serial %s) after %d ms", ROOT_DISK_SERIAL, ROOT_WAIT_MS);
		sleep_ms(2);
	}
	log_debug("root disk %s", dev);
	if (mkdir_p1("/newroot", 0755) != 0)
		fatal("cannot create /newroot");
	/* The disk shows in sysfs while virtio_blk's probe (in the module
	 * loader) is still adding it: until then opening it fails with ENXIO. */
	while (mount(dev, "/newroot", "ext4", 0, NULL) != 0) {
		if ((errno != ENXIO && errno != ENODEV && errno != ENOENT) || now_ms() >= deadline)
			fatal("mount %s (ext4) on /newroot: %s", dev, strerror(errno));
		sleep_ms(2);
	}
	if (mkdir_p1("/newroot/dev", 0755) != 0)
		fatal("cannot create /newroot/dev");
	if (mount("/dev", "/newroot/dev", NULL, MS_MOVE, NULL) != 0)
		fatal("move /dev: %s", strerror(errno));
	if (umount2("/proc", MNT_DETACH) != 0)
		log_msg("umount /proc: %s", strerror(errno));
	if (umount2("/sys", MNT_DETACH) != 0)
		log_msg("umount /sys: %s", strerror(errno));
	if (unlink("/init") != 0)
		log_debug("unlink /init: %s", strerror(errno));
	if (chdir("/newroot") != 0)
		fatal("chdir /newroot: %s", strerror(errno));
	if (mount(".", "/", NULL, MS_MOVE, NULL) != 0)
		fatal("move /newroot to /: %s", strerror(errno));
	if (chroot(".") != 0)
		fatal("chroot: %s", strerror(errno));
	if (chdir("/") != 0)
		fatal("chdir /: %s", strerror(errno));
	log_debug("switched root; exec /sbin/microagent-init");
	char *const argv[] = {"/sbin/microagent-init", NULL};
	char *const envp[] = {"PATH=" "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL};
	execve(argv[0], argv, envp);
	fatal("exec /sbin/microagent-init: %s", strerror(errno));
}
