/* prefetch_open / prefetch_interp: what exec would run, never anything else. */
#include "prefetch.h"
#include "test.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void put(const char *path, const char *data, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0 || write(fd, data, strlen(data)) != (ssize_t)strlen(data) || close(fd) != 0)
		abort();
	chmod(path, mode);
}

/* The inode of an opened fd, to tell which file prefetch_open chose. */
static ino_t ino_of(int fd)
{
	struct stat st;
	return fd >= 0 && fstat(fd, &st) == 0 ? st.st_ino : 0;
}

static ino_t ino_at(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_ino : 0;
}

void test_prefetch(void)
{
	char dir[] = "/tmp/ma-prefetch-XXXXXX";
	if (!mkdtemp(dir))
		abort();
	char a[256], b[256], p[600], f[300];
	snprintf(a, sizeof a, "%s/a", dir);
	snprintf(b, sizeof b, "%s/b", dir);
	mkdir(a, 0755);
	mkdir(b, 0755);
	/* a/tool is not executable, b/tool is: PATH order skips a's. */
	snprintf(f, sizeof f, "%s/tool", a);
	put(f, "x", 0644);
	snprintf(f, sizeof f, "%s/tool", b);
	put(f, "y", 0755);
	snprintf(f, sizeof f, "%s/fifo", a);
	mkfifo(f, 0755);
	snprintf(f, sizeof f, "%s/sub", b);
	mkdir(f, 0755);
	snprintf(p, sizeof p, ":%s:%s", a, b);

	int fd = prefetch_open("tool", p);
	snprintf(f, sizeof f, "%s/tool", b);
	CHECK(fd >= 0 && ino_of(fd) == ino_at(f), "tool found in the second PATH entry");
	close(fd);
	CHECK(prefetch_open("fifo", p) < 0, "a FIFO is never opened (it could block)");
	CHECK(prefetch_open("sub", p) < 0, "a directory is skipped");
	CHECK(prefetch_open("missing", p) < 0, "a missing name");
	CHECK(prefetch_open("", p) < 0, "an empty name");
	CHECK(prefetch_open("b/tool", p) < 0, "a relative path is not guessed");
	fd = prefetch_open(f, "");
	CHECK(fd >= 0 && ino_of(fd) == ino_at(f), "an absolute path as is");
	close(fd);
	snprintf(f, sizeof f, "%s/tool", a);
	CHECK(prefetch_open(f, "") < 0, "an absolute path without an execute bit");

	/* This test binary is a dynamic ELF (unlike the static init): its PT_INTERP. */
	char interp[256];
	fd = open("/proc/self/exe", O_RDONLY);
	CHECK(prefetch_interp(fd, interp, sizeof interp) == 0 && interp[0] == '/' && strstr(interp, "ld-"),
	      "PT_INTERP of a dynamic executable: %s", interp);
	CHECK(prefetch_interp(fd, interp, 4) < 0, "an interpreter longer than the buffer");
	close(fd);
	snprintf(f, sizeof f, "%s/tool", b);
	fd = open(f, O_RDONLY);
	CHECK(prefetch_interp(fd, interp, sizeof interp) < 0, "not an ELF");
	close(fd);

	/* The child reads what it finds, skips the rest, and exits 0. */
	const char *names[] = {"tool", "fifo", "missing", "/proc/self/exe"};
	prefetch_start(names, 4, p);
	int st = -1;
	CHECK(wait(&st) > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "prefetch child exit status %d", st);

	snprintf(f, sizeof f, "rm -rf '%s'", dir);
	if (system(f) != 0)
		abort();
}
