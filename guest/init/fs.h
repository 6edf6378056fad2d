/* File transfer service pieces that need no event loop: request validation,
 * the stat/done/error JSON, and the file operations behind read and write
 * (docs/protocol.md §6). The per-stream state machine is in session.c. */
#ifndef MA_FS_H
#define MA_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "json.h"

#include "protocol.h" /* FK_* kinds, FS_MAX_PATH */

#define FS_ID_NONE UINT32_MAX

enum fs_error {
	FSE_NONE,
	FSE_NOT_FOUND,
	FSE_IS_DIRECTORY,
	FSE_NOT_REGULAR,
	FSE_PERMISSION_DENIED,
	FSE_IO_ERROR,
	FSE_INVALID_REQUEST,
};

enum fs_op { FS_READ, FS_WRITE };

struct fs_req {
	enum fs_op op;
	const char *path; /* absolute, no NUL (points into the arena) */
	uint32_t mode;	  /* write: permission bits (<= 07777) */
	uint32_t uid, gid; /* write: FS_ID_NONE when absent */
	uint64_t size;	   /* write: exact byte count that follows */
};

/* Validates the first (and only) JSON message of an fs stream. */
int fs_parse_request(const char *json, size_t len, struct jarena *a, struct fs_req *r, char *err,
		     size_t errlen);

/* The JSON payloads (no header). Length or -1 if cap is too small. */
long fs_format_stat(uint64_t size, uint32_t mode, uint32_t uid, uint32_t gid, char *buf, size_t cap);
long fs_format_done(uint64_t bytes, char *buf, size_t cap);
/* An over-long message is cut so that the result always fits a cap >= 256. */
long fs_format_error(enum fs_error code, const char *message, char *buf, size_t cap);
const char *fs_error_name(enum fs_error code);

/* The fs error for a failed open/rename/write errno. */
enum fs_error fs_error_from_errno(int e);

/* Opens a regular file for reading. 0 with *fd and *st; -1 with the error
 * code and a message. Never opens a device or FIFO. */
int fs_open_read(const char *path, int *fd, struct stat *st, enum fs_error *code, char *msg, size_t msglen);

/* A write in progress: a temp file next to the target. */
struct fs_write {
	int fd;
	uint64_t written, flushed; /* bytes written; bytes whose writeback was started */
	char *tmp;  /* malloc'd temp path; NULL once renamed or removed */
	char *path; /* malloc'd target path */
	uint32_t mode, uid, gid;
};

/* Creates the temp file (O_CREAT|O_EXCL|O_NOFOLLOW, 0600) in the target's
 * directory. The target must not be a directory; its parent must exist. */
int fs_write_begin(const struct fs_req *r, struct fs_write *w, enum fs_error *code, char *msg, size_t msglen);
/* Appends bytes to the temp file; starts the writeback of every full
 * FS_WRITEBACK_CHUNK so that the final fsync overlaps the transfer. */
int fs_write_data(struct fs_write *w, const void *p, size_t n, enum fs_error *code, char *msg, size_t msglen);
#define FS_WRITEBACK_CHUNK (4u << 20)
/* fsync, fchown (if asked), fchmod, close, rename over the target. On failure the temp is removed. */
int fs_write_commit(struct fs_write *w, enum fs_error *code, char *msg, size_t msglen);
/* Closes and removes the temp file (idempotent). */
void fs_write_abort(struct fs_write *w);

#endif
