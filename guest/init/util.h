/* Small syscall helpers shared by both init roles. */
#ifndef MA_UTIL_H
#define MA_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* CLOCK_MONOTONIC / CLOCK_BOOTTIME in milliseconds. */
int64_t now_ms(void);
int64_t boottime_ms(void);

/* write()/read() the whole buffer, retrying on EINTR. 0 or -1 (errno set). */
int write_all(int fd, const void *buf, size_t len);
/* After a failed open or mount of a device: true (having slept 2 ms) when
 * errno says its driver may still be probing it (ENXIO, ENODEV, ENOENT) and
 * the deadline has not passed, so the caller tries again; false with errno
 * kept otherwise. Stage 1 loads drivers in the background. */
bool retry_while_probing(int64_t deadline);
/* Replaces the content of a small file (created with mode if missing):
 * overwritten in place, then cut to len. Not O_TRUNC: on ext4 a file
 * truncated to zero and rewritten is flushed to disk at close
 * (auto_da_alloc), ~10 ms at boot under TCG. 0 or -1 (errno set). */
int rewrite_file(const char *path, const void *data, size_t len, mode_t mode);

/* Where publish_file keeps its per-boot copies (on /run, a tmpfs). */
#define RUN_FILES_DIR "/run/microagent-etc"

/* Gives path (a per-boot file such as /etc/resolv.conf) the content data:
 * when path is a regular file, a copy on RUN_FILES_DIR (same base name) is bind-
 * mounted over it, so the boot writes nothing to the root disk (~10 ms
 * under TCG) and a read-only root gets it too; otherwise (missing, a
 * symbolic link) path is written as rewrite_file does. 0 or -1 (errno). */
int publish_file(const char *path, const void *data, size_t len);

/* Reads up to cap bytes until EOF; returns the count or -1. */
ssize_t read_full(int fd, void *buf, size_t cap);
/* Reads a small text file into buf (NUL-terminated, trailing newlines cut).
 * Returns the length or -1 (errno set; no log: callers probe with it). */
ssize_t read_text_file(const char *path, char *buf, size_t cap);

/* Whether the kernel command line has this exact word (e.g. "microagent.debug=1"). */
bool cmdline_has(const char *word);

/* Finds /sys/block/vd* whose serial is `serial`; writes "/dev/vdX" into dev.
 * 0 if found, -1 if not (no log). */
int find_disk_by_serial(const char *serial, char *dev, size_t cap);

/* mkdir that tolerates EEXIST; logs failures. */
int mkdir_p1(const char *path, mode_t mode);

void sleep_ms(int ms);

#endif
