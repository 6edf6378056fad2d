/* Exec request validation, result JSON, env merging, spawn. */
#include "exec.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int verr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int verr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

int parse_env(const struct jval *v, struct jarena *a, struct kv **out, size_t *n, const char *what, char *err,
	      size_t errlen)
{
	if (v->type != J_OBJ)
		return verr(err, errlen, "%s must be an object", what);
	struct kv *kv = jarena_alloc(a, (v->count + 1) * sizeof *kv);
	if (!kv)
		return verr(err, errlen, "%s too large", what);
	size_t i = 0;
	for (const struct jval *m = v->child; m; m = m->next, i++) {
		if (m->keylen == 0 || memchr(m->key, '=', m->keylen) || strlen(m->key) != m->keylen)
			return verr(err, errlen, "%s: names must be non-empty and must not contain \"=\"", what);
		if (!json_is_cstr(m))
			return verr(err, errlen, "%s.%s must be a string without NUL", what, m->key);
		kv[i].k = m->key;
		kv[i].v = m->s;
	}
	*out = kv;
	*n = i;
	return 0;
}

static int get_uint(const struct jval *obj, const char *key, uint64_t *out, char *err, size_t errlen)
{
	const struct jval *v = json_get(obj, key);
	if (!v)
		return 1;
	if (v->type != J_INT || v->i < 0)
		return verr(err, errlen, "%s must be a non-negative integer", key);
	*out = (uint64_t)v->i;
	return 0;
}

/* rows and cols: required integers 1..65535 (struct winsize holds u16). */
static int parse_winsize(const struct jval *o, unsigned *rows, unsigned *cols, const char *prefix, char *err,
			 size_t errlen)
{
	const char *keys[2] = {"rows", "cols"};
	unsigned *out[2] = {rows, cols};
	for (int i = 0; i < 2; i++) {
		const struct jval *v = json_get(o, keys[i]);
		if (!v || v->type != J_INT || v->i < 1 || v->i > 65535)
			return verr(err, errlen, "%s%s must be an integer 1..65535", prefix, keys[i]);
		*out[i] = (unsigned)v->i;
	}
	return 0;
}

static int parse_exec(const struct jval *o, struct jarena *a, struct exec_req *r, char *err, size_t errlen)
{
	static const char *const allowed[] = {"type",	      "v",	    "argv",	   "env", "cwd",  "stdin",
					      "timeoutMs", "stdoutLimit", "stderrLimit", "tty", "user", NULL};
	char bad[80];
	if (!json_keys_allowed(o, allowed, bad, sizeof bad))
		return verr(err, errlen, "unknown field \"%s\" in exec request", bad);
	const struct jval *v = json_get(o, "v");
	if (!v || v->type != J_INT || v->i != 1)
		return verr(err, errlen, "v must be 1");
	const struct jval *argv = json_get(o, "argv");
	if (!argv || argv->type != J_ARR)
		return verr(err, errlen, "argv must be an array of strings");
	if (argv->count < 1 || argv->count > EXEC_MAX_ARGV)
		return verr(err, errlen, "argv must have 1..%d elements", EXEC_MAX_ARGV);
	r->argv = jarena_alloc(a, (argv->count + 1) * sizeof *r->argv);
	if (!r->argv)
		return verr(err, errlen, "argv too large");
	size_t i = 0;
	for (const struct jval *s = argv->child; s; s = s->next, i++) {
		if (!json_is_cstr(s))
			return verr(err, errlen, "argv[%zu] must be a string without NUL", i);
		r->argv[i] = s->s;
	}
	r->argv[i] = NULL;
	r->argc = i;
	if (r->argv[0][0] == 0)
		return verr(err, errlen, "argv[0] must not be empty");
	r->env = NULL;
	r->envc = 0;
	const struct jval *env = json_get(o, "env");
	if (env && parse_env(env, a, &r->env, &r->envc, "env", err, errlen) != 0)
		return -1;
	r->cwd = "/";
	const struct jval *cwd = json_get(o, "cwd");
	if (cwd) {
		if (!json_is_cstr(cwd) || cwd->s[0] != '/')
			return verr(err, errlen, "cwd must be an absolute path");
		r->cwd = cwd->s;
	}
	r->stdin_pipe = false;
	const struct jval *in = json_get(o, "stdin");
	if (in) {
		if (in->type != J_BOOL)
			return verr(err, errlen, "stdin must be a boolean");
		r->stdin_pipe = in->b;
	}
	r->timeout_ms = 0;
	r->stdout_limit = EXEC_NO_LIMIT;
	r->stderr_limit = EXEC_NO_LIMIT;
	if (get_uint(o, "timeoutMs", &r->timeout_ms, err, errlen) < 0 ||
	    get_uint(o, "stdoutLimit", &r->stdout_limit, err, errlen) < 0 ||
	    get_uint(o, "stderrLimit", &r->stderr_limit, err, errlen) < 0)
		return -1;
	r->tty = false;
	r->rows = r->cols = 0;
	r->term = NULL;
	const struct jval *tty = json_get(o, "tty");
	if (tty) {
		static const char *const tty_keys[] = {"rows", "cols", "term", NULL};
		if (tty->type != J_OBJ)
			return verr(err, errlen, "tty must be an object");
		if (!json_keys_allowed(tty, tty_keys, bad, sizeof bad))
			return verr(err, errlen, "unknown field \"%s\" in tty", bad);
		if (parse_winsize(tty, &r->rows, &r->cols, "tty.", err, errlen) != 0)
			return -1;
		const struct jval *term = json_get(tty, "term");
		if (term) {
			if (!json_is_cstr(term) || term->slen == 0)
				return verr(err, errlen, "tty.term must be a non-empty string without NUL");
			r->term = term->s;
		}
		r->tty = true;
	}
	r->user = NULL;
	const struct jval *user = json_get(o, "user");
	if (user) {
		if (!json_is_cstr(user) || !user_spec_valid(user->s))
			return verr(err, errlen, "user must be a string USER or USER:GROUP (both non-empty, without ':')");
		r->user = user->s;
	}
	return 0;
}

int exec_parse_host_json(const char *json, size_t len, struct jarena *a, struct exec_host_msg *m, char *err,
			 size_t errlen)
{
	const struct jval *o;
	if (json_parse(json, len, a, &o, err, errlen) != 0)
		return -1;
	if (o->type != J_OBJ)
		return verr(err, errlen, "exec message must be a JSON object");
	const struct jval *t = json_get(o, "type");
	if (!t || t->type != J_STR)
		return verr(err, errlen, "exec message without a type");
	if (strcmp(t->s, "exec") == 0 && json_is_cstr(t)) {
		m->type = EXEC_MSG_EXEC;
		return parse_exec(o, a, &m->req, err, errlen);
	}
	if (strcmp(t->s, "signal") == 0 && json_is_cstr(t)) {
		static const char *const allowed[] = {"type", "signal", NULL};
		char bad[80];
		if (!json_keys_allowed(o, allowed, bad, sizeof bad))
			return verr(err, errlen, "unknown field \"%s\" in signal message", bad);
		const struct jval *s = json_get(o, "signal");
		if (!s || s->type != J_INT || s->i < 1 || s->i > 64)
			return verr(err, errlen, "signal must be an integer 1..64");
		m->type = EXEC_MSG_SIGNAL;
		m->signal = (int)s->i;
		return 0;
	}
	if (strcmp(t->s, "resize") == 0 && json_is_cstr(t)) {
		static const char *const allowed[] = {"type", "rows", "cols", NULL};
		char bad[80];
		if (!json_keys_allowed(o, allowed, bad, sizeof bad))
			return verr(err, errlen, "unknown field \"%s\" in resize message", bad);
		m->type = EXEC_MSG_RESIZE;
		return parse_winsize(o, &m->rows, &m->cols, "", err, errlen);
	}
	return verr(err, errlen, "unknown exec message type");
}

long exec_format_started(pid_t pid, char *buf, size_t cap)
{
	struct jw w;
	jw_init(&w, buf, cap);
	jw_obj_begin(&w);
	jw_key(&w, "type");
	jw_cstr(&w, "started");
	jw_key(&w, "pid");
	jw_int(&w, pid);
	jw_obj_end(&w);
	return jw_finish(&w);
}

static const char *const status_names[] = {"exited", "signaled", "timed_out", "failed_to_start"};
static const char *const error_names[] = {"",		 "not_found",	 "not_executable", "bad_cwd",
					  "setup_failed", "invalid_request", "bad_user"};

long exec_format_exit(const struct exec_result *r, char *buf, size_t cap)
{
	struct jw w;
	jw_init(&w, buf, cap);
	jw_obj_begin(&w);
	jw_key(&w, "type");
	jw_cstr(&w, "exit");
	jw_key(&w, "status");
	jw_cstr(&w, status_names[r->status]);
	jw_key(&w, "exitCode");
	jw_int(&w, r->exit_code);
	if (r->signal > 0) {
		jw_key(&w, "signal");
		jw_int(&w, r->signal);
	}
	jw_key(&w, "stdoutBytes");
	jw_int(&w, (int64_t)r->stdout_bytes);
	jw_key(&w, "stderrBytes");
	jw_int(&w, (int64_t)r->stderr_bytes);
	jw_key(&w, "stdoutTruncated");
	jw_bool(&w, r->stdout_truncated);
	jw_key(&w, "stderrTruncated");
	jw_bool(&w, r->stderr_truncated);
	jw_key(&w, "durationMs");
	jw_int(&w, (int64_t)r->duration_ms);
	if (r->status == ST_FAILED_TO_START && r->error != ERR_NONE) {
		jw_key(&w, "error");
		jw_obj_begin(&w);
		jw_key(&w, "code");
		jw_cstr(&w, error_names[r->error]);
		jw_key(&w, "message");
		jw_cstr(&w, r->message);
		jw_obj_end(&w);
	}
	jw_obj_end(&w);
	return jw_finish(&w);
}

void exec_result_fail(struct exec_result *r, enum exec_error e, const char *fmt, ...)
{
	r->status = ST_FAILED_TO_START;
	r->error = e;
	r->signal = 0;
	r->exit_code = e == ERR_NOT_FOUND ? 127 : e == ERR_NOT_EXECUTABLE ? 126 : 125;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->message, sizeof r->message, fmt, ap);
	va_end(ap);
}

void exec_result_from_wait(struct exec_result *r, int wstatus, bool timed_out, int last_signal)
{
	r->error = ERR_NONE;
	r->signal = 0;
	if (timed_out) {
		r->status = ST_TIMED_OUT;
		r->exit_code = 124;
		r->signal = WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : last_signal;
		return;
	}
	if (WIFSIGNALED(wstatus)) {
		r->status = ST_SIGNALED;
		r->signal = WTERMSIG(wstatus);
		r->exit_code = 128 + r->signal;
		return;
	}
	r->status = ST_EXITED;
	r->exit_code = WEXITSTATUS(wstatus);
}

int exec_build_env(const struct kv *const *layers, const size_t *counts, int nlayers, struct jarena *a,
		   char ***envp, const char **path)
{
	size_t total = 0;
	for (int l = 0; l < nlayers; l++)
		total += counts[l];
	struct kv *m = jarena_alloc(a, (total + 1) * sizeof *m);
	char **out = jarena_alloc(a, (total + 1) * sizeof *out);
	if (!m || !out) {
		log_msg("exec: environment too large");
		return -1;
	}
	size_t n = 0;
	for (int l = 0; l < nlayers; l++) {
		for (size_t i = 0; i < counts[l]; i++) {
			const struct kv *e = &layers[l][i];
			size_t j;
			for (j = 0; j < n; j++)
				if (strcmp(m[j].k, e->k) == 0)
					break;
			m[j] = *e;
			if (j == n)
				n++;
		}
	}
	*path = "";
	for (size_t j = 0; j < n; j++) {
		size_t kl = strlen(m[j].k), vl = strlen(m[j].v);
		char *s = jarena_alloc(a, kl + vl + 2);
		if (!s) {
			log_msg("exec: environment too large");
			return -1;
		}
		memcpy(s, m[j].k, kl);
		s[kl] = '=';
		memcpy(s + kl + 1, m[j].v, vl + 1);
		out[j] = s;
		if (strcmp(m[j].k, "PATH") == 0)
			*path = m[j].v;
	}
	out[n] = NULL;
	*envp = out;
	return 0;
}

/* ---- spawn ---- */

enum { STAGE_SETUP = 1, STAGE_CWD = 2, STAGE_EXEC = 3, STAGE_SETGROUPS = 4, STAGE_SETGID = 5, STAGE_SETUID = 6 };

struct child_report {
	int stage;
	int err;
};

static void child_fail(int fd, int stage, int err)
{
	struct child_report rep = {stage, err};
	ssize_t n = write(fd, &rep, sizeof rep);
	(void)n;
	_exit(stage == STAGE_EXEC ? 127 : 125);
}

int path_next(const char **p, const char *file, char *buf, size_t cap)
{
	const char *e = strchrnul(*p, ':');
	size_t dl = (size_t)(e - *p), fl = strlen(file);
	int rc = -1;
	if (dl + fl + 2 <= cap) {
		if (dl == 0) {
			memcpy(buf, file, fl + 1);
		} else {
			memcpy(buf, *p, dl);
			buf[dl] = '/';
			memcpy(buf + dl + 1, file, fl + 1);
		}
		rc = (int)dl;
	}
	*p = *e ? e + 1 : NULL;
	return rc;
}

/* execvpe without the ENOEXEC → /bin/sh fallback; returns the errno to report. */
static int child_exec(const char *file, char *const *argv, char *const *envp, const char *path)
{
	if (file[0] == 0)
		return ENOENT;
	if (strchr(file, '/')) {
		execve(file, argv, envp);
		return errno;
	}
	bool eacces = false;
	for (const char *p = path; p;) {
		char buf[4096];
		if (path_next(&p, file, buf, sizeof buf) < 0)
			continue;
		execve(buf, argv, envp);
		switch (errno) {
		case EACCES:
			eacces = true;
			break;
		case ENOENT:
		case ENOTDIR:
		case ESTALE:
		case ENODEV:
		case ETIMEDOUT:
		case ENAMETOOLONG:
		case ELOOP:
			break;
		default:
			return errno;
		}
	}
	return eacces ? EACCES : ENOENT;
}

int exec_spawn(const char *const *argv, char *const *envp, const char *path, const char *cwd,
	       const struct spawn_io *io, pid_t *pid, struct exec_result *r)
{
	return exec_spawn_as(argv, envp, path, cwd, io, NULL, pid, r);
}

pid_t exec_setup_pid;

/* Commands see a configured network: wait (once, briefly) for its set-up. */
static void wait_setup(void)
{
	if (exec_setup_pid <= 0)
		return;
	int st;
	while (waitpid(exec_setup_pid, &st, 0) < 0 && errno == EINTR)
		;
	exec_setup_pid = 0;
}

int exec_spawn_as(const char *const *argv, char *const *envp, const char *path, const char *cwd,
		  const struct spawn_io *io, const struct exec_user *user, pid_t *pid, struct exec_result *r)
{
	wait_setup();
	int ep[2];
	if (pipe2(ep, O_CLOEXEC) != 0) {
		exec_result_fail(r, ERR_SETUP_FAILED, "pipe: %s", strerror(errno));
		log_msg("exec: %s", r->message);
		return -1;
	}
	/* vfork: the child borrows PID 1's memory until it execs, instead of a
	 * copy of its page tables and a copy-on-write fault for every page
	 * either side touches next (~3-5 ms per exec under TCG). PID 1 waits
	 * on the report pipe until the exec anyway. The child only makes
	 * syscalls on its own stack and ends in execve or _exit. */
	pid_t c = vfork();
	if (c < 0) {
		exec_result_fail(r, ERR_SETUP_FAILED, "vfork: %s", strerror(errno));
		log_msg("exec: %s", r->message);
		close(ep[0]);
		close(ep[1]);
		return -1;
	}
	if (c == 0) {
		if (setsid() < 0)
			child_fail(ep[1], STAGE_SETUP, errno);
		/* Default dispositions before unblocking: no handler of PID 1 may
		 * run in a child that shares its memory. */
		for (int s = 1; s < NSIG; s++)
			if (s != SIGKILL && s != SIGSTOP)
				signal(s, SIG_DFL); /* fails harmlessly for the glibc-reserved RT signals */
		sigset_t none;
		sigemptyset(&none);
		if (sigprocmask(SIG_SETMASK, &none, NULL) != 0)
			child_fail(ep[1], STAGE_SETUP, errno);
		int in = io->in_fd;
		if (in < 0) {
			in = open("/dev/null", O_RDONLY);
			if (in < 0)
				child_fail(ep[1], STAGE_SETUP, errno);
		}
		if (dup2(in, 0) < 0)
			child_fail(ep[1], STAGE_SETUP, errno);
		if (io->out_fd >= 0 && dup2(io->out_fd, 1) < 0)
			child_fail(ep[1], STAGE_SETUP, errno);
		if (io->err_fd >= 0 && dup2(io->err_fd, 2) < 0)
			child_fail(ep[1], STAGE_SETUP, errno);
		/* After setsid: the terminal on fd 0 becomes this session's controlling tty. */
		if (io->ctty && ioctl(0, TIOCSCTTY, 0) != 0)
			child_fail(ep[1], STAGE_SETUP, errno);
		/* Groups first, the uid last: each needs the privilege the next one drops.
		 * The cwd is then entered with the user's permissions. */
		if (user) {
			if (setgroups(user->ngroups, user->groups) != 0)
				child_fail(ep[1], STAGE_SETGROUPS, errno);
			if (setgid(user->gid) != 0)
				child_fail(ep[1], STAGE_SETGID, errno);
			if (setuid(user->uid) != 0)
				child_fail(ep[1], STAGE_SETUID, errno);
		}
		if (chdir(cwd) != 0)
			child_fail(ep[1], STAGE_CWD, errno);
		int e = child_exec(argv[0], (char *const *)argv, envp, path);
		child_fail(ep[1], STAGE_EXEC, e);
	}
	close(ep[1]);
	struct child_report rep;
	ssize_t n;
	do
		n = read(ep[0], &rep, sizeof rep);
	while (n < 0 && errno == EINTR);
	int saved = errno;
	close(ep[0]);
	if (n == 0) {
		*pid = c;
		return 0;
	}
	/* The child is about to _exit: collect it here so nobody else sees it. */
	int st;
	while (waitpid(c, &st, 0) < 0 && errno == EINTR) {
	}
	if (n != (ssize_t)sizeof rep) {
		exec_result_fail(r, ERR_SETUP_FAILED, "exec report: %s", n < 0 ? strerror(saved) : "short read");
		log_msg("exec: %s", r->message);
		return -1;
	}
	switch (rep.stage) {
	case STAGE_CWD:
		exec_result_fail(r, ERR_BAD_CWD, "%s: %s", cwd, strerror(rep.err));
		break;
	case STAGE_SETGROUPS:
	case STAGE_SETGID:
	case STAGE_SETUID:
		exec_result_fail(r, ERR_BAD_USER, "%s %u: %s",
				 rep.stage == STAGE_SETGROUPS ? "setgroups" : rep.stage == STAGE_SETGID ? "setgid" : "setuid",
				 rep.stage == STAGE_SETUID ? (unsigned)user->uid : (unsigned)user->gid, strerror(rep.err));
		log_msg("exec: %s", r->message);
		break;
	case STAGE_EXEC:
		switch (rep.err) {
		case ENOENT:
		case ENOTDIR:
		case ENAMETOOLONG:
		case ELOOP:
			exec_result_fail(r, ERR_NOT_FOUND, "%s: %s", argv[0], strerror(rep.err));
			break;
		case EACCES:
		case EPERM:
		case ENOEXEC:
		case EISDIR:
		case ETXTBSY:
			exec_result_fail(r, ERR_NOT_EXECUTABLE, "%s: %s", argv[0], strerror(rep.err));
			break;
		default:
			exec_result_fail(r, ERR_SETUP_FAILED, "%s: %s", argv[0], strerror(rep.err));
		}
		break;
	default:
		exec_result_fail(r, ERR_SETUP_FAILED, "child setup: %s", strerror(rep.err));
	}
	return -1;
}

static const struct kv base_env[] = {{"PATH", DEFAULT_PATH}, {"HOME", "/root"}};
static const struct kv *config_env;
static size_t config_env_n;

void exec_set_config_env(const struct kv *env, size_t n)
{
	config_env = env;
	config_env_n = n;
}

int exec_env_for(const struct kv *extra, size_t extra_n, struct jarena *a, char ***envp, const char **path)
{
	return exec_env_for_user(NULL, extra, extra_n, a, envp, path);
}

int exec_env_for_user(const struct exec_user *user, const struct kv *extra, size_t extra_n, struct jarena *a,
		      char ***envp, const char **path)
{
	/* Like docker: HOME from passwd unless the image/config env sets one. */
	struct kv user_env[3];
	size_t user_n = 0;
	if (user) {
		user_env[user_n++] = (struct kv){"HOME", user->home};
		if (user->has_name) {
			user_env[user_n++] = (struct kv){"USER", user->name};
			user_env[user_n++] = (struct kv){"LOGNAME", user->name};
		}
	}
	const struct kv *layers[4] = {base_env, user_env, config_env, extra};
	size_t counts[4] = {2, user_n, config_env ? config_env_n : 0, extra ? extra_n : 0};
	return exec_build_env(layers, counts, 4, a, envp, path);
}
