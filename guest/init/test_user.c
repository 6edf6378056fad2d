/* Resolving an exec's `user` against passwd/group files (malformed lines
 * included) and running a program as that user. Runs on the build host. */
#include "exec.h"
#include "test.h"
#include "user.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/tmp/ma-test-user-XXXXXX";
static char passwd[256], group[256], missing[256];
static struct exec_user u;

static void write_file(const char *path, const char *text, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	CHECK(fd >= 0 && write(fd, text, len) == (ssize_t)len, "write %s", path);
	if (fd >= 0)
		close(fd);
}

static void fixtures(void)
{
	CHECK(mkdtemp(dir) != NULL, "mkdtemp");
	snprintf(passwd, sizeof passwd, "%s/passwd", dir);
	snprintf(group, sizeof group, "%s/group", dir);
	snprintf(missing, sizeof missing, "%s/nonexistent", dir);
	/* A line too long for the reader that would otherwise match "long". */
	size_t big = USER_MAX_LINE + 100;
	char *text = malloc(big + 4096);
	char *p = text;
	p += sprintf(p, "root:x:0:0:root:/root:/bin/sh\n"
			"# a comment line\n"
			"\n"
			"+nis::::::\n"
			"short:x:1:1:too few fields\n"
			"extra:x:2:2::/e:/bin/sh:extra\n"
			"badid:x:12a:3::/b:/bin/sh\n"
			"neg:x:-1:3::/n:/bin/sh\n"
			"huge:x:4294967295:3::/h:/bin/sh\n"
			":x:77:77::/noname:/bin/sh\n"
			"nul:x:5:5::/n");
	*p++ = 0; /* a NUL byte inside a line: malformed */
	p += sprintf(p, "ul:/bin/sh\n"
			"alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
			"alice:x:1001:1001:second alice:/other:/bin/sh\n"
			"nohome:x:1002:1002:::/bin/sh\n");
	p += sprintf(p, "long:x:2000:2000::/");
	memset(p, 'l', big);
	p += big;
	p += sprintf(p, ":/bin/sh\n"
			"bob:x:1003:1003::/home/bob:/bin/sh"); /* the last line has no newline */
	write_file(passwd, text, (size_t)(p - text));

	p = text;
	p += sprintf(p, "root:x:0:\n"
			"alice:x:1000:\n"
			"staff:x:50:bob,alice\n"
			"wheel:x:10:alice\n"
			"dup:x:50:alice\n"
			"broken:x:51\n"
			"badgid:x:x52:alice\n"
			"notalice:x:53:alicex,xalice,ali\n"
			"# comment:x:54:alice\n"
			"big:x:60:");
	memset(p, 'm', big);
	p += big;
	p += sprintf(p, ",alice\n"
			"users:x:100:bob,alice"); /* no newline */
	write_file(group, text, (size_t)(p - text));
	free(text);
}

static int resolve(const char *spec, const char *pw, const char *gr)
{
	char err[256] = "";
	memset(&u, 0x5a, sizeof u);
	return user_resolve(spec, pw, gr, &u, err, sizeof err);
}

static bool groups_are(const gid_t *want, size_t n)
{
	if (u.ngroups != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (u.groups[i] != want[i])
			return false;
	return true;
}

static void specs(void)
{
	CHECK(user_spec_valid("alice") && user_spec_valid("1000") && user_spec_valid("a:b") && user_spec_valid("0:0"),
	      "valid forms");
	CHECK(!user_spec_valid("") && !user_spec_valid(":") && !user_spec_valid("a:") && !user_spec_valid(":b") &&
		      !user_spec_valid("a:b:c") && !user_spec_valid("a::"),
	      "invalid forms");
}

static void forms(void)
{
	/* name: uid, gid and home from passwd; the first entry wins; groups listing the name. */
	CHECK(resolve("alice", passwd, group) == 0 && u.uid == 1000 && u.gid == 1000 && u.has_name &&
		      !strcmp(u.name, "alice") && !strcmp(u.home, "/home/alice"),
	      "name");
	gid_t alice_groups[] = {1000, 50, 10, 100};
	CHECK(groups_are(alice_groups, 4), "name: primary + member groups, deduplicated, not substrings (%zu)",
	      u.ngroups);
	/* uid with an entry: its name, gid, home and groups. */
	CHECK(resolve("1000", passwd, group) == 0 && u.uid == 1000 && u.gid == 1000 && !strcmp(u.name, "alice") &&
		      groups_are(alice_groups, 4),
	      "uid in passwd");
	/* uid without an entry: gid 0, HOME=/, no name. */
	gid_t zero[] = {0};
	CHECK(resolve("65534", passwd, group) == 0 && u.uid == 65534 && u.gid == 0 && !u.has_name &&
		      !strcmp(u.home, "/") && groups_are(zero, 1),
	      "uid not in passwd");
	/* name:group, uid:gid, name:gid, uid:group: the group replaces the gid; no supplementary groups. */
	gid_t staff[] = {50};
	CHECK(resolve("alice:staff", passwd, group) == 0 && u.uid == 1000 && u.gid == 50 && groups_are(staff, 1) &&
		      !strcmp(u.home, "/home/alice"),
	      "name:group");
	gid_t g7[] = {7};
	CHECK(resolve("1000:7", passwd, group) == 0 && u.uid == 1000 && u.gid == 7 && groups_are(g7, 1) &&
		      !strcmp(u.name, "alice"),
	      "uid:gid");
	CHECK(resolve("alice:0", passwd, group) == 0 && u.uid == 1000 && u.gid == 0 && groups_are(zero, 1), "name:gid");
	gid_t wheel[] = {10};
	CHECK(resolve("4242:wheel", passwd, group) == 0 && u.uid == 4242 && u.gid == 10 && groups_are(wheel, 1) &&
		      !u.has_name && !strcmp(u.home, "/"),
	      "uid:group");
	CHECK(resolve("0", passwd, group) == 0 && u.uid == 0 && !strcmp(u.name, "root") && !strcmp(u.home, "/root"),
	      "root");
	/* An empty home field is "/". */
	CHECK(resolve("nohome", passwd, group) == 0 && u.uid == 1002 && !strcmp(u.home, "/"), "empty home");
	/* The last line without a newline counts. */
	gid_t bob[] = {1003, 50, 100};
	CHECK(resolve("bob", passwd, group) == 0 && u.uid == 1003 && groups_are(bob, 3), "last line");
}

static void failures(void)
{
	CHECK(resolve("nobody", passwd, group) != 0, "unknown name");
	CHECK(resolve("alice:nogroup", passwd, group) != 0, "unknown group name");
	CHECK(resolve("alice:broken", passwd, group) != 0, "a malformed group line does not match");
	CHECK(resolve("4294967295", passwd, group) != 0, "uid out of range");
	CHECK(resolve("99999999999999999999", passwd, group) != 0, "uid overflow");
	CHECK(resolve("alice:4294967295", passwd, group) != 0, "gid out of range");
	CHECK(resolve("a:b:c", passwd, group) != 0 && resolve("", passwd, group) != 0, "invalid spec");
	/* Malformed lines never match. */
	const char *malformed[] = {"short", "extra", "badid", "neg", "huge", "nul", "long", "+nis", "# a comment line"};
	for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++)
		CHECK(resolve(malformed[i], passwd, group) != 0, "malformed line %s matched", malformed[i]);
	CHECK(resolve("77", passwd, group) == 0 && !u.has_name && u.gid == 0, "a line without a name is skipped");
	/* Missing files: a numeric user still works, a name does not. */
	CHECK(resolve("1234:5", missing, missing) == 0 && u.uid == 1234 && u.gid == 5, "numeric without files");
	CHECK(resolve("1234", missing, missing) == 0 && u.gid == 0 && !strcmp(u.home, "/"), "uid without files");
	CHECK(resolve("alice", missing, group) != 0, "name without passwd");
	CHECK(resolve("alice:staff", passwd, missing) != 0, "group name without group");
	gid_t alice_only[] = {1000};
	CHECK(resolve("alice", passwd, missing) == 0 && groups_are(alice_only, 1), "no group file: primary only");
	char toolong[USER_MAX_NAME + 10];
	memset(toolong, 'n', sizeof toolong - 1);
	toolong[sizeof toolong - 1] = 0;
	CHECK(resolve(toolong, passwd, group) != 0, "name too long");
	CHECK(resolve("1", dir, group) != 0, "a directory as passwd is an error, not 'no entry'");
}

static char abuf[1 << 20];

static void env(void)
{
	struct jarena a;
	jarena_init(&a, abuf, sizeof abuf, 0);
	char **envp;
	const char *path;
	CHECK(resolve("alice", passwd, group) == 0, "alice");
	struct kv extra[] = {{"X", "1"}};
	CHECK(exec_env_for_user(&u, extra, 1, &a, &envp, &path) == 0, "env");
	bool home = false, user = false, logname = false;
	for (char **e = envp; *e; e++) {
		home |= !strcmp(*e, "HOME=/home/alice");
		user |= !strcmp(*e, "USER=alice");
		logname |= !strcmp(*e, "LOGNAME=alice");
	}
	CHECK(home && user && logname, "HOME, USER, LOGNAME");
	struct kv own_home[] = {{"HOME", "/mine"}};
	CHECK(exec_env_for_user(&u, own_home, 1, &a, &envp, &path) == 0, "env");
	bool mine = false;
	for (char **e = envp; *e; e++)
		mine |= !strcmp(*e, "HOME=/mine");
	CHECK(mine, "the request's HOME wins");
	CHECK(resolve("65534", passwd, group) == 0, "65534");
	CHECK(exec_env_for_user(&u, NULL, 0, &a, &envp, &path) == 0, "env");
	bool root_home = false, slash = false, any_user = false;
	for (char **e = envp; *e; e++) {
		root_home |= !strcmp(*e, "HOME=/root");
		slash |= !strcmp(*e, "HOME=/");
		any_user |= !strncmp(*e, "USER=", 5);
	}
	CHECK(slash && !root_home && !any_user, "no entry: HOME=/, no USER");
}

/* As root (the usual CI container) the program really runs as the user;
 * otherwise setgroups fails and the exec is bad_user. */
static void spawn(void)
{
	struct jarena a;
	jarena_init(&a, abuf, sizeof abuf, 0);
	char **envp;
	const char *path;
	CHECK(resolve("1000:7", passwd, group) == 0, "resolve");
	exec_env_for_user(&u, NULL, 0, &a, &envp, &path);
	const char *argv[] = {"sh", "-c",
			      "test \"$(id -u)\" = 1000 && test \"$(id -g)\" = 7 && test \"$(id -G)\" = 7 && "
			      "test \"$HOME\" = /home/alice && test \"$USER\" = alice",
			      NULL};
	struct spawn_io io = {-1, -1, -1, false};
	struct exec_result r;
	memset(&r, 0, sizeof r);
	pid_t pid;
	int rc = exec_spawn_as(argv, envp, path, "/", &io, &u, &pid, &r);
	if (geteuid() != 0) {
		CHECK(rc != 0 && r.error == ERR_BAD_USER && r.exit_code == 125 && strstr(r.message, "setgroups"),
		      "unprivileged: bad_user: %s", r.message);
		return;
	}
	CHECK(rc == 0, "spawn as 1000:7: %s", r.message);
	if (rc == 0) {
		int st;
		CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "ids and env in the child");
	}
	/* The cwd is entered as the user: a root-only directory is bad_cwd. */
	char priv[300];
	snprintf(priv, sizeof priv, "%s/private", dir);
	CHECK(mkdir(priv, 0700) == 0, "mkdir");
	const char *t[] = {"true", NULL};
	memset(&r, 0, sizeof r);
	rc = exec_spawn_as(t, envp, path, priv, &io, &u, &pid, &r);
	CHECK(rc != 0 && r.error == ERR_BAD_CWD, "cwd as the user: %s", r.message);
	rmdir(priv);
}

void test_user(void)
{
	fixtures();
	specs();
	forms();
	failures();
	env();
	spawn();
	unlink(passwd);
	unlink(group);
	rmdir(dir);
}
