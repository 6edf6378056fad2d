/* Exec pieces: request edge cases the fixtures cannot express, env merging,
 * spawning and its failure codes. Runs on the build host. */
#include "exec.h"
#include "test.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char abuf[1 << 20];

static int req(const char *json, struct exec_host_msg *m, char *err)
{
	struct jarena a;
	jarena_init(&a, abuf, sizeof abuf, 10000);
	return exec_parse_host_json(json, strlen(json), &a, m, err, 256);
}

static void requests(void)
{
	struct exec_host_msg m;
	char err[256];
	CHECK(req("{\"type\":\"exec\",\"v\":1,\"argv\":[\"a\\u0000b\"]}", &m, err) != 0, "NUL in argv");
	CHECK(req("{\"type\":\"exec\",\"v\":1,\"argv\":[\"a\"],\"env\":{\"A\":\"\\u0000\"}}", &m, err) != 0,
	      "NUL in env");
	CHECK(req("{\"type\":\"exec\",\"v\":1,\"argv\":[\"a\"],\"cwd\":\"/a\\u0000\"}", &m, err) != 0, "NUL in cwd");
	CHECK(req("{\"type\":\"exec\",\"v\":1,\"argv\":[\"a\"],\"argv\":[\"b\"]}", &m, err) != 0, "duplicate key");
	CHECK(req("{\"type\":\"exec\",\"v\":1,\"argv\":[\"a\"],\"timeoutMs\":1e3}", &m, err) != 0, "exponent");
	CHECK(req("{\"type\":\"exec\",\"v\":1,\"argv\":[\"a\"],\"bogus\":1}", &m, err) != 0 && strstr(err, "bogus"),
	      "unknown field named: %s", err);
	CHECK(req("{\"type\":\"exec\",\"v\":1,\"argv\":[\"a\"]}", &m, err) == 0 && m.req.argc == 1 &&
		      m.req.stdout_limit == EXEC_NO_LIMIT && !strcmp(m.req.cwd, "/"),
	      "defaults: %s", err);
}

static void env(void)
{
	struct jarena a;
	jarena_init(&a, abuf, sizeof abuf, 0);
	struct kv l1[] = {{"PATH", "/bin"}, {"HOME", "/root"}}, l2[] = {{"A", "1"}, {"PATH", "/x"}},
		  l3[] = {{"A", "2"}, {"B", "3"}};
	const struct kv *layers[] = {l1, l2, l3};
	size_t counts[] = {2, 2, 2};
	char **envp;
	const char *path;
	CHECK(exec_build_env(layers, counts, 3, &a, &envp, &path) == 0, "build");
	CHECK(!strcmp(envp[0], "PATH=/x") && !strcmp(envp[1], "HOME=/root") && !strcmp(envp[2], "A=2") &&
		      !strcmp(envp[3], "B=3") && envp[4] == NULL,
	      "merge order");
	CHECK(!strcmp(path, "/x"), "PATH");
}

static void spawn_one(const char *const *argv, const char *cwd, struct exec_result *r, int *code, int rc_want)
{
	struct jarena a;
	jarena_init(&a, abuf, sizeof abuf, 0);
	char **envp;
	const char *path;
	exec_env_for(NULL, 0, &a, &envp, &path);
	struct spawn_io io = {-1, -1, -1, false};
	pid_t pid;
	memset(r, 0, sizeof *r);
	int rc = exec_spawn(argv, envp, path, cwd, &io, &pid, r);
	CHECK(rc == rc_want, "spawn %s: rc %d (%s)", argv[0], rc, r->message);
	*code = -1;
	if (rc == 0) {
		int st;
		CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
		exec_result_from_wait(r, st, false, 0);
		*code = r->exit_code;
	}
}

static void spawn(void)
{
	struct exec_result r;
	int code;
	const char *t[] = {"true", NULL}, *f[] = {"sh", "-c", "test \"$(pwd)\" = /tmp && exit 42", NULL},
		   *k[] = {"sh", "-c", "kill -TERM $$", NULL}, *nf[] = {"no-such-program-xyz", NULL},
		   *nfa[] = {"/no/such", NULL}, *ne[] = {"/etc/passwd", NULL}, *dir[] = {"/tmp", NULL},
		   *sess[] = {"sh", "-c", "set -- $(cat /proc/$$/stat); test \"$6\" -eq $$", NULL};
	spawn_one(t, "/", &r, &code, 0);
	CHECK(code == 0 && r.status == ST_EXITED, "true");
	spawn_one(f, "/tmp", &r, &code, 0);
	CHECK(code == 42, "cwd + exit code %d", code);
	spawn_one(k, "/", &r, &code, 0);
	CHECK(r.status == ST_SIGNALED && code == 128 + SIGTERM && r.signal == SIGTERM, "signaled");
	spawn_one(sess, "/", &r, &code, 0);
	CHECK(code == 0, "own session");
	spawn_one(nf, "/", &r, &code, -1);
	CHECK(r.error == ERR_NOT_FOUND && r.exit_code == 127, "not found: %s", r.message);
	spawn_one(nfa, "/", &r, &code, -1);
	CHECK(r.error == ERR_NOT_FOUND && r.exit_code == 127, "absolute not found");
	spawn_one(ne, "/", &r, &code, -1);
	CHECK(r.error == ERR_NOT_EXECUTABLE && r.exit_code == 126, "not executable: %s", r.message);
	spawn_one(dir, "/", &r, &code, -1);
	CHECK(r.error == ERR_NOT_EXECUTABLE && r.exit_code == 126, "directory: %s", r.message);
	spawn_one(t, "/no/such/dir", &r, &code, -1);
	CHECK(r.error == ERR_BAD_CWD && r.exit_code == 125, "bad cwd: %s", r.message);

	exec_result_from_wait(&r, 0x0f00 /* TERM'd by us but exited 15 */, true, SIGTERM);
	CHECK(r.status == ST_TIMED_OUT && r.exit_code == 124 && r.signal == SIGTERM, "timed out");
}

void test_exec(void)
{
	requests();
	env();
	spawn();
}
