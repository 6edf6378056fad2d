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
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			fatal("open %s: %s", path, strerror(errno));
		if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)
			fatal("finit_module %s: %s", path, strerror(errno));
		close(fd);
		log_debug("loaded %s", sorted[i]);
		/* The initramfs copy is no longer needed. */
		if (unlink(path) != 0)
			log_debug("unlink %s: %s", path, strerror(errno));
	}
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
	log_debug("modules loaded");

	char dev[64];
	int64_t deadline = now_ms() + ROOT_WAIT_MS;
	while (find_disk_by_serial(ROOT_DISK_SERIAL, dev, sizeof dev) != 0) {
		if (now_ms() >= deadline)
			fatal("no root disk (virtio-blk serial %s) after %d ms", ROOT_DISK_SERIAL, ROOT_WAIT_MS);
		sleep_ms(10);
	}
	log_debug("root disk %s", dev);
	if (mkdir_p1("/newroot", 0755) != 0)
		fatal("cannot create /newroot");
	if (mount(dev, "/newroot", "ext4", 0, NULL) != 0)
		fatal("mount %s (ext4) on /newroot: %s", dev, strerror(errno));
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
