/* Resolving an OCI `User` without NSS: passwd and group are parsed here, the
 * way runc resolves a container's user (moby/sys/user's GetExecUser): the
 * first matching entry wins, malformed lines are skipped, supplementary
 * groups only come with the implicit group form. */
#include "user.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int uerr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int uerr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

bool user_spec_valid(const char *spec)
{
	const char *colon = strchr(spec, ':');
	if (spec[0] == 0 || spec[0] == ':')
		return false;
	return !colon || (colon[1] != 0 && !strchr(colon + 1, ':'));
}

/* A decimal id 0..2^32-2 (2^32-1 is "no change" to the set*id calls):
 * 1 with *id, 0 if s is not all digits, -1 if it is out of range. */
static int parse_id(const char *s, uint32_t *id)
{
	if (s[0] == 0)
		return 0;
	uint64_t v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return 0;
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > 0xfffffffeu)
			return -1;
	}
	*id = (uint32_t)v;
	return 1;
}

/* ---- a bounded line reader (one file open at a time; PID 1 is single-threaded) ---- */

struct lines {
	int fd;
	size_t len, pos;
	bool eof, skipping;
	char buf[USER_MAX_LINE + 1];
};

static struct lines rd;

/* 0 open, -1 with errno. */
static int lines_open(struct lines *r, const char *path)
{
	r->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0)
		return -1;
	r->len = r->pos = 0;
	r->eof = r->skipping = false;
	return 0;
}

static void lines_close(struct lines *r)
{
	close(r->fd);
	r->fd = -1;
}

/* 1 with *line (NUL-terminated, without its '\n') and its length, 0 at
 * the end, -1 on a read error (errno). Lines of USER_MAX_LINE bytes or more
 * are skipped. */
static int lines_next(struct lines *r, char **line, size_t *len)
{
	for (;;) {
		char *start = r->buf + r->pos;
		char *nl = memchr(start, '\n', r->len - r->pos);
		if (nl) {
			*nl = 0;
			r->pos = (size_t)(nl + 1 - r->buf);
			if (r->skipping) {
				r->skipping = false;
				continue;
			}
			*line = start;
			*len = (size_t)(nl - start);
			return 1;
		}
		if (r->eof) {
			if (r->pos < r->len && !r->skipping) { /* a last line without '\n' */
				r->buf[r->len] = 0;
				*len = r->len - r->pos;
				r->pos = r->len;
				*line = start;
				return 1;
			}
			return 0;
		}
		if (r->skipping) {
			r->len = 0;
		} else {
			memmove(r->buf, start, r->len - r->pos);
			r->len -= r->pos;
			if (r->len == USER_MAX_LINE) {
				log_debug("user: skipping a line longer than %d bytes", USER_MAX_LINE);
				r->skipping = true;
				r->len = 0;
			}
		}
		r->pos = 0;
		ssize_t n = read(r->fd, r->buf + r->len, USER_MAX_LINE - r->len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			r->eof = true;
		r->len += (size_t)n;
	}
}

/* Splits line at ':' into exactly n fields; false otherwise. */
static bool split_fields(char *line, char **f, int n)
{
	int i = 0;
	f[i++] = line;
	for (char *p = line; *p; p++) {
		if (*p != ':')
			continue;
		if (i == n)
			return false;
		*p = 0;
		f[i++] = p + 1;
	}
	return i == n;
}

/* A usable entry line: not blank, not a comment, not NIS compat (+/-). */
static bool entry_line(const char *line)
{
	return line[0] != 0 && line[0] != '#' && line[0] != '+' && line[0] != '-';
}

struct pw {
	const char *name, *home;
	uint32_t uid, gid;
};

/* name:passwd:uid:gid:gecos:home:shell */
static bool parse_passwd_line(char *line, struct pw *pw)
{
	char *f[7];
	uint32_t uid, gid;
	if (!entry_line(line) || !split_fields(line, f, 7) || f[0][0] == 0 || parse_id(f[2], &uid) != 1 ||
	    parse_id(f[3], &gid) != 1)
		return false;
	*pw = (struct pw){f[0], f[5], uid, gid};
	return true;
}

struct gr {
	const char *name;
	char *members; /* comma-separated */
	uint32_t gid;
};

/* name:passwd:gid:member,member,... */
static bool parse_group_line(char *line, struct gr *gr)
{
	char *f[4];
	uint32_t gid;
	if (!entry_line(line) || !split_fields(line, f, 4) || f[0][0] == 0 || parse_id(f[2], &gid) != 1)
		return false;
	*gr = (struct gr){f[0], f[3], gid};
	return true;
}

static bool lists_member(char *members, const char *name)
{
	for (char *m = members, *end; *m; m = end + 1) {
		end = strchrnul(m, ',');
		if ((size_t)(end - m) == strlen(name) && memcmp(m, name, (size_t)(end - m)) == 0)
			return true;
		if (*end == 0)
			break;
	}
	return false;
}

static void add_group(struct exec_user *u, gid_t gid)
{
	for (size_t i = 0; i < u->ngroups; i++)
		if (u->groups[i] == gid)
			return;
	if (u->ngroups == USER_MAX_GROUPS) {
		log_msg("user %s: more than %d groups; ignoring gid %u", u->name, USER_MAX_GROUPS, (unsigned)gid);
		return;
	}
	u->groups[u->ngroups++] = gid;
}

/* The passwd entry of name (numeric: of uid). 1 found, 0 not, -1 error. */
static int find_user(const char *path, const char *name, bool numeric, uint32_t uid, struct exec_user *u,
		     char *err, size_t errlen)
{
	if (lines_open(&rd, path) != 0) {
		if (errno == ENOENT)
			return 0;
		return uerr(err, errlen, "%s: %s", path, strerror(errno));
	}
	int rc;
	char *line;
	size_t len;
	while ((rc = lines_next(&rd, &line, &len)) == 1) {
		struct pw pw;
		if (strlen(line) != len || !parse_passwd_line(line, &pw)) /* a NUL byte: malformed */
			continue;
		if (numeric ? pw.uid != uid : strcmp(pw.name, name) != 0)
			continue;
		if (strlen(pw.name) > USER_MAX_NAME)
			continue; /* cannot be a USER; such an entry is not sane anyway */
		u->uid = pw.uid;
		u->gid = pw.gid;
		u->has_name = true;
		strcpy(u->name, pw.name);
		strcpy(u->home, pw.home[0] ? pw.home : "/");
		lines_close(&rd);
		return 1;
	}
	int saved = errno;
	lines_close(&rd);
	return rc < 0 ? uerr(err, errlen, "%s: %s", path, strerror(saved)) : 0;
}

/* Scans group: with group_name, *gid of that group (1 found, 0 not);
 * without, adds every group listing u->name to u->groups. -1 on error. */
static int scan_groups(const char *path, const char *group_name, uint32_t *gid, struct exec_user *u, char *err,
		       size_t errlen)
{
	if (lines_open(&rd, path) != 0) {
		if (errno == ENOENT)
			return 0;
		return uerr(err, errlen, "%s: %s", path, strerror(errno));
	}
	int rc;
	char *line;
	size_t len;
	while ((rc = lines_next(&rd, &line, &len)) == 1) {
		struct gr gr;
		if (strlen(line) != len || !parse_group_line(line, &gr))
			continue;
		if (group_name) {
			if (strcmp(gr.name, group_name) == 0) {
				*gid = gr.gid;
				lines_close(&rd);
				return 1;
			}
		} else if (lists_member(gr.members, u->name)) {
			add_group(u, gr.gid);
		}
	}
	int saved = errno;
	lines_close(&rd);
	return rc < 0 ? uerr(err, errlen, "%s: %s", path, strerror(saved)) : 0;
}

int user_resolve(const char *spec, const char *passwd_path, const char *group_path, struct exec_user *u, char *err,
		 size_t errlen)
{
	if (!user_spec_valid(spec))
		return uerr(err, errlen, "invalid user \"%s\"", spec);
	char user[USER_MAX_NAME + 1], group[USER_MAX_NAME + 1];
	const char *colon = strchr(spec, ':');
	size_t ul = colon ? (size_t)(colon - spec) : strlen(spec);
	if (ul > USER_MAX_NAME || (colon && strlen(colon + 1) > USER_MAX_NAME))
		return uerr(err, errlen, "user \"%.64s...\": name too long", spec);
	memcpy(user, spec, ul);
	user[ul] = 0;
	if (colon)
		strcpy(group, colon + 1);

	memset(u, 0, offsetof(struct exec_user, home));
	strcpy(u->home, "/");
	uint32_t uid = 0;
	int numeric = parse_id(user, &uid);
	if (numeric < 0)
		return uerr(err, errlen, "user \"%s\": uid out of range", user);
	int found = find_user(passwd_path, user, numeric == 1, uid, u, err, errlen);
	if (found < 0)
		return -1;
	if (!found) {
		if (!numeric)
			return uerr(err, errlen, "user \"%s\": no such user in %s", user, passwd_path);
		/* A uid without an entry: like runc, gid 0 (unless given) and HOME=/. */
		u->uid = uid;
		u->gid = 0;
	}

	if (colon) {
		uint32_t gid = 0;
		int gnum = parse_id(group, &gid);
		if (gnum < 0)
			return uerr(err, errlen, "group \"%s\": gid out of range", group);
		if (gnum == 0) {
			int g = scan_groups(group_path, group, &gid, u, err, errlen);
			if (g < 0)
				return -1;
			if (g == 0)
				return uerr(err, errlen, "group \"%s\": no such group in %s", group, group_path);
		}
		/* An explicit group: no supplementary groups (as in docker/runc). */
		u->gid = gid;
		add_group(u, gid);
		return 0;
	}
	add_group(u, u->gid);
	if (u->has_name && scan_groups(group_path, NULL, NULL, u, err, errlen) < 0)
		return -1;
	return 0;
}
