/* File transfer service: request validation, JSON, file operations (see fs.h). */
#include "fs.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int ferr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ferr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* An optional integer member in [lo, hi]: 1 absent, 0 set, -1 invalid. */
static int get_range(const struct jval *o, const char *key, int64_t lo, int64_t hi, int64_t *out, char *err,
		     size_t errlen)
{
	const struct jval *v = json_get(o, key);
	if (!v)
		return 1;
	if (v->type != J_INT || v->i < lo || v->i > hi)
		return ferr(err, errlen, "%s must be an integer %lld..%lld", key, (long long)lo, (long long)hi);
	*out = v->i;
	return 0;
}

int fs_parse_request(const char *json, size_t len, struct jarena *a, struct fs_req *r, char *err, size_t errlen)
{
	const struct jval *o;
	if (json_parse(json, len, a, &o, err, errlen) != 0)
		return -1;
	if (o->type != J_OBJ)
		return ferr(err, errlen, "fs request must be a JSON object");
	const struct jval *t = json_get(o, "type");
	if (!t || !json_is_cstr(t))
		return ferr(err, errlen, "fs request without a type");
	static const char *const read_keys[] = {"type", "v", "path", NULL};
	static const char *const write_keys[] = {"type", "v", "path", "mode", "uid", "gid", "size", NULL};
	const char *const *allowed;
	if (strcmp(t->s, "read") == 0) {
		r->op = FS_READ;
		allowed = read_keys;
	} else if (strcmp(t->s, "write") == 0) {
		r->op = FS_WRITE;
		allowed = write_keys;
	} else {
		return ferr(err, errlen, "the first fs message must be a read or write request");
	}
	char bad[80];
	if (!json_keys_allowed(o, allowed, bad, sizeof bad))
		return ferr(err, errlen, "unknown field \"%s\" in %s request", bad, t->s);
	const struct jval *v = json_get(o, "v");
	if (!v || v->type != J_INT || v->i != 1)
		return ferr(err, errlen, "v must be 1");
	const struct jval *p = json_get(o, "path");
	if (!p || !json_is_cstr(p) || p->s[0] != '/')
		return ferr(err, errlen, "path must be an absolute path without NUL");
	if (p->slen >= PATH_MAX)
		return ferr(err, errlen, "path longer than %d bytes", PATH_MAX - 1);
	r->path = p->s;
	r->mode = 0;
	r->uid = r->gid = FS_ID_NONE;
	r->size = 0;
	if (r->op == FS_READ)
		return 0;
	int64_t mode = -1, uid = -1, gid = -1, size = -1;
	int rc;
	if ((rc = get_range(o, "mode", 0, 07777, &mode, err, errlen)) != 0)
		return rc < 0 ? -1 : ferr(err, errlen, "mode is required");
	if ((rc = get_range(o, "size", 0, JSON_MAX_INT, &size, err, errlen)) != 0)
		return rc < 0 ? -1 : ferr(err, errlen, "size is required");
	if (get_range(o, "uid", 0, (int64_t)FS_ID_NONE - 1, &uid, err, errlen) < 0 ||
	    get_range(o, "gid", 0, (int64_t)FS_ID_NONE - 1, &gid, err, errlen) < 0)
		return -1;
	r->mode = (uint32_t)mode;
	r->size = (uint64_t)size;
	if (uid >= 0)
		r->uid = (uint32_t)uid;
	if (gid >= 0)
		r->gid = (uint32_t)gid;
	return 0;
}

long fs_format_stat(uint64_t size, uint32_t mode, uint32_t uid, uint32_t gid, char *buf, size_t cap)
{
	struct jw w;
	jw_init(&w, buf, cap);
	jw_obj_begin(&w);
	jw_key(&w, "type");
	jw_cstr(&w, "stat");
	jw_key(&w, "size");
	jw_int(&w, (int64_t)size);
	jw_key(&w, "mode");
	jw_int(&w, mode);
	jw_key(&w, "uid");
	jw_int(&w, uid);
	jw_key(&w, "gid");
	jw_int(&w, gid);
	jw_obj_end(&w);
	return jw_finish(&w);
}

long fs_format_done(uint64_t bytes, char *buf, size_t cap)
{
	struct jw w;
	jw_init(&w, buf, cap);
	jw_obj_begin(&w);
	jw_key(&w, "type");
	jw_cstr(&w, "done");
	jw_key(&w, "bytes");
	jw_int(&w, (int64_t)bytes);
	jw_obj_end(&w);
	return jw_finish(&w);
}

static const char *const fs_error_names[] = {"",	     "not_found", "is_directory",  "not_regular",
					     "permission_denied", "io_error",  "invalid_request"};

const char *fs_error_name(enum fs_error code)
{
	return fs_error_names[code];
}

long fs_format_error(enum fs_error code, const char *message, char *buf, size_t cap)
{
	/* Escaping can grow a byte to 6; cut the message until it fits. */
	size_t mlen = strlen(message);
	for (;;) {
		struct jw w;
		jw_init(&w, buf, cap);
		jw_obj_begin(&w);
		jw_key(&w, "type");
		jw_cstr(&w, "error");
		jw_key(&w, "code");
		jw_cstr(&w, fs_error_names[code]);
		jw_key(&w, "message");
		jw_str(&w, message, mlen);
		jw_obj_end(&w);
		long n = jw_finish(&w);
		if (n >= 0 || mlen == 0)
			return n;
		mlen = mlen > 64 ? mlen / 2 : 0;
	}
}

enum fs_error fs_error_from_errno(int e)
{
	switch (e) {
	case ENOENT:
	case ENOTDIR:
	case ELOOP:
		return FSE_NOT_FOUND;
	case EISDIR:
		return FSE_IS_DIRECTORY;
	case EACCES:
	case EPERM:
	case EROFS:
	case ETXTBSY:
		return FSE_PERMISSION_DENIED;
	case ENAMETOOLONG:
		return FSE_INVALID_REQUEST;
	default:
		return FSE_IO_ERROR;
	}
}

static int sys_fail(const char *what, const char *path, int e, enum fs_error *code, char *msg, size_t msglen)
{
	*code = fs_error_from_errno(e);
	snprintf(msg, msglen, "%s%s%s: %s", what, *what ? " " : "", path, strerror(e));
	return -1;
}

static int kind_fail(enum fs_error c, const char *path, const char *what, enum fs_error *code, char *msg,
		     size_t msglen)
{
	*code = c;
	snprintf(msg, msglen, "%s: %s", path, what);
	return -1;
}

int fs_open_read(const char *path, int *fd, struct stat *st, enum fs_error *code, char *msg, size_t msglen)
{
	/* stat first so that a device or FIFO is never opened (opening one can have effects). */
	if (stat(path, st) != 0)
		return sys_fail("", path, errno, code, msg, msglen);
	if (S_ISDIR(st->st_mode))
		return kind_fail(FSE_IS_DIRECTORY, path, "is a directory", code, msg, msglen);
	if (!S_ISREG(st->st_mode))
		return kind_fail(FSE_NOT_REGULAR, path, "not a regular file", code, msg, msglen);
	int f = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (f < 0)
		return sys_fail("", path, errno, code, msg, msglen);
	if (fstat(f, st) != 0 || !S_ISREG(st->st_mode)) {
		int e = errno;
		close(f);
		if (S_ISDIR(st->st_mode))
			return kind_fail(FSE_IS_DIRECTORY, path, "is a directory", code, msg, msglen);
		return S_ISREG(st->st_mode) ? sys_fail("fstat", path, e, code, msg, msglen)
					    : kind_fail(FSE_NOT_REGULAR, path, "not a regular file", code, msg, msglen);
	}
	*fd = f;
	return 0;
}

void fs_write_abort(struct fs_write *w)
{
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	if (w->tmp) {
		if (unlink(w->tmp) != 0 && errno != ENOENT)
			log_msg("unlink %s: %s", w->tmp, strerror(errno));
		free(w->tmp);
		w->tmp = NULL;
	}
	free(w->path);
	w->path = NULL;
}

int fs_write_begin(const struct fs_req *r, struct fs_write *w, enum fs_error *code, char *msg, size_t msglen)
{
	static uint64_t counter;
	w->fd = -1;
	w->tmp = w->path = NULL;
	w->written = w->flushed = 0;
	w->mode = r->mode;
	w->uid = r->uid;
	w->gid = r->gid;
	const char *slash = strrchr(r->path, '/');
	const char *base = slash + 1;
	if (*base == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return kind_fail(FSE_IS_DIRECTORY, r->path, "is a directory", code, msg, msglen);
	struct stat st;
	if (lstat(r->path, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return kind_fail(FSE_IS_DIRECTORY, r->path, "is a directory", code, msg, msglen);
	} else if (errno != ENOENT) {
		return sys_fail("", r->path, errno, code, msg, msglen);
	}
	size_t dlen = (size_t)(slash - r->path);
	w->path = strdup(r->path);
	w->tmp = malloc(dlen + 40);
	if (!w->path || !w->tmp) {
		fs_write_abort(w);
		*code = FSE_IO_ERROR;
		snprintf(msg, msglen, "out of memory");
		return -1;
	}
	for (int attempt = 0;; attempt++) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t x = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ ++counter << 20 ^ (uint64_t)ts.tv_sec;
		snprintf(w->tmp, dlen + 40, "%.*s/.ma-cp-%016llx", (int)dlen, r->path, (unsigned long long)x);
		w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (w->fd >= 0)
			return 0;
		int e = errno;
		if (e == EEXIST && attempt < 16)
			continue;
		free(w->tmp);
		w->tmp = NULL;
		fs_write_abort(w);
		if (e == ENOENT || e == ENOTDIR) {
			*code = FSE_NOT_FOUND;
			snprintf(msg, msglen, "%s: the parent directory does not exist", r->path);
			return -1;
		}
		return sys_fail("cannot create a file next to", r->path, e, code, msg, msglen);
	}
}

int fs_write_data(struct fs_write *w, const void *p, size_t n, enum fs_error *code, char *msg, size_t msglen)
{
	if (write_all(w->fd, p, n) != 0) {
		*code = FSE_IO_ERROR;
		snprintf(msg, msglen, "write %s: %s", w->path, strerror(errno));
		return -1;
	}
	w->written += n;
	if (w->written - w->flushed >= FS_WRITEBACK_CHUNK) {
		/* Asynchronous: queues the range for writeback and returns. Only a hint, so errors are ignored. */
		(void)sync_file_range(w->fd, (off_t)w->flushed, (off_t)(w->written - w->flushed), SYNC_FILE_RANGE_WRITE);
		w->flushed = w->written;
	}
	return 0;
}

int fs_write_commit(struct fs_write *w, enum fs_error *code, char *msg, size_t msglen)
{
	int rc = -1;
	if (fsync(w->fd) != 0) {
		sys_fail("fsync", w->path, errno, code, msg, msglen);
		goto out;
	}
	if ((w->uid != FS_ID_NONE || w->gid != FS_ID_NONE) &&
	    fchown(w->fd, w->uid == FS_ID_NONE ? (uid_t)-1 : w->uid, w->gid == FS_ID_NONE ? (gid_t)-1 : w->gid) != 0) {
		sys_fail("chown", w->path, errno, code, msg, msglen);
		goto out;
	}
	/* After fchown, which clears set-id bits; fchmod is also not subject to the umask. */
	if (fchmod(w->fd, w->mode) != 0) {
		sys_fail("chmod", w->path, errno, code, msg, msglen);
		goto out;
	}
	int fd = w->fd;
	w->fd = -1;
	if (close(fd) != 0) {
		sys_fail("close", w->path, errno, code, msg, msglen);
		goto out;
	}
	/* rename replaces the directory entry: a symlink at the target is replaced, never followed. */
	if (rename(w->tmp, w->path) != 0) {
		sys_fail("rename onto", w->path, errno, code, msg, msglen);
		goto out;
	}
	free(w->tmp);
	w->tmp = NULL;
	/* Make the rename durable too (best effort). */
	char *slash = strrchr(w->path, '/');
	*slash = 0;
	int d = open(slash == w->path ? "/" : w->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	*slash = '/';
	if (d < 0 || fsync(d) != 0)
		log_msg("fsync the directory of %s: %s", w->path, strerror(errno));
	if (d >= 0)
		close(d);
	rc = 0;
out:
	fs_write_abort(w);
	return rc;
}
