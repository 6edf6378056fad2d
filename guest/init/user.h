/* The exec request's `user` (an OCI config `User`: name, uid, name:group,
 * uid:gid, name:gid, uid:group) resolved against the guest's /etc/passwd and
 * /etc/group. The init is static: glibc's NSS (getpwnam, getgrnam, …) must
 * not be used, so the files are parsed here, with bounded line lengths. */
#ifndef MA_USER_H
#define MA_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Longer lines of passwd/group are skipped as malformed. */
#define USER_MAX_LINE 16384
/* Longer user or group names in a request cannot be resolved. */
#define USER_MAX_NAME 256
/* setgroups list: the primary gid plus the groups listing the user. */
#define USER_MAX_GROUPS 256

struct exec_user {
	uid_t uid;
	gid_t gid;
	gid_t groups[USER_MAX_GROUPS];
	size_t ngroups;
	bool has_name;		      /* the uid has a passwd entry: name is set */
	char name[USER_MAX_NAME + 1]; /* for USER and LOGNAME */
	char home[USER_MAX_LINE];     /* the passwd home, "/" without an entry */
};

/* A valid `user` field: "A" or "A:B" with A, B non-empty and without ':'
 * (docs/protocol.md §3; the zod schema's rule). */
bool user_spec_valid(const char *spec);

/* Resolves spec (user_spec_valid) against the two files. 0 with *u filled;
 * -1 with err set (the exec's `bad_user`): an unknown user or group name, a
 * numeric id out of range, a file that cannot be read. A numeric uid without
 * a passwd entry is fine (gid 0 unless given, home "/"). */
int user_resolve(const char *spec, const char *passwd_path, const char *group_path, struct exec_user *u, char *err,
		 size_t errlen);

#endif
