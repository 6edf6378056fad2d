/* Mux streams and the services on them: exec (port 1) and fs (port 2)
 * (docs/protocol.md §1, §3, §6).
 *
 * Each stream owns a fixed ring that receives the host's DATA bytes; flow
 * control guarantees it never holds more than MUX_WINDOW bytes. Both
 * services use the same message framing; the parser consumes the ring in
 * order: headers and JSON are consumed at once, STDIN bytes when the
 * program's stdin (pipe or terminal) accepts them, fs data as it is written
 * to the temp file. Consumed bytes are returned to the host as CREDIT.
 * Output (pipes, the terminal, a file being read) is read only while the
 * stream holds enough credit to forward what is read (or the cap is
 * reached, then bytes are read and dropped). */
#include "session.h"
#include "exec.h"
#include "fs.h"
#include "json.h"
#include "log.h"
#include "mux.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define DRAIN_MS 2000
#define CREDIT_BATCH (MUX_WINDOW / 4)
#define KILL_AFTER_TERM_MS 500

enum sess_state {
	S_REQ,		/* waiting for the request */
	S_RUNNING,	/* exec: program running */
	S_DRAIN,	/* exec: program exited, reading the rest of its output */
	S_FS_READ,	/* fs: sending a file's bytes */
	S_FS_WRITE,	/* fs: receiving a file's bytes */
	S_EXIT_PENDING, /* the last message (exit, done, error) waits for credit */
	S_DONE,		/* last message (and EOF) sent */
	S_ZOMBIE,	/* stream reset; waiting to reap the killed program */
};

enum service { SVC_EXEC, SVC_FS };

struct stream {
	bool used;
	uint32_t id;
	enum service svc;
	enum sess_state st;
	uint32_t tx_credit;
	uint32_t rx_window;
	uint32_t credit_pending;
	bool eof_recv, eof_sent, eof_handled;
	uint8_t *ring;
	uint32_t rhead, rlen;
	/* exec message parser */
	uint8_t hdr[EXEC_HEADER_SIZE];
	uint32_t hdr_have;
	bool in_msg;
	uint8_t kind;
	uint32_t msg_len, msg_have;
	char *json;
	bool discard_input;
	bool stdin_blocked;
	/* program */
	pid_t pid;
	bool reaped;
	int wstatus;
	int fd_in, fd_out, fd_err;
	uint64_t out_limit, err_limit;
	int64_t start_ms, end_ms, deadline_ms, kill_ms, drain_ms;
	bool timed_out;
	int last_sig;
	bool tty;    /* fd_out is the terminal's master; fd_in a duplicate of it */
	bool hangup; /* tty session hung up: kill_ms is its SIGKILL sweep */
	struct exec_result res;
	/* fs */
	int fs_fd;	     /* the file being read */
	struct fs_write fw; /* the file being written (fw.fd >= 0) */
	uint64_t fs_size, fs_bytes;
	/* the last message */
	char finalbuf[2048];
	long finallen;
};

static struct stream streams[MUX_MAX_STREAMS];
static uint8_t rings[MUX_MAX_STREAMS][MUX_WINDOW];
static uint32_t max_opened_id;
bool sess_closing;

/* One request is parsed and spawned at a time: a bounded arena is enough. */
#define REQ_ARENA_SIZE (8u << 20)
#define REQ_MAX_NODES 32768
static char req_arena_buf[REQ_ARENA_SIZE];
static struct jarena req_arena = {req_arena_buf, REQ_ARENA_SIZE, 0, 0, REQ_MAX_NODES};

static uint8_t iobuf[MUX_MAX_DATA];
/* The request's user, resolved (one request is started at a time). */
static struct exec_user req_user;

static struct stream *find(uint32_t id)
{
	for (int i = 0; i < MUX_MAX_STREAMS; i++)
		if (streams[i].used && streams[i].id == id)
			return &streams[i];
	return NULL;
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

static void free_stream(struct stream *s)
{
	close_fd(&s->fd_in);
	close_fd(&s->fd_out);
	close_fd(&s->fd_err);
	close_fd(&s->fs_fd);
	fs_write_abort(&s->fw);
	free(s->json);
	s->json = NULL;
	s->used = false;
	log_debug("stream %u closed", s->id);
}

static void maybe_free(struct stream *s)
{
	/* A hung-up session keeps its stream until the SIGKILL sweep (sess_timers). */
	if (s->st == S_DONE && s->eof_sent && s->eof_recv && !(s->hangup && s->kill_ms > 0))
		free_stream(s);
}

static void take(struct stream *s, uint32_t n)
{
	s->rhead = (s->rhead + n) % MUX_WINDOW;
	s->rlen -= n;
	s->credit_pending += n;
}

static int send_exec(struct stream *s, uint8_t kind, const void *p, uint32_t n)
{
	uint8_t h[EXEC_HEADER_SIZE];
	exec_encode_header(h, kind, n);
	s->tx_credit -= n + EXEC_HEADER_SIZE;
	return mux_send2(s->id, F_DATA, h, sizeof h, p, n);
}

static void try_send_final(struct stream *s)
{
	if (s->st != S_EXIT_PENDING || s->tx_credit < (uint32_t)s->finallen + EXEC_HEADER_SIZE)
		return;
	send_exec(s, EK_JSON, s->finalbuf, (uint32_t)s->finallen);
	mux_send(s->id, F_EOF, NULL, 0);
	s->eof_sent = true;
	s->st = S_DONE;
	s->discard_input = true;
	log_debug("stream %u: last message sent: %.*s", s->id, (int)s->finallen, s->finalbuf);
	maybe_free(s);
}

/* finalbuf holds the last message: send it (with EOF) once credit allows;
 * whatever the host still sends is read and dropped. */
static void queue_final(struct stream *s)
{
	s->st = S_EXIT_PENDING;
	s->discard_input = true;
	try_send_final(s);
}

static void queue_exit(struct stream *s)
{
	s->finallen = exec_format_exit(&s->res, s->finalbuf, sizeof s->finalbuf);
	if (s->finallen < 0) {
		/* Cannot happen with the bounded message; keep the stream sane. */
		log_msg("stream %u: exit message too large", s->id);
		s->res.message[0] = 0;
		s->finallen = exec_format_exit(&s->res, s->finalbuf, sizeof s->finalbuf);
	}
	queue_final(s);
}

/* The fs operation failed: drop the file, answer an error. */
static void fs_fail(struct stream *s, enum fs_error code, const char *msg)
{
	close_fd(&s->fs_fd);
	fs_write_abort(&s->fw);
	log_debug("stream %u: fs error %s: %s", s->id, fs_error_name(code), msg);
	s->finallen = fs_format_error(code, msg, s->finalbuf, sizeof s->finalbuf);
	queue_final(s);
}

static void fs_finish(struct stream *s)
{
	s->finallen = fs_format_done(s->fs_bytes, s->finalbuf, sizeof s->finalbuf);
	queue_final(s);
}

/* The program's exit and output are settled: report. */
static void finalize(struct stream *s)
{
	close_fd(&s->fd_in);
	close_fd(&s->fd_out);
	close_fd(&s->fd_err);
	exec_result_from_wait(&s->res, s->wstatus, s->timed_out, s->last_sig);
	s->res.duration_ms = (uint64_t)(s->end_ms - s->start_ms);
	s->discard_input = true;
	queue_exit(s);
}

static void check_drained(struct stream *s)
{
	if (s->st == S_DRAIN && s->fd_out < 0 && s->fd_err < 0)
		finalize(s);
}

static void fail_start(struct stream *s)
{
	s->res.duration_ms = 0;
	s->discard_input = true;
	log_debug("stream %u: failed to start: %s", s->id, s->res.message);
	queue_exit(s);
}

/* Signals every process of session sid: its leader's group, then (jobs of
 * a shell run in their own groups) every process whose session is sid. */
static void kill_session(pid_t sid, int sig)
{
	if (kill(-sid, sig) != 0 && errno != ESRCH)
		log_msg("kill -%d: %s", sid, strerror(errno));
	DIR *d = opendir("/proc");
	if (!d) {
		log_msg("opendir /proc: %s", strerror(errno));
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end != 0 || pid <= 1)
			continue;
		char path[64], buf[512];
		snprintf(path, sizeof path, "/proc/%ld/stat", pid);
		if (read_text_file(path, buf, sizeof buf) < 0)
			continue;
		/* "pid (comm) state ppid pgrp session ..."; comm may contain anything. */
		const char *p = strrchr(buf, ')');
		int ppid, pgrp, session;
		char state;
		if (p && sscanf(p + 1, " %c %d %d %d", &state, &ppid, &pgrp, &session) == 4 && session == sid &&
		    kill((pid_t)pid, sig) != 0 && errno != ESRCH)
			log_msg("kill %ld: %s", pid, strerror(errno));
	}
	closedir(d);
}

/* The terminal's user went away (RESET, or EOF: a client that closes its
 * connection): SIGHUP to the session now, SIGKILL to what is left of it
 * KILL_AFTER_TERM_MS later (sess_timers). */
static void hang_up(struct stream *s)
{
	if (s->hangup)
		return;
	log_debug("stream %u: hanging up session %d", s->id, s->pid);
	s->hangup = true;
	kill_session(s->pid, SIGHUP);
	s->kill_ms = now_ms() + KILL_AFTER_TERM_MS;
}

/* The stream is finished from our side without an exit: RESET it. */
static void reset_stream(struct stream *s, const char *reason, bool send)
{
	if (send)
		mux_send(s->id, F_RESET, reason, strlen(reason));
	log_debug("stream %u reset: %s", s->id, reason);
	if (s->pid > 0 && !s->reaped && s->st != S_DONE && s->st != S_EXIT_PENDING) {
		if (s->tty)
			hang_up(s);
		else if (kill(-s->pid, SIGKILL) != 0 && errno != ESRCH) {
			log_msg("kill -%d: %s", s->pid, strerror(errno));
		}
		close_fd(&s->fd_in);
		close_fd(&s->fd_out);
		close_fd(&s->fd_err);
		s->st = S_ZOMBIE;
		s->discard_input = true;
		return;
	}
	free_stream(s);
}

/* A bad message from the host on this stream (§3, §6). */
static void violation(struct stream *s, const char *msg)
{
	if (s->svc == SVC_FS) {
		/* fs answers every violation with an error (the stream is not reset). */
		if (s->st != S_EXIT_PENDING && s->st != S_DONE)
			fs_fail(s, FSE_INVALID_REQUEST, msg);
		return;
	}
	if (s->st == S_REQ) {
		exec_result_fail(&s->res, ERR_INVALID_REQUEST, "%s", msg);
		fail_start(s);
		return;
	}
	log_msg("stream %u: %s", s->id, msg);
	reset_stream(s, msg, true);
}

static int nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		log_msg("fcntl O_NONBLOCK: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* A new pseudo-terminal of rows x cols: the master (non-blocking), a
 * duplicate of it for input, and the slave for the child. */
static int open_pty(struct stream *s, const struct exec_req *req, int *master, int *in, int *slave)
{
	char name[64];
	*master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*master < 0) {
		exec_result_fail(&s->res, ERR_SETUP_FAILED, "posix_openpt: %s", strerror(errno));
		return -1;
	}
	struct winsize ws = {(unsigned short)req->rows, (unsigned short)req->cols, 0, 0};
	if (grantpt(*master) != 0 || unlockpt(*master) != 0 || ptsname_r(*master, name, sizeof name) != 0 ||
	    ioctl(*master, TIOCSWINSZ, &ws) != 0) {
		exec_result_fail(&s->res, ERR_SETUP_FAILED, "pty setup: %s", strerror(errno));
		return -1;
	}
	*slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*slave < 0) {
		exec_result_fail(&s->res, ERR_SETUP_FAILED, "open %s: %s", name, strerror(errno));
		return -1;
	}
	if (nonblock(*master) != 0 || (*in = fcntl(*master, F_DUPFD_CLOEXEC, 0)) < 0) {
		exec_result_fail(&s->res, ERR_SETUP_FAILED, "pty fcntl: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static void start(struct stream *s, const struct exec_req *req)
{
	char **envp;
	const char *path;
	int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
	memset(&s->res, 0, sizeof s->res);
	const struct exec_user *user = NULL;
	if (req->user) {
		char msg[sizeof s->res.message];
		if (user_resolve(req->user, "/etc/passwd", "/etc/group", &req_user, msg, sizeof msg) != 0) {
			exec_result_fail(&s->res, ERR_BAD_USER, "%s", msg);
			fail_start(s);
			return;
		}
		user = &req_user;
	}
	const struct kv *env = req->env;
	size_t envc = req->envc;
	if (req->tty) {
		/* TERM: an explicit tty.term wins over env; the default loses to env. */
		struct kv *e = jarena_alloc(&req_arena, (envc + 1) * sizeof *e);
		if (e) {
			size_t at = req->term ? envc : 0;
			memcpy(e + (req->term ? 0 : 1), env, envc * sizeof *e);
			e[at] = (struct kv){"TERM", req->term ? req->term : EXEC_DEFAULT_TERM};
		}
		env = e;
		envc++;
	}
	if (!env && envc > 0) {
		exec_result_fail(&s->res, ERR_SETUP_FAILED, "environment too large");
		fail_start(s);
		return;
	}
	if (exec_env_for_user(user, env, envc, &req_arena, &envp, &path) != 0) {
		exec_result_fail(&s->res, ERR_SETUP_FAILED, "environment too large");
		fail_start(s);
		return;
	}
	if (req->tty) {
		int master = -1, dup_in = -1, slave = -1;
		s->tty = true;
		if (open_pty(s, req, &master, &dup_in, &slave) != 0) {
			log_msg("stream %u: %s", s->id, s->res.message);
			close_fd(&master);
			close_fd(&dup_in);
			close_fd(&slave);
			fail_start(s);
			return;
		}
		/* The user owns its terminal (the group stays tty's, mode 0620). */
		if (user && fchown(slave, user->uid, (gid_t)-1) != 0) {
			exec_result_fail(&s->res, ERR_SETUP_FAILED, "chown pty: %s", strerror(errno));
			log_msg("stream %u: %s", s->id, s->res.message);
			close(master);
			close(dup_in);
			close(slave);
			fail_start(s);
			return;
		}
		struct spawn_io tio = {slave, slave, slave, true};
		int64_t t0 = now_ms();
		int rc = exec_spawn_as(req->argv, envp, path, req->cwd, &tio, user, &s->pid, &s->res);
		/* Only the child holds the slave now: the master reads EIO once it is gone. */
		close(slave);
		if (rc != 0) {
			close(master);
			close(dup_in);
			fail_start(s);
			return;
		}
		s->fd_in = dup_in;
		s->fd_out = master;
		s->fd_err = -1;
		s->start_ms = t0;
		goto started;
	}
	if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 ||
	    (req->stdin_pipe && pipe2(in, O_CLOEXEC) != 0)) {
		exec_result_fail(&s->res, ERR_SETUP_FAILED, "pipe: %s", strerror(errno));
		log_msg("stream %u: %s", s->id, s->res.message);
		goto fail;
	}
	if (nonblock(out[0]) || nonblock(err[0]) || (in[1] >= 0 && nonblock(in[1]))) {
		exec_result_fail(&s->res, ERR_SETUP_FAILED, "fcntl: %s", strerror(errno));
		goto fail;
	}
	struct spawn_io io = {in[0], out[1], err[1], false};
	int64_t t0 = now_ms();
	if (exec_spawn_as(req->argv, envp, path, req->cwd, &io, user, &s->pid, &s->res) != 0)
		goto fail;
	close(out[1]);
	close(err[1]);
	if (in[0] >= 0)
		close(in[0]);
	s->fd_in = in[1];
	s->fd_out = out[0];
	s->fd_err = err[0];
	s->start_ms = t0;
started:
	s->reaped = false;
	s->deadline_ms = req->timeout_ms ? s->start_ms + (int64_t)req->timeout_ms : 0;
	s->kill_ms = 0;
	s->out_limit = req->stdout_limit;
	s->err_limit = req->stderr_limit;
	s->st = S_RUNNING;
	log_debug("stream %u: started %s pid %d%s", s->id, req->argv[0], s->pid, s->tty ? " on a tty" : "");
	char buf[64];
	long n = exec_format_started(s->pid, buf, sizeof buf);
	send_exec(s, EK_JSON, buf, (uint32_t)n);
	return;
fail:
	for (int i = 0; i < 2; i++) {
		close_fd(&in[i]);
		close_fd(&out[i]);
		close_fd(&err[i]);
	}
	fail_start(s);
}

static void fs_pump_read(struct stream *s);

static void fs_start(struct stream *s, const struct fs_req *r)
{
	char msg[512];
	enum fs_error code;
	if (r->op == FS_READ) {
		struct stat st;
		if (fs_open_read(r->path, &s->fs_fd, &st, &code, msg, sizeof msg) != 0) {
			fs_fail(s, code, msg);
			return;
		}
		char buf[256];
		long n = fs_format_stat((uint64_t)st.st_size, st.st_mode & 07777, st.st_uid, st.st_gid, buf,
					sizeof buf);
		send_exec(s, EK_JSON, buf, (uint32_t)n); /* the first message: the window is untouched */
		s->st = S_FS_READ;
		log_debug("stream %u: reading %s (%lld bytes)", s->id, r->path, (long long)st.st_size);
		fs_pump_read(s);
		return;
	}
	if (fs_write_begin(r, &s->fw, &code, msg, sizeof msg) != 0) {
		fs_fail(s, code, msg);
		return;
	}
	s->fs_size = r->size;
	s->st = S_FS_WRITE;
	log_debug("stream %u: writing %s (%llu bytes)", s->id, r->path, (unsigned long long)r->size);
}

/* Sends file bytes while the stream holds credit; done at EOF. */
static void fs_pump_read(struct stream *s)
{
	while (s->st == S_FS_READ && s->tx_credit >= EXEC_HEADER_SIZE + 1) {
		size_t want = s->tx_credit - EXEC_HEADER_SIZE;
		if (want > MUX_MAX_DATA - EXEC_HEADER_SIZE)
			want = MUX_MAX_DATA - EXEC_HEADER_SIZE;
		ssize_t n = read(s->fs_fd, iobuf, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			char msg[256];
			snprintf(msg, sizeof msg, "read: %s", strerror(errno));
			fs_fail(s, FSE_IO_ERROR, msg);
			return;
		}
		if (n == 0) {
			close_fd(&s->fs_fd);
			fs_finish(s);
			return;
		}
		s->fs_bytes += (uint64_t)n;
		send_exec(s, FK_DATA_TO_HOST, iobuf, (uint32_t)n);
	}
}

/* The zero-length data message: the host has sent everything. */
static void fs_data_end(struct stream *s)
{
	if (s->st != S_FS_WRITE) {
		violation(s, "data message without a write request");
		return;
	}
	if (s->fs_bytes != s->fs_size) {
		char msg[128];
		snprintf(msg, sizeof msg, "received %llu bytes, the request's size is %llu",
			 (unsigned long long)s->fs_bytes, (unsigned long long)s->fs_size);
		violation(s, msg);
		return;
	}
	char msg[512];
	enum fs_error code;
	if (fs_write_commit(&s->fw, &code, msg, sizeof msg) != 0) {
		fs_fail(s, code, msg);
		return;
	}
	fs_finish(s);
}

static void fs_handle_json(struct stream *s)
{
	struct fs_req r;
	char err[256];
	jarena_reset(&req_arena);
	int rc = fs_parse_request(s->json, s->msg_len, &req_arena, &r, err, sizeof err);
	free(s->json);
	s->json = NULL;
	if (s->st != S_REQ)
		violation(s, "unexpected JSON message after the request");
	else if (rc != 0)
		violation(s, err);
	else
		fs_start(s, &r);
}

static void handle_json(struct stream *s)
{
	if (s->svc == SVC_FS) {
		fs_handle_json(s);
		return;
	}
	struct exec_host_msg m;
	char err[256];
	jarena_reset(&req_arena);
	int rc = exec_parse_host_json(s->json, s->msg_len, &req_arena, &m, err, sizeof err);
	free(s->json);
	s->json = NULL;
	if (s->st == S_REQ) {
		if (rc != 0)
			violation(s, err);
		else if (m.type != EXEC_MSG_EXEC)
			violation(s, "the first message must be an exec request");
		else
			start(s, &m.req);
		return;
	}
	if (rc != 0) {
		violation(s, err);
		return;
	}
	if (m.type == EXEC_MSG_EXEC) {
		violation(s, "exec request after start");
		return;
	}
	if (m.type == EXEC_MSG_RESIZE) {
		/* The kernel sends SIGWINCH to the terminal's foreground group. Ignored without a tty. */
		struct winsize ws = {(unsigned short)m.rows, (unsigned short)m.cols, 0, 0};
		if (s->tty && s->fd_out >= 0 && ioctl(s->fd_out, TIOCSWINSZ, &ws) != 0)
			log_msg("stream %u: TIOCSWINSZ: %s", s->id, strerror(errno));
		return;
	}
	if (s->st == S_RUNNING && !s->reaped) {
		log_debug("stream %u: signal %d", s->id, m.signal);
		if (kill(-s->pid, m.signal) != 0 && errno != ESRCH)
			log_msg("kill -%d %d: %s", s->pid, m.signal, strerror(errno));
	}
}

static void host_eof_effects(struct stream *s)
{
	if (s->eof_handled || !s->eof_recv || s->rlen > 0)
		return;
	s->eof_handled = true;
	if (s->st == S_REQ) {
		violation(s, s->svc == SVC_FS ? "stream ended before the request" : "stream ended before the exec request");
		return;
	}
	if (s->st == S_FS_WRITE) {
		violation(s, "stream ended before the end of the data");
		return;
	}
	if (s->tty && s->st == S_RUNNING && !s->reaped)
		hang_up(s);
	close_fd(&s->fd_in);
	maybe_free(s);
}

/* Consumes the ring as far as possible. */
static void consume(struct stream *s)
{
	while (s->used && s->rlen > 0 && !s->stdin_blocked) {
		uint8_t *p = s->ring + s->rhead;
		uint32_t avail = MUX_WINDOW - s->rhead;
		if (avail > s->rlen)
			avail = s->rlen;
		if (s->discard_input) {
			take(s, avail);
			continue;
		}
		if (!s->in_msg) {
			uint32_t n = EXEC_HEADER_SIZE - s->hdr_have;
			if (n > avail)
				n = avail;
			memcpy(s->hdr + s->hdr_have, p, n);
			s->hdr_have += n;
			take(s, n);
			if (s->hdr_have < EXEC_HEADER_SIZE)
				continue;
			s->hdr_have = 0;
			char err[128];
			if (exec_decode_header(s->hdr, &s->kind, &s->msg_len, err, sizeof err) != 0) {
				violation(s, err);
				continue;
			}
			s->msg_have = 0;
			if (s->kind == EK_JSON) {
				if (s->msg_len == 0) {
					violation(s, "empty JSON message");
					continue;
				}
				s->json = malloc(s->msg_len + 1);
				if (!s->json) {
					log_msg("stream %u: out of memory", s->id);
					violation(s, "out of memory");
					continue;
				}
				s->in_msg = true;
			} else if (s->kind == EK_STDIN && s->svc == SVC_FS) { /* FK_DATA_TO_GUEST */
				if (s->msg_len == 0)
					fs_data_end(s);
				else
					s->in_msg = true;
			} else if (s->kind == EK_STDIN) {
				/* With a tty, a zero-length STDIN means nothing: ^D is the user's to type. */
				if (s->msg_len == 0 && !s->tty) {
					log_debug("stream %u: stdin closed", s->id);
					close_fd(&s->fd_in);
				} else if (s->msg_len > 0) {
					s->in_msg = true;
				}
			} else {
				violation(s, s->svc == SVC_FS ? "unexpected fs message kind from the host"
							       : "unexpected exec message kind from the host");
			}
			continue;
		}
		uint32_t n = s->msg_len - s->msg_have;
		if (n > avail)
			n = avail;
		if (s->kind == EK_JSON) {
			memcpy(s->json + s->msg_have, p, n);
			take(s, n);
			s->msg_have += n;
			if (s->msg_have == s->msg_len) {
				s->in_msg = false;
				s->json[s->msg_len] = 0;
				handle_json(s);
			}
			continue;
		}
		if (s->svc == SVC_FS) {
			if (s->st != S_FS_WRITE) {
				violation(s, "data message without a write request");
				continue;
			}
			if (n > s->fs_size - s->fs_bytes) {
				violation(s, "more data than the request's size");
				continue;
			}
			char msg[512];
			enum fs_error code;
			if (fs_write_data(&s->fw, p, n, &code, msg, sizeof msg) != 0) {
				fs_fail(s, code, msg);
				continue;
			}
			take(s, n);
			s->fs_bytes += n;
			s->msg_have += n;
			if (s->msg_have == s->msg_len)
				s->in_msg = false;
			continue;
		}
		/* STDIN: bytes before the start or after the close are dropped. */
		if (s->st == S_REQ) {
			violation(s, "stdin data before the exec request");
			continue;
		}
		if (s->fd_in < 0) {
			take(s, n);
		} else {
			ssize_t w = write(s->fd_in, p, n);
			if (w < 0) {
				if (errno == EAGAIN) {
					s->stdin_blocked = true;
					break;
				}
				if (errno == EINTR)
					continue;
				if (errno != EPIPE)
					log_msg("stream %u: stdin write: %s", s->id, strerror(errno));
				close_fd(&s->fd_in);
				continue;
			}
			n = (uint32_t)w;
			take(s, n);
		}
		s->msg_have += n;
		if (s->msg_have == s->msg_len)
			s->in_msg = false;
	}
	if (s->used)
		host_eof_effects(s);
}

void sess_on_open(uint32_t id, uint32_t port)
{
	if (id == 0 || id <= max_opened_id || find(id)) {
		mux_protocol_error("OPEN of stream %u: ids must be new and increasing", id);
		return;
	}
	max_opened_id = id;
	char reason[64];
	if (port != GUEST_PORT_EXEC && port != GUEST_PORT_FS) {
		snprintf(reason, sizeof reason, "no service on port %u", port);
		mux_send(id, F_RESET, reason, strlen(reason));
		return;
	}
	if (sess_closing) {
		mux_send(id, F_RESET, "powering off", 12);
		return;
	}
	for (int i = 0; i < MUX_MAX_STREAMS; i++) {
		struct stream *s = &streams[i];
		if (s->used)
			continue;
		memset(s, 0, sizeof *s);
		s->used = true;
		s->id = id;
		s->svc = port == GUEST_PORT_FS ? SVC_FS : SVC_EXEC;
		s->st = S_REQ;
		s->tx_credit = MUX_WINDOW;
		s->rx_window = MUX_WINDOW;
		s->ring = rings[i];
		s->fd_in = s->fd_out = s->fd_err = -1;
		s->fs_fd = -1;
		s->fw.fd = -1;
		mux_send(id, F_OPEN_OK, NULL, 0);
		log_debug("stream %u opened", id);
		return;
	}
	mux_send(id, F_RESET, "too many streams", 16);
}

/* Frames for unknown ids: crossing a RESET (ignored) or never opened (fatal). */
static struct stream *lookup(uint32_t id, const char *what)
{
	struct stream *s = find(id);
	if (!s && id > max_opened_id)
		mux_protocol_error("%s on stream %u that was never opened", what, id);
	if (s && s->st == S_ZOMBIE)
		return NULL;
	return s;
}

void sess_on_data(uint32_t id, const uint8_t *p, uint32_t len)
{
	struct stream *s = lookup(id, "DATA");
	if (!s)
		return;
	if (s->eof_recv) {
		mux_protocol_error("DATA after EOF on stream %u", id);
		return;
	}
	if (len > s->rx_window) {
		mux_protocol_error("stream %u: DATA beyond the window (%u > %u)", id, len, s->rx_window);
		return;
	}
	s->rx_window -= len;
	uint32_t tail = (s->rhead + s->rlen) % MUX_WINDOW;
	uint32_t first = MUX_WINDOW - tail;
	if (first > len)
		first = len;
	memcpy(s->ring + tail, p, first);
	memcpy(s->ring, p + first, len - first);
	s->rlen += len;
	consume(s);
}

void sess_on_eof(uint32_t id)
{
	struct stream *s = lookup(id, "EOF");
	if (!s)
		return;
	if (s->eof_recv) {
		mux_protocol_error("second EOF on stream %u", id);
		return;
	}
	s->eof_recv = true;
	consume(s);
}

void sess_on_reset(uint32_t id)
{
	struct stream *s = lookup(id, "RESET");
	if (!s)
		return;
	reset_stream(s, "reset by the host", false);
}

void sess_on_credit(uint32_t id, uint32_t inc)
{
	struct stream *s = lookup(id, "CREDIT");
	if (!s)
		return;
	if (inc > MUX_WINDOW - s->tx_credit) {
		mux_protocol_error("stream %u: CREDIT beyond the window", id);
		return;
	}
	s->tx_credit += inc;
	fs_pump_read(s);
	try_send_final(s);
}

void sess_flush_credits(void)
{
	for (int i = 0; i < MUX_MAX_STREAMS; i++) {
		struct stream *s = &streams[i];
		if (!s->used || s->credit_pending == 0 || s->st == S_ZOMBIE)
			continue;
		/* Coalesce: one CREDIT per virtio-serial read (a page) costs the host and us a
		 * frame each. Holding back less than CREDIT_BATCH while the host still holds
		 * half the window never stalls it. */
		if (s->credit_pending < CREDIT_BATCH && s->rx_window >= MUX_WINDOW / 2)
			continue;
		/* A stream we finished whose host side is still open keeps getting credit. */
		if (mux_send_u32(s->id, F_CREDIT, s->credit_pending) != 0)
			return;
		s->rx_window += s->credit_pending;
		s->credit_pending = 0;
	}
}

/* Reads one chunk of stdout (kind EK_STDOUT) or stderr. */
static void pump(struct stream *s, uint8_t kind)
{
	int *fd = kind == EK_STDOUT ? &s->fd_out : &s->fd_err;
	uint64_t *bytes = kind == EK_STDOUT ? &s->res.stdout_bytes : &s->res.stderr_bytes;
	uint64_t limit = kind == EK_STDOUT ? s->out_limit : s->err_limit;
	bool *trunc = kind == EK_STDOUT ? &s->res.stdout_truncated : &s->res.stderr_truncated;
	bool capped = *bytes >= limit;
	size_t want = sizeof iobuf;
	if (!capped) {
		if (s->tx_credit < EXEC_HEADER_SIZE + 1)
			return;
		want = s->tx_credit - EXEC_HEADER_SIZE;
		if (want > MUX_MAX_DATA - EXEC_HEADER_SIZE)
			want = MUX_MAX_DATA - EXEC_HEADER_SIZE;
	}
	ssize_t n = read(*fd, iobuf, want);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		/* A terminal's master reads EIO once no process holds the slave: its EOF. */
		if (!(s->tty && errno == EIO))
			log_msg("stream %u: read output: %s", s->id, strerror(errno));
		n = 0;
	}
	if (n == 0) {
		close_fd(fd);
		check_drained(s);
		return;
	}
	uint64_t fwd = capped ? 0 : limit - *bytes;
	if (fwd > (uint64_t)n)
		fwd = (uint64_t)n;
	*bytes += (uint64_t)n;
	if (fwd < (uint64_t)n)
		*trunc = true;
	if (fwd > 0)
		send_exec(s, kind, iobuf, (uint32_t)fwd);
}

/* Which stream/fd each pollfd of the last fill belongs to. */
static struct {
	struct stream *s;
	int which; /* 0 stdin, 1 stdout, 2 stderr */
} pmap[MUX_MAX_STREAMS * 3];

static bool wants_output(const struct stream *s, int fd, uint64_t bytes, uint64_t limit)
{
	return fd >= 0 && (s->st == S_RUNNING || s->st == S_DRAIN) &&
	       (bytes >= limit || s->tx_credit >= EXEC_HEADER_SIZE + 1);
}

int sess_poll_fill(struct pollfd *pfds, int max)
{
	int n = 0;
	for (int i = 0; i < MUX_MAX_STREAMS && n + 3 <= max; i++) {
		struct stream *s = &streams[i];
		if (!s->used)
			continue;
		if (s->fd_in >= 0 && s->stdin_blocked) {
			pfds[n] = (struct pollfd){s->fd_in, POLLOUT, 0};
			pmap[n].s = s;
			pmap[n++].which = 0;
		}
		if (wants_output(s, s->fd_out, s->res.stdout_bytes, s->out_limit)) {
			pfds[n] = (struct pollfd){s->fd_out, POLLIN, 0};
			pmap[n].s = s;
			pmap[n++].which = 1;
		}
		if (wants_output(s, s->fd_err, s->res.stderr_bytes, s->err_limit)) {
			pfds[n] = (struct pollfd){s->fd_err, POLLIN, 0};
			pmap[n].s = s;
			pmap[n++].which = 2;
		}
	}
	return n;
}

void sess_poll_handle(const struct pollfd *pfds, int n)
{
	for (int i = 0; i < n; i++) {
		struct stream *s = pmap[i].s;
		if (!pfds[i].revents || !s->used)
			continue;
		switch (pmap[i].which) {
		case 0:
			if (s->fd_in == pfds[i].fd) {
				s->stdin_blocked = false;
				consume(s);
			}
			break;
		case 1:
			if (s->fd_out == pfds[i].fd)
				pump(s, EK_STDOUT);
			break;
		case 2:
			if (s->fd_err == pfds[i].fd)
				pump(s, EK_STDERR);
			break;
		}
	}
}

int64_t sess_next_deadline(void)
{
	int64_t d = -1;
	for (int i = 0; i < MUX_MAX_STREAMS; i++) {
		struct stream *s = &streams[i];
		if (!s->used)
			continue;
		int64_t t[3] = {s->st == S_RUNNING ? s->deadline_ms : 0, s->kill_ms,
				s->st == S_DRAIN ? s->drain_ms : 0};
		for (int k = 0; k < 3; k++)
			if (t[k] > 0 && (d < 0 || t[k] < d))
				d = t[k];
	}
	return d;
}

void sess_timers(int64_t now)
{
	for (int i = 0; i < MUX_MAX_STREAMS; i++) {
		struct stream *s = &streams[i];
		if (!s->used)
			continue;
		if (s->st == S_RUNNING && s->deadline_ms > 0 && now >= s->deadline_ms) {
			s->deadline_ms = 0;
			s->timed_out = true;
			s->last_sig = SIGTERM;
			s->kill_ms = now + KILL_AFTER_TERM_MS;
			log_debug("stream %u: timed out", s->id);
			if (kill(-s->pid, SIGTERM) != 0 && errno != ESRCH)
				log_msg("kill -%d: %s", s->pid, strerror(errno));
		}
		if (s->kill_ms > 0 && now >= s->kill_ms) {
			s->kill_ms = 0;
			if (s->hangup) {
				/* The SIGKILL sweep after a hang-up (hang_up). */
				kill_session(s->pid, SIGKILL);
				if (s->st == S_ZOMBIE && s->reaped) {
					free_stream(s);
					continue;
				}
				maybe_free(s);
				if (!s->used)
					continue;
			} else if (!s->reaped) {
				s->last_sig = SIGKILL;
				if (kill(-s->pid, SIGKILL) != 0 && errno != ESRCH)
					log_msg("kill -%d: %s", s->pid, strerror(errno));
			}
		}
		if (s->st == S_DRAIN && now >= s->drain_ms) {
			log_debug("stream %u: output still open %d ms after exit; not waiting", s->id, DRAIN_MS);
			finalize(s);
		}
	}
}

bool sess_on_child_exit(pid_t pid, int wstatus)
{
	for (int i = 0; i < MUX_MAX_STREAMS; i++) {
		struct stream *s = &streams[i];
		if (!s->used || s->pid != pid || s->reaped)
			continue;
		s->reaped = true;
		s->wstatus = wstatus;
		s->end_ms = now_ms();
		if (s->st == S_ZOMBIE) {
			/* A hung-up terminal session waits for its SIGKILL sweep (sess_timers). */
			if (!(s->hangup && s->kill_ms > 0))
				free_stream(s);
			return true;
		}
		close_fd(&s->fd_in);
		s->st = S_DRAIN;
		s->drain_ms = s->end_ms + DRAIN_MS;
		check_drained(s);
		return true;
	}
	return false;
}

void sess_signal_all(int sig)
{
	for (int i = 0; i < MUX_MAX_STREAMS; i++) {
		struct stream *s = &streams[i];
		if (s->used && s->pid > 0 && !s->reaped && kill(-s->pid, sig) != 0 && errno != ESRCH)
			log_msg("kill -%d %d: %s", s->pid, sig, strerror(errno));
	}
}

void sess_drop_all(void)
{
	/* A new host session (after a reconnect) numbers its streams from 1 again. */
	max_opened_id = 0;
	for (int i = 0; i < MUX_MAX_STREAMS; i++)
		if (streams[i].used && streams[i].st != S_ZOMBIE)
			reset_stream(&streams[i], "channel lost", false);
}

int sess_count(void)
{
	int n = 0;
	for (int i = 0; i < MUX_MAX_STREAMS; i++)
		n += streams[i].used;
	return n;
}
