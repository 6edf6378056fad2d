/* Small syscall helpers shared by both init roles. */
#include "util.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;
	if (clock_gettime(id, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_ms(void) { return clock_ms(CLOCK_MONOTONIC); }
int64_t boottime_ms(void) { return clock_ms(CLOCK_BOOTTIME); }

int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

bool retry_while_probing(int64_t deadline)
{
	if ((errno != ENXIO && errno != ENODEV && errno != ENOENT) || now_ms() >= deadline)
		return false;
	sleep_ms(2);
	return true;
}

int rewrite_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	int rc = write_all(fd, data, len) == 0 && ftruncate(fd, (off_t)len) == 0 ? 0 : -1;
	int saved = errno;
	if (close(fd) != 0 && rc == 0)
		return -1;
	errno = saved;
	return rc;
}

int publish_file(const char *path, const void *data, size_t len)
{
	struct stat st;
	const char *base = strrchr(path, '/');
	char run_copy[256];
	if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) &&
	    snprintf(run_copy, sizeof run_copy, "%s/%s", RUN_FILES_DIR, base ? base + 1 : path) <
		    (int)sizeof run_copy) {
		if (mkdir(RUN_FILES_DIR, 0755) != 0 && errno != EEXIST)
			log_msg("mkdir %s: %s", RUN_FILES_DIR, strerror(errno));
		else if (rewrite_file(run_copy, data, len, 0644) != 0)
			log_msg("write %s: %s", run_copy, strerror(errno));
		else if (mount(run_copy, path, NULL, MS_BIND, NULL) != 0)
			log_msg("bind %s over %s: %s", run_copy, path, strerror(errno));
		else
			return 0;
	}
	return rewrite_file(path, data, len, 0644);
}

ssize_t read_full(int fd, void *buf, size_t cap)
{
	size_t have = 0;
	while (have < cap) {
		ssize_t n = read(fd, (char *)buf + have, cap - have);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		have += (size_t)n;
	}
	return (ssize_t)have;
}

ssize_t read_text_file(const char *path, char *buf, size_t cap)
{
	if (cap == 0) {
		errno = EINVAL;
		return -1;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read_full(fd, buf, cap - 1);
	int saved = errno;
	close(fd);
	if (n < 0) {
		errno = saved;
		return -1;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	buf[n] = 0;
	return n;
}

bool cmdline_has(const char *word)
{
	static char cmdline[4096];
	if (read_text_file("/proc/cmdline", cmdline, sizeof cmdline) < 0)
		return false;
	size_t wl = strlen(word);
	const char *p = cmdline;
	while (*p) {
		while (*p == ' ' || *p == '\n')
			p++;
		const char *e = p;
		while (*e && *e != ' ' && *e != '\n')
			e++;
		if ((size_t)(e - p) == wl && memcmp(p, word, wl) == 0)
			return true;
		p = e;
	}
	return false;
}

int find_disk_by_serial(const char *serial, char *dev, size_t cap)
{
	DIR *d = opendir("/sys/block");
	if (!d)
		return -1;
	int found = -1;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, "vd", 2) != 0)
			continue;
		char path[300], val[128];
		snprintf(path, sizeof path, "/sys/block/%s/serial", de->d_name);
		if (read_text_file(path, val, sizeof val) < 0 || strcmp(val, serial) != 0)
			continue;
		char node[300];
		snprintf(node, sizeof node, "/dev/%s", de->d_name);
		/* sysfs can be a moment ahead of the devtmpfs node. */
		if (access(node, F_OK) != 0)
			continue;
		if (strlen(node) + 1 > cap)
			continue;
		strcpy(dev, node);
		found = 0;
		break;
	}
	closedir(d);
	return found;
}

int mkdir_p1(const char *path, mode_t mode)
{
	if (mkdir(path, mode) != 0 && errno != EEXIST) {
		log_msg("mkdir %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}
