/*
 * janitor: removes a throwaway workspace's folder when the process that
 * runs the workspace dies without removing it itself.
 *
 *   janitor <absolute dir>        (stdin: a pipe from that process)
 *
 * `microagent run` hosts its VM's monitor in its own process. The VM dies
 * with that process (PR_SET_PDEATHSIG through vmm-exec), but a run that is
 * SIGKILLed cannot delete its folder. The janitor, started detached, blocks
 * on its stdin: a byte means "done, nothing to do"; end of file without one
 * means the run died, and the folder goes.
 *
 * It opens the folder at start and removes it only if the path still names
 * that same folder (device and inode), so a folder made later under the
 * same name (a new workspace) is never touched. Symbolic links are removed,
 * never followed, and the walk stays on one file system.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	int rc = type == FTW_DP ? rmdir(path) : unlink(path);
	if (rc != 0 && errno != ENOENT)
		fprintf(stderr, "janitor: remove %s: %s\n", path, strerror(errno));
	return 0; /* best effort: keep going */
}

int main(int argc, char **argv)
{
	if (argc != 2 || argv[1][0] != '/' || strcmp(argv[1], "/") == 0) {
		fprintf(stderr, "usage: janitor <absolute dir other than />  (stdin: the owner's pipe)\n");
		return 2;
	}
	const char *dir = argv[1];
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	struct stat held;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0 || fstat(dfd, &held) != 0) {
		fprintf(stderr, "janitor: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	char c;
	ssize_t n;
	do
		n = read(0, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n == 1)
		return 0; /* the owner cleaned up (or kept the folder) */
	struct stat now;
	if (lstat(dir, &now) != 0 || !S_ISDIR(now.st_mode) || now.st_dev != held.st_dev ||
	    now.st_ino != held.st_ino)
		return 0; /* gone already, or another folder now: not ours to remove */
	nftw(dir, remove_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	return 0;
}
