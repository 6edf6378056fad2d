/* Stage 1 (/init in the initramfs): mount /dev /proc /sys, load the
 * modules, mount the ma-root disk, switch root, go on as PID 1. */
#include "log.h"
#include "mux.h"
#include "net.h"
#include "roles.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROOT_WAIT_MS 10000
#define MAX_MODULES 128

/* EXT4_IOC_RESIZE_FS (linux/ext4.h is not a uapi header everywhere). */
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A workspace's disk can be bigger than the image's file system (the host
 * sizes the disk by profile or --disk-size; docs/rootfs.md): grow the
 * mounted ext4 to fill it, online, as resize2fs would. Read from the
 * superblock, so a file system that already fills its disk costs one read.
 * A failure is logged and the boot goes on with the smaller file system. */
static void grow_root(const char *dev, const char *mnt)
{
	int fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		log_msg("grow root: open %s: %s", dev, strerror(errno));
		return;
	}
	uint64_t bytes = 0;
	uint8_t sb[1024];
	bool ok = ioctl(fd, BLKGETSIZE64, &bytes) == 0 && pread(fd, sb, sizeof sb, 1024) == (ssize_t)sizeof sb;
	close(fd);
	if (!ok || sb[56] != 0x53 || sb[57] != 0xef) {
		log_msg("grow root: cannot read the size of %s", dev);
		return;
	}
	uint32_t log_block = le32(sb + 24);
	if (log_block > 6)
		return;
	uint64_t block = 1024ull << log_block;
	uint64_t count = le32(sb + 4);
	if (le32(sb + 96) & 0x80) /* INCOMPAT_64BIT: the high half is valid */
		count |= (uint64_t)le32(sb + 0x150) << 32;
	uint64_t want = bytes / block;
	if (want <= count)
		return;
	int dir = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0 || ioctl(dir, EXT4_IOC_RESIZE_FS, &want) != 0)
		log_msg("grow root: resize %s from %llu to %llu blocks: %s", dev, (unsigned long long)count,
			(unsigned long long)want, strerror(errno));
	else
		log_debug("grew root from %llu to %llu blocks", (unsigned long long)count,
			  (unsigned long long)want);
	if (dir >= 0)
		close(dir);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The wave of a module file named LL-NN-<name>.ko (the initramfs builder's
 * moduleWaves); -1 for any other name. */
static int module_wave(const char *name)
{
	if (name[0] < '0' || name[0] > '9' || name[1] < '0' || name[1] > '9' || name[2] != '-')
		return -1;
	return (name[0] - '0') * 10 + (name[1] - '0');
}

static bool load_one(int fd, const char *name)
{
	if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
		log_msg("finit_module %s: %s", name, strerror(errno));
		return false;
	}
	log_debug("loaded %s", name);
	return true;
}

/* Loads modules [from, to) at once: all but the last in children of their
 * own. False when any failed. */
static bool load_wave(int *fds, char **names, int from, int to)
{
	pid_t kids[MAX_MODULES];
	int nkids = 0;
	bool ok = true;
	for (int i = from; i < to - 1; i++) {
		pid_t k = fork();
		if (k == 0)
			_exit(load_one(fds[i], names[i]) ? 0 : 1);
		if (k < 0) {
			ok = load_one(fds[i], names[i]) && ok; /* no fork: in line */
			continue;
		}
		kids[nkids++] = k;
	}
	ok = load_one(fds[to - 1], names[to - 1]) && ok;
	for (int i = 0; i < nkids; i++) {
		int st;
		while (waitpid(kids[i], &st, 0) < 0 && errno == EINTR) {
		}
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			ok = false;
	}
	return ok;
}

/*
 * Loads the .ko files in /modules in name order, wave by wave (LL-NN-<name>:
 * the initramfs builder puts each module in a later wave than everything it
 * depends on, so a wave's modules load in parallel), in a child process, and
 * returns its pid (0 when it loaded them itself): the root disk appears as
 * soon as virtio_blk is in, and is mounted while the console and network
 * drivers may still load. The PID 1 role that follows in this process waits
 * for the devices it needs (config disk, channel port, NIC) and reaps the
 * loader; a loader that fails logs why on the console.
 */
static pid_t load_modules(void)
{
	DIR *d = opendir("/modules");
	if (!d) {
		if (errno != ENOENT)
			fatal("opendir /modules: %s", strerror(errno));
		return 0;
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
		if (module_wave(de->d_name) < 0)
			fatal("/modules/%s: not named LL-NN-<name>.ko", de->d_name);
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
		for (int from = 0; from < n;) {
			int to = from + 1;
			while (to < n && module_wave(sorted[to]) == module_wave(sorted[from]))
				to++;
			if (!load_wave(fds, sorted, from, to)) {
				if (c == 0)
					_exit(1);
				fatal("cannot load the kernel modules");
			}
			from = to;
		}
		net_links_up();
		if (c == 0)
			_exit(0);
		for (int i = 0; i < n; i++)
			close(fds[i]);
		return 0;
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
	return c;
}

/* A loader that failed ends the boot at once (not after the root disk's
 * 10 s wait); one that finished is reaped here and no longer waited for. */
static void reap_failed_loader(pid_t *loader)
{
	int st;
	if (*loader <= 0 || waitpid(*loader, &st, WNOHANG) != *loader)
		return;
	*loader = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fatal("cannot load the kernel modules (see the lines above)");
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
	pid_t loader = load_modules();

	char dev[64];
	int64_t deadline = now_ms() + ROOT_WAIT_MS;
	while (find_disk_by_serial(ROOT_DISK_SERIAL, dev, sizeof dev) != 0) {
		reap_failed_loader(&loader);
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
		if (!retry_while_probing(deadline))
			fatal("mount %s (ext4) on /newroot: %s", dev, strerror(errno));
	}
	grow_root(dev, "/newroot");
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
	/* This same binary goes on as PID 1: exec'ing the rootfs copy would
	 * read ~0.9 MB from a cold disk (~70 ms under TCG), and the initramfs
	 * copy is the one the kernel manifest vouches for, so an older init
	 * inside a persistent workspace's disk never runs. Commands get their
	 * environment from the config disk, never from ours. The module
	 * loader may still be loading the console and network drivers. */
	log_debug("switched root; PID 1 role");
	return pid1_main();
}
