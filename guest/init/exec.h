/* Exec service pieces that need no event loop: request validation, the
 * started/exit JSON, environment merging and spawning a program
 * (docs/protocol.md §3). The per-stream state machine is in session.c. */
#ifndef MA_EXEC_H
#define MA_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "json.h"
#include "user.h"

#define EXEC_MAX_ARGV 4096
#define EXEC_NO_LIMIT UINT64_MAX
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct kv {
	const char *k;
	const char *v;
};

struct exec_req {
	const char **argv; /* NULL-terminated */
	size_t argc;
	struct kv *env;
	size_t envc;
	const char *cwd; /* "/" when absent */
	bool stdin_pipe;
	uint64_t timeout_ms; /* 0 = none */
	uint64_t stdout_limit, stderr_limit; /* EXEC_NO_LIMIT when absent */
	bool tty;			     /* run on a new pseudo-terminal */
	unsigned rows, cols;		     /* tty: initial window size */
	const char *term;		     /* tty: TERM; NULL when absent */
	const char *user;		     /* OCI User (user_spec_valid); NULL when absent */
};

#define EXEC_DEFAULT_TERM "xterm-256color"

enum exec_msg_type { EXEC_MSG_EXEC, EXEC_MSG_SIGNAL, EXEC_MSG_RESIZE };

struct exec_host_msg {
	enum exec_msg_type type;
	struct exec_req req; /* EXEC_MSG_EXEC */
	int signal;	     /* EXEC_MSG_SIGNAL */
	unsigned rows, cols; /* EXEC_MSG_RESIZE */
};

enum exec_status { ST_EXITED, ST_SIGNALED, ST_TIMED_OUT, ST_FAILED_TO_START };
enum exec_error {
	ERR_NONE,
	ERR_NOT_FOUND,
	ERR_NOT_EXECUTABLE,
	ERR_BAD_CWD,
	ERR_SETUP_FAILED,
	ERR_INVALID_REQUEST,
	ERR_BAD_USER,
};

struct exec_result {
	enum exec_status status;
	int exit_code;
	int signal; /* 0 = absent */
	uint64_t stdout_bytes, stderr_bytes;
	bool stdout_truncated, stderr_truncated;
	uint64_t duration_ms;
	enum exec_error error;
	char message[512];
};

/* Validates a host JSON message on the exec stream (exec or signal). */
int exec_parse_host_json(const char *json, size_t len, struct jarena *a, struct exec_host_msg *m, char *err,
			 size_t errlen);
/* An env object: string values, keys non-empty without '=' (and, for C, no NUL). */
int parse_env(const struct jval *v, struct jarena *a, struct kv **out, size_t *n, const char *what, char *err,
	      size_t errlen);

/* The JSON payloads (no exec header). Length or -1 if cap is too small. */
long exec_format_started(pid_t pid, char *buf, size_t cap);
long exec_format_exit(const struct exec_result *r, char *buf, size_t cap);

void exec_result_fail(struct exec_result *r, enum exec_error e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Fills status/exitCode/signal from a wait status. */
void exec_result_from_wait(struct exec_result *r, int wstatus, bool timed_out, int last_signal);

/* Merges env layers (later wins, first position kept) into envp ("k=v",
 * NULL-terminated) in the arena; *path is the merged PATH. */
int exec_build_env(const struct kv *const *layers, const size_t *counts, int nlayers, struct jarena *a,
		   char ***envp, const char **path);

/* Child-side fds: in_fd -1 means /dev/null; out_fd/err_fd -1 mean inherit.
 * ctty: fd 0 (a terminal) becomes the new session's controlling terminal. */
struct spawn_io {
	int in_fd, out_fd, err_fd;
	bool ctty;
};

/* fork + exec in a new session. 0 with *pid once the program is executing;
 * -1 with r filled (failed_to_start) otherwise. */
int exec_spawn(const char *const *argv, char *const *envp, const char *path, const char *cwd,
	       const struct spawn_io *io, pid_t *pid, struct exec_result *r);
/* exec_spawn as user (NULL: as the init, root): the child calls setgroups,
 * setgid and setuid before chdir and execve; a failure is `bad_user`. */
int exec_spawn_as(const char *const *argv, char *const *envp, const char *path, const char *cwd,
		  const struct spawn_io *io, const struct exec_user *user, pid_t *pid, struct exec_result *r);

/* A child of PID 1 that must finish before any command starts (the network
 * set-up, when the NIC was not ready for PID 1 to do it); 0 when there is
 * none. The spawn functions wait for it; whoever reaps it first must clear
 * it. */
extern pid_t exec_setup_pid;

/*
 * One step of a PATH walk for file: writes the candidate "<dir>/<file>" (file
 * alone for an empty element: the cwd) to buf, moves *p to the next element
 * (NULL after the last) and returns the element's length; -1 when the
 * candidate does not fit in cap (skip it).
 */
int path_next(const char **p, const char *file, char *buf, size_t cap);

/* The config disk's env (merged over PATH/HOME for everything PID 1 runs). */
void exec_set_config_env(const struct kv *env, size_t n);
/* base + config env + extra (later wins). */
int exec_env_for(const struct kv *extra, size_t extra_n, struct jarena *a, char ***envp, const char **path);
/* base + HOME/USER/LOGNAME of user (when not NULL) + config env + extra:
 * the config env and the request's env win over the user's HOME. */
int exec_env_for_user(const struct exec_user *user, const struct kv *extra, size_t extra_n, struct jarena *a,
		      char ***envp, const char **path);
#endif
