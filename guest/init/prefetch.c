/* Page-cache warm-up for the first command (prefetch.h). */
#include "prefetch.h"
#include "exec.h"
#include "log.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A regular file (with an execute bit when exec needs one); never a FIFO
 * (an open could block) or a device (a read could have side effects). */
static int open_regular(const char *file, bool executable)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (executable && !(st.st_mode & 0111))) {
		close(fd);
		return -1;
	}
	return fd;
}

int prefetch_open(const char *name, const char *path)
{
	if (name[0] == '\0')
		return -1;
	if (strchr(name, '/'))
		return name[0] == '/' ? open_regular(name, true) : -1;
	for (const char *p = path; p;) {
		char buf[4096];
		/* An empty PATH element is the cwd: a first command's is "/" or its own;
		 * not worth guessing. */
		if (path_next(&p, name, buf, sizeof buf) <= 0)
			continue;
		int fd = open_regular(buf, true);
		if (fd >= 0)
			return fd;
	}
	return -1;
}

int prefetch_interp(int fd, char *out, size_t cap)
{
	Elf64_Ehdr eh;
	if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum > 64)
		return -1;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + i * sizeof ph)) != (ssize_t)sizeof ph)
			return -1;
		if (ph.p_type != PT_INTERP)
			continue;
		if (ph.p_filesz < 2 || ph.p_filesz > cap)
			return -1;
		if (pread(fd, out, ph.p_filesz, (off_t)ph.p_offset) != (ssize_t)ph.p_filesz)
			return -1;
		if (out[ph.p_filesz - 1] != '\0' || out[0] != '/' || strlen(out) != ph.p_filesz - 1)
			return -1;
		return 0;
	}
	return -1;
}

static void read_through(int fd)
{
	static char buf[128 * 1024];
	long total = 0;
	ssize_t n;
	while (total < PREFETCH_MAX_BYTES && ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)))
		if (n > 0)
			total += n;
}

void prefetch_start(const char *const *names, size_t n, const char *path)
{
	if (n == 0)
		return;
	pid_t c = fork();
	if (c < 0)
		log_msg("fork: %s; no prefetch", strerror(errno));
	if (c != 0)
		return;
	/* PID 1 blocks these for its signalfd: the power-off's SIGTERM must end
	 * a prefetch still reading. */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (size_t i = 0; i < n; i++) {
		int fd = prefetch_open(names[i], path);
		if (fd < 0) {
			log_debug("prefetch %s: not found", names[i]);
			continue;
		}
		char interp[256];
		bool has_interp = prefetch_interp(fd, interp, sizeof interp) == 0;
		read_through(fd);
		close(fd);
		if (has_interp) {
			int ifd = open_regular(interp, false);
			if (ifd >= 0) {
				read_through(ifd);
				close(ifd);
			}
		}
		log_debug("prefetched %s%s%s", names[i], has_interp ? " and " : "", has_interp ? interp : "");
	}
	_exit(0);
}
