/* The stream table and exec service driven over a socketpair on the build
 * host: flow control, stdin, invalid requests, resets. */
#include "exec.h"
#include "fs.h"
#include "mux.h"
#include "session.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int host_fd;
static uint8_t hbuf[1 << 20];
static size_t hlen;

struct hstream {
	size_t data_bytes; /* DATA payload received (credit spent) */
	size_t credited;   /* credit we returned */
	size_t guest_credit; /* CREDIT received from the guest */
	uint8_t ebuf[1 << 16];
	size_t elen;
	size_t out, err;
	char exit[1024];  /* the last JSON message (exit, done, error) */
	char first[1024]; /* the first JSON message (started, stat, …) */
	uint8_t *data;	  /* STDOUT / fs data bytes (up to datacap) */
	size_t datalen, datacap;
	bool started, open_ok, eof;
	char reset[256];
	size_t host_sent; /* DATA payload we sent (spends the guest's window) */
} hs[32];

static void host_parse(void)
{
	ssize_t n;
	while ((n = read(host_fd, hbuf + hlen, sizeof hbuf - hlen)) > 0)
		hlen += (size_t)n;
	size_t off = 0;
	while (hlen - off >= MUX_HEADER_SIZE) {
		struct mux_hdr h;
		char err[100];
		CHECK(mux_decode_header(hbuf + off, &h, err, sizeof err) == 0, "guest frame: %s", err);
		if (hlen - off < MUX_HEADER_SIZE + h.len)
			break;
		uint8_t *p = hbuf + off + MUX_HEADER_SIZE;
		struct hstream *s = &hs[h.stream < 32 ? h.stream : 0];
		switch (h.type) {
		case F_OPEN_OK: s->open_ok = true; break;
		case F_EOF: s->eof = true; break;
		case F_RESET: snprintf(s->reset, sizeof s->reset, "%.*s", (int)h.len, p); break;
		case F_CREDIT: s->guest_credit += get_be32(p); break;
		case F_DATA:
			s->data_bytes += h.len;
			CHECK(h.len <= MUX_MAX_DATA, "DATA size");
			memcpy(s->ebuf + s->elen, p, h.len);
			s->elen += h.len;
			while (s->elen >= 5) {
				uint32_t l = get_be32(s->ebuf + 1);
				if (s->elen < 5 + l)
					break;
				const char *j = (const char *)s->ebuf + 5;
				bool json = s->ebuf[0] == EK_JSON;
				if (s->ebuf[0] == EK_STDOUT) { /* also FK_DATA_TO_HOST */
					s->out += l;
					size_t k = s->datalen + l <= s->datacap ? l : s->datacap - s->datalen;
					if (k > 0)
						memcpy(s->data + s->datalen, j, k);
					s->datalen += k;
				} else if (s->ebuf[0] == EK_STDERR) {
					s->err += l;
				}
				if (json && !s->first[0]) {
					size_t m = l < sizeof s->first - 1 ? l : sizeof s->first - 1;
					memcpy(s->first, j, m);
					s->first[m] = 0;
				}
				if (json && !memcmp(j, "{\"type\":\"started\"", 17)) {
					s->started = true;
				} else if (json && memcmp(j, "{\"type\":\"stat\"", 14) != 0) {
					size_t m = l < sizeof s->exit - 1 ? l : sizeof s->exit - 1;
					memcpy(s->exit, j, m);
					s->exit[m] = 0;
				}
				memmove(s->ebuf, s->ebuf + 5 + l, s->elen - 5 - l);
				s->elen -= 5 + l;
			}
			break;
		default: CHECK(0, "unexpected frame type %u", h.type);
		}
		off += MUX_HEADER_SIZE + h.len;
	}
	memmove(hbuf, hbuf + off, hlen - off);
	hlen -= off;
}

static void host_send(uint32_t id, uint8_t type, const void *p, size_t len)
{
	uint8_t h[MUX_HEADER_SIZE];
	mux_encode_header(h, id, type, (uint32_t)len);
	CHECK(write_all(host_fd, h, sizeof h) == 0 && (len == 0 || write_all(host_fd, p, len) == 0), "host write");
}

static void host_exec_msg(uint32_t id, uint8_t kind, const char *p, size_t len)
{
	uint8_t buf[4096];
	exec_encode_header(buf, kind, (uint32_t)len);
	memcpy(buf + 5, p, len);
	host_send(id, F_DATA, buf, len + 5);
	hs[id].host_sent += len + 5;
}

static void host_credit(uint32_t id)
{
	struct hstream *s = &hs[id];
	uint32_t n = (uint32_t)(s->data_bytes - s->credited);
	if (n == 0)
		return;
	uint8_t b[4];
	put_be32(b, n);
	host_send(id, F_CREDIT, b, 4);
	s->credited += n;
}

/* One turn of PID 1's loop, minus the channel read (done by the host side here). */
static void turn(int ms)
{
	struct pollfd pfds[MUX_MAX_STREAMS * 3 + 1];
	int n = sess_poll_fill(pfds + 1, MUX_MAX_STREAMS * 3);
	pfds[0] = (struct pollfd){mux_fd, POLLIN, 0};
	CHECK(poll(pfds, (nfds_t)n + 1, ms) >= 0, "poll");
	if (pfds[0].revents & POLLIN) {
		/* Frames from the "host": feed them to the dispatcher directly. */
		static uint8_t gbuf[1 << 18];
		static size_t glen;
		ssize_t r = read(mux_fd, gbuf + glen, sizeof gbuf - glen);
		if (r > 0)
			glen += (size_t)r;
		size_t off = 0;
		while (glen - off >= MUX_HEADER_SIZE) {
			struct mux_hdr h;
			char err[100];
			CHECK(mux_decode_header(gbuf + off, &h, err, sizeof err) == 0, "%s", err);
			if (glen - off < MUX_HEADER_SIZE + h.len)
				break;
			uint8_t *p = gbuf + off + MUX_HEADER_SIZE;
			switch (h.type) {
			case F_OPEN: sess_on_open(h.stream, get_be32(p)); break;
			case F_DATA: sess_on_data(h.stream, p, h.len); break;
			case F_EOF: sess_on_eof(h.stream); break;
			case F_RESET: sess_on_reset(h.stream); break;
			case F_CREDIT: sess_on_credit(h.stream, get_be32(p)); break;
			}
			off += MUX_HEADER_SIZE + h.len;
		}
		memmove(gbuf, gbuf + off, glen - off);
		glen -= off;
	}
	sess_poll_handle(pfds + 1, n);
	int st;
	pid_t p;
	while ((p = waitpid(-1, &st, WNOHANG)) > 0)
		sess_on_child_exit(p, st);
	sess_timers(now_ms());
	sess_flush_credits();
	host_parse();
}

static bool run_until(bool (*cond)(int), int id, int ms, bool credit)
{
	int64_t end = now_ms() + ms;
	while (now_ms() < end) {
		turn(5);
		if (credit)
			host_credit((uint32_t)id);
		if (cond(id))
			return true;
	}
	return false;
}

static bool has_exit(int id) { return hs[id].exit[0] && hs[id].eof; }
static bool has_reset(int id) { return hs[id].reset[0] != 0; }
static bool never(int id) { (void)id; return false; }
static bool window_full(int id) { return hs[id].data_bytes > MUX_WINDOW - MUX_MAX_DATA; }
static bool started(int id) { return hs[id].started; }
static int count_target;
static bool count_is(int id) { (void)id; return sess_count() == count_target; }

static void turn(int ms);

/* Sends raw stream bytes in DATA frames, within the guest's window. */
static void host_stream(uint32_t id, const uint8_t *p, size_t len)
{
	struct hstream *s = &hs[id];
	int64_t end = now_ms() + 10000;
	while (len > 0 && now_ms() < end) {
		size_t avail = MUX_WINDOW - (s->host_sent - s->guest_credit);
		if (avail == 0) {
			turn(5);
			continue;
		}
		size_t n = len < avail ? len : avail;
		if (n > MUX_MAX_DATA)
			n = MUX_MAX_DATA;
		host_send(id, F_DATA, p, n);
		s->host_sent += n;
		p += n;
		len -= n;
		turn(0);
	}
	CHECK(len == 0, "stream %u: window never reopened", id);
}

/* One message (header + payload) through host_stream. */
static void host_msg(uint32_t id, uint8_t kind, const void *p, size_t len)
{
	uint8_t h[EXEC_HEADER_SIZE];
	exec_encode_header(h, kind, (uint32_t)len);
	host_stream(id, h, sizeof h);
	if (len > 0)
		host_stream(id, p, len);
}

static void open_stream(uint32_t id, uint32_t port, size_t datacap)
{
	uint8_t b[4];
	put_be32(b, port);
	host_send(id, F_OPEN, b, 4);
	if (datacap > 0) {
		hs[id].data = malloc(datacap);
		hs[id].datacap = datacap;
	}
}

static void fs_request(uint32_t id, const char *fmt, const char *path, long long a, long long b)
{
	char json[1024];
	snprintf(json, sizeof json, fmt, path, a, b);
	host_msg(id, FK_JSON, json, strlen(json));
}

/* The error code of the last fs message (or "" if it is not an error). */
static const char *fs_code(int id)
{
	static char code[64];
	const char *p = strstr(hs[id].exit, "\"code\":\"");
	code[0] = 0;
	if (p && !strncmp(hs[id].exit, "{\"type\":\"error\",", 16))
		sscanf(p + 8, "%63[a-z_]", code);
	return code;
}

static int count_temps(const char *dir)
{
	char cmd[300];
	snprintf(cmd, sizeof cmd, "ls -A %s | grep -c '^\\.ma-cp-'", dir);
	FILE *f = popen(cmd, "r");
	int n = -1;
	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = -1;
		pclose(f);
	}
	return n;
}

static bool file_is(const char *path, const char *want)
{
	char buf[256];
	ssize_t n = read_text_file(path, buf, sizeof buf);
	return n >= 0 && strcmp(buf, want) == 0;
}

static void fs_tests(void)
{
	char dir[] = "/tmp/ma-fs-test-XXXXXX", path[300], other[300];
	CHECK(mkdtemp(dir) != NULL, "mkdtemp");
	int before = sess_count();
	const char *W = "{\"type\":\"write\",\"v\":1,\"path\":\"%s\",\"mode\":%lld,\"size\":%lld}";
	const char *R = "{\"type\":\"read\",\"v\":1,\"path\":\"%s\"}";
	size_t big = 300000;
	uint8_t *pat = malloc(big);
	for (size_t i = 0; i < big; i++)
		pat[i] = (uint8_t)(i * 7 + i / 251);

	/* 7: write 300000 bytes (more than the window), mode applied exactly (no umask). */
	snprintf(path, sizeof path, "%s/f", dir);
	open_stream(7, GUEST_PORT_FS, 0);
	fs_request(7, W, path, 0664, (long long)big);
	host_msg(7, FK_DATA_TO_GUEST, pat, big / 2);
	host_msg(7, FK_DATA_TO_GUEST, pat + big / 2, big - big / 2);
	host_msg(7, FK_DATA_TO_GUEST, NULL, 0);
	CHECK(run_until(has_exit, 7, 5000, true), "write done");
	CHECK(!strcmp(hs[7].exit, "{\"type\":\"done\",\"bytes\":300000}"), "%s", hs[7].exit);
	struct stat st;
	CHECK(stat(path, &st) == 0 && st.st_size == (off_t)big && (st.st_mode & 07777) == 0664, "written file");
	CHECK(count_temps(dir) == 0, "no temp file left");

	/* 8: read it back. */
	open_stream(8, GUEST_PORT_FS, big + 16);
	fs_request(8, R, path, 0, 0);
	CHECK(run_until(has_exit, 8, 5000, true), "read done");
	CHECK(!strcmp(hs[8].first, "{\"type\":\"stat\",\"size\":300000,\"mode\":436,\"uid\":0,\"gid\":0}") ||
		      (strstr(hs[8].first, "\"size\":300000,\"mode\":436,") && getuid() != 0),
	      "%s", hs[8].first);
	CHECK(!strcmp(hs[8].exit, "{\"type\":\"done\",\"bytes\":300000}"), "%s", hs[8].exit);
	CHECK(hs[8].datalen == big && memcmp(hs[8].data, pat, big) == 0, "read bytes %zu", hs[8].datalen);

	/* 9: fewer bytes than size → invalid_request, nothing left behind. */
	snprintf(other, sizeof other, "%s/short", dir);
	open_stream(9, GUEST_PORT_FS, 0);
	fs_request(9, W, other, 0644, 10);
	host_msg(9, FK_DATA_TO_GUEST, "12345", 5);
	host_msg(9, FK_DATA_TO_GUEST, NULL, 0);
	CHECK(run_until(has_exit, 9, 5000, true) && !strcmp(fs_code(9), "invalid_request"), "%s", hs[9].exit);
	CHECK(access(other, F_OK) != 0 && count_temps(dir) == 0, "short write left nothing");

	/* 10: more bytes than size. */
	open_stream(10, GUEST_PORT_FS, 0);
	fs_request(10, W, other, 0644, 3);
	host_msg(10, FK_DATA_TO_GUEST, "12345", 5);
	CHECK(run_until(has_exit, 10, 5000, true) && !strcmp(fs_code(10), "invalid_request"), "%s", hs[10].exit);
	CHECK(access(other, F_OK) != 0 && count_temps(dir) == 0, "long write left nothing");

	/* 11: a symlink at the target is replaced, its target untouched. */
	char target[300], link[300];
	snprintf(target, sizeof target, "%s/target", dir);
	snprintf(link, sizeof link, "%s/link", dir);
	int fd = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0 && write(fd, "orig", 4) == 4 && close(fd) == 0, "target");
	CHECK(symlink(target, link) == 0, "symlink");
	open_stream(11, GUEST_PORT_FS, 0);
	fs_request(11, W, link, 0600, 3);
	host_msg(11, FK_DATA_TO_GUEST, "new", 3);
	host_msg(11, FK_DATA_TO_GUEST, NULL, 0);
	CHECK(run_until(has_exit, 11, 5000, true) && strstr(hs[11].exit, "\"done\""), "%s", hs[11].exit);
	CHECK(lstat(link, &st) == 0 && S_ISREG(st.st_mode) && file_is(link, "new"), "link replaced by the file");
	CHECK(file_is(target, "orig"), "symlink target untouched");

	/* 12..16: error codes. */
	struct {
		int id;
		const char *fmt, *path, *code;
	} errs[] = {
		{12, R, "/nonexistent/x", "not_found"},
		{13, R, "/tmp", "is_directory"},
		{14, R, "/dev/null", "not_regular"},
		{15, W, "/nonexistent-dir/x", "not_found"},
		{16, W, dir, "is_directory"},
		{17, "{\"type\":\"write\",\"v\":1,\"path\":\"%s\",\"size\":%lld}", "/tmp/x", "invalid_request"},
		{18, R, "relative/path", "invalid_request"},
	};
	for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
		int id = errs[i].id;
		open_stream((uint32_t)id, GUEST_PORT_FS, 0);
		fs_request((uint32_t)id, errs[i].fmt, errs[i].path, 0644, 1);
		CHECK(run_until(has_exit, id, 5000, true) && !strcmp(fs_code(id), errs[i].code), "%s: want %s: %s",
		      errs[i].path, errs[i].code, hs[id].exit);
	}

	/* 19: data before the request; 20: the host's EOF in the middle of the data. */
	open_stream(19, GUEST_PORT_FS, 0);
	host_msg(19, FK_DATA_TO_GUEST, "x", 1);
	CHECK(run_until(has_exit, 19, 5000, true) && !strcmp(fs_code(19), "invalid_request"), "%s", hs[19].exit);
	open_stream(20, GUEST_PORT_FS, 0);
	fs_request(20, W, other, 0644, 10);
	host_msg(20, FK_DATA_TO_GUEST, "12345", 5);
	host_send(20, F_EOF, NULL, 0);
	CHECK(run_until(has_exit, 20, 5000, true) && !strcmp(fs_code(20), "invalid_request"), "%s", hs[20].exit);
	CHECK(access(other, F_OK) != 0 && count_temps(dir) == 0, "EOF mid-write left nothing");

	/* 21: a host RESET mid-write removes the temp file. */
	open_stream(21, GUEST_PORT_FS, 0);
	fs_request(21, W, other, 0644, 10);
	host_msg(21, FK_DATA_TO_GUEST, "12345", 5);
	run_until(never, 21, 50, true);
	CHECK(count_temps(dir) == 1, "temp file while writing");
	host_send(21, F_RESET, "bye", 3);
	run_until(never, 21, 50, true);
	CHECK(access(other, F_OK) != 0 && count_temps(dir) == 0, "reset mid-write left nothing");

	for (int id = 7; id <= 21; id++)
		host_send((uint32_t)id, F_EOF, NULL, 0);
	count_target = before;
	CHECK(run_until(count_is, 7, 3000, true), "fs streams freed: %d left", sess_count());
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	CHECK(system(cmd) == 0, "rm");
	free(pat);
}

static bool output_has(int id)
{
	return hs[id].datalen > 0 && memmem(hs[id].data, hs[id].datalen, "50 132", 6) != NULL;
}

static void tty_tests(void)
{
	/* 22: a terminal: tty names a pts, stty sees the size, no stderr stream. */
	open_stream(22, GUEST_PORT_EXEC, 4096);
	const char *r = "{\"type\":\"exec\",\"v\":1,\"argv\":[\"sh\",\"-c\",\"tty; stty size; echo $TERM; echo err >&2\"],"
			"\"tty\":{\"rows\":33,\"cols\":101}}";
	host_msg(22, EK_JSON, r, strlen(r));
	CHECK(run_until(has_exit, 22, 5000, true), "tty exit");
	hs[22].data[hs[22].datalen < 4095 ? hs[22].datalen : 4095] = 0;
	const char *out = (const char *)hs[22].data;
	CHECK(strstr(out, "/dev/pts/") && strstr(out, "33 101\r\n") && strstr(out, "xterm-256color") && strstr(out, "err"),
	      "tty output: %s", out);
	CHECK(hs[22].err == 0 && strstr(hs[22].exit, "\"exitCode\":0,") && strstr(hs[22].exit, "\"stderrBytes\":0,"),
	      "%s", hs[22].exit);

	/* 23: resize, then input through the terminal; a zero-length STDIN closes nothing. */
	open_stream(23, GUEST_PORT_EXEC, 4096);
	r = "{\"type\":\"exec\",\"v\":1,\"argv\":[\"sh\",\"-c\",\"read x; stty size; echo got=$x\"],"
	    "\"tty\":{\"rows\":24,\"cols\":80,\"term\":\"vt100\"},\"env\":{\"TERM\":\"dumb\"}}";
	host_msg(23, EK_JSON, r, strlen(r));
	CHECK(run_until(started, 23, 5000, true), "tty started");
	const char *rz = "{\"type\":\"resize\",\"rows\":50,\"cols\":132}";
	host_msg(23, EK_JSON, rz, strlen(rz));
	host_msg(23, EK_STDIN, NULL, 0);
	host_msg(23, EK_STDIN, "hello\n", 6);
	CHECK(run_until(has_exit, 23, 5000, true), "tty 2 exit");
	hs[23].data[hs[23].datalen < 4095 ? hs[23].datalen : 4095] = 0;
	CHECK(output_has(23) && strstr((const char *)hs[23].data, "got=hello"), "resize: %s", (const char *)hs[23].data);

	/* 24: RESET hangs the session up; the stream goes once the SIGKILL sweep is done. */
	int before = sess_count();
	open_stream(24, GUEST_PORT_EXEC, 4096);
	r = "{\"type\":\"exec\",\"v\":1,\"argv\":[\"sh\",\"-c\",\"set -m; sh -c \\\"trap '' HUP; exec sleep 4244\\\" & wait\"],"
	    "\"tty\":{\"rows\":24,\"cols\":80}}";
	host_msg(24, EK_JSON, r, strlen(r));
	CHECK(run_until(started, 24, 5000, true), "tty 3 started");
	run_until(never, 24, 100, true);
	host_send(24, F_RESET, "bye", 3);
	count_target = before;
	int64_t t0 = now_ms();
	CHECK(run_until(count_is, 24, 5000, true), "tty stream freed after the hang-up");
	CHECK(now_ms() - t0 >= 400, "SIGHUP-ignoring session waited for the SIGKILL sweep (%lld ms)",
	      (long long)(now_ms() - t0));
	CHECK(system("pgrep -f 'sleep 424[4]' >/dev/null") != 0, "the job that ignored SIGHUP is gone");

	/* 25: the host's EOF (a client that closed its connection) hangs up too, with an exit. */
	open_stream(25, GUEST_PORT_EXEC, 4096);
	r = "{\"type\":\"exec\",\"v\":1,\"argv\":[\"sh\",\"-c\",\"set -m; sh -c \\\"trap '' HUP; exec sleep 4245\\\" & wait\"],"
	    "\"tty\":{\"rows\":24,\"cols\":80}}";
	host_msg(25, EK_JSON, r, strlen(r));
	CHECK(run_until(started, 25, 5000, true), "tty 4 started");
	run_until(never, 25, 100, true);
	host_send(25, F_EOF, NULL, 0);
	CHECK(run_until(has_exit, 25, 5000, true), "exit after a hang-up");
	CHECK(strstr(hs[25].exit, "\"status\":\"signaled\",\"exitCode\":129,\"signal\":1,"), "%s", hs[25].exit);
	count_target = before;
	CHECK(run_until(count_is, 25, 5000, true), "hung-up stream freed after the sweep");
	CHECK(system("pgrep -f 'sleep 424[5]' >/dev/null") != 0, "the job that ignored SIGHUP is gone");
	for (int id = 22; id <= 23; id++)
		host_send((uint32_t)id, F_EOF, NULL, 0);
}

void test_session(void)
{
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
	/* Guest and host share this thread: the guest's blocking frame writer must
	 * never wait for a host that cannot read yet, so the pair holds more than
	 * a whole window in flight (the virtio port has the host reading always).
	 * SO_SNDBUFFORCE passes net.core.wmem_max (212992 on a stock kernel) when
	 * privileged; otherwise the capped size is checked rather than risking a
	 * hang. */
	for (int i = 0; i < 2; i++) {
		int sz = 4 * MUX_WINDOW, got = 0;
		socklen_t len = sizeof got;
		if (setsockopt(sv[i], SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) != 0)
			(void)setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
		if (getsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &got, &len) != 0 || got < 2 * MUX_WINDOW) {
			CHECK(0, "socket buffer %d < %d: run as root or raise net.core.wmem_max", got, 2 * MUX_WINDOW);
			return;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	mux_fd = sv[0];
	host_fd = sv[1];
	fcntl(host_fd, F_SETFL, O_NONBLOCK);
	memset(hs, 0, sizeof hs);

	/* 1: output larger than the window waits for credit. */
	host_send(1, F_OPEN, "\0\0\0\1", 4);
	/* More output than two windows, whatever the window size. */
	const size_t big = 2 * (size_t)MUX_WINDOW + 37856;
	char r1[256], want_bytes[64];
	snprintf(r1, sizeof r1,
		 "{\"type\":\"exec\",\"v\":1,\"argv\":[\"sh\",\"-c\",\"head -c %zu /dev/zero; echo e >&2; exit 3\"]}", big);
	snprintf(want_bytes, sizeof want_bytes, "\"stdoutBytes\":%zu", big);
	host_exec_msg(1, EK_JSON, r1, strlen(r1));
	CHECK(run_until(window_full, 1, 10000, false), "window filled: %zu", hs[1].data_bytes);
	run_until(never, 1, 100, false);
	CHECK(hs[1].open_ok && hs[1].started, "opened and started");
	CHECK(hs[1].data_bytes <= MUX_WINDOW && hs[1].data_bytes > MUX_WINDOW - 32768, "window respected: %zu",
	      hs[1].data_bytes);
	CHECK(!hs[1].exit[0], "no exit while output is pending");
	/* A few consumed bytes are credited lazily: the host still holds most of the window. */
	CHECK(hs[1].guest_credit == 0, "small credit coalesced: %zu", hs[1].guest_credit);
	CHECK(run_until(has_exit, 1, 5000, true), "exit after credit");
	CHECK(hs[1].out == big && hs[1].err == 2, "output %zu/%zu", hs[1].out, hs[1].err);
	CHECK(strstr(hs[1].exit, "\"exitCode\":3") && strstr(hs[1].exit, want_bytes), "%s", hs[1].exit);
	host_send(1, F_EOF, NULL, 0);
	count_target = 0;
	CHECK(run_until(count_is, 1, 2000, false), "stream 1 freed after both EOFs");

	/* 2: stdin through a pipe, closed by an empty STDIN message. */
	host_send(2, F_OPEN, "\0\0\0\1", 4);
	const char *r2 = "{\"type\":\"exec\",\"v\":1,\"argv\":[\"wc\",\"-c\"],\"stdin\":true,\"stdoutLimit\":2}";
	host_exec_msg(2, EK_JSON, r2, strlen(r2));
	host_exec_msg(2, EK_STDIN, "hello world\n", 12);
	host_exec_msg(2, EK_STDIN, "", 0);
	CHECK(run_until(has_exit, 2, 5000, true), "stdin exit");
	CHECK(hs[2].out == 2 && strstr(hs[2].exit, "\"stdoutBytes\":3,") && strstr(hs[2].exit, "\"stdoutTruncated\":true"),
	      "wc via stdin with cap: %zu %s", hs[2].out, hs[2].exit);

	/* 3: an invalid request gets an exit, not a reset. */
	host_send(3, F_OPEN, "\0\0\0\1", 4);
	host_exec_msg(3, EK_JSON, "{\"type\":\"exec\"}", 15);
	CHECK(run_until(has_exit, 3, 2000, true), "invalid request exit");
	CHECK(strstr(hs[3].exit, "invalid_request") && strstr(hs[3].exit, "\"exitCode\":125"), "%s", hs[3].exit);

	/* 4: unknown port. */
	host_send(4, F_OPEN, "\0\0\0\7", 4);
	CHECK(run_until(has_reset, 4, 1000, false), "reset");
	CHECK(!strcmp(hs[4].reset, "no service on port 7"), "%s", hs[4].reset);

	/* 5: host RESET kills the running program. */
	host_send(5, F_OPEN, "\0\0\0\1", 4);
	const char *r5 = "{\"type\":\"exec\",\"v\":1,\"argv\":[\"sleep\",\"100\"]}";
	host_exec_msg(5, EK_JSON, r5, strlen(r5));
	CHECK(run_until(started, 5, 5000, true), "sleep started");
	int before = sess_count();
	host_send(5, F_RESET, "bye", 3);
	count_target = before - 1;
	CHECK(run_until(count_is, 5, 5000, true), "reset stream freed once the program was reaped (%d → %d)", before,
	      sess_count());

	/* 6: timeout. */
	host_send(6, F_OPEN, "\0\0\0\1", 4);
	const char *r6 = "{\"type\":\"exec\",\"v\":1,\"argv\":[\"sleep\",\"100\"],\"timeoutMs\":100}";
	host_exec_msg(6, EK_JSON, r6, strlen(r6));
	CHECK(run_until(has_exit, 6, 3000, true), "timeout exit");
	CHECK(strstr(hs[6].exit, "\"status\":\"timed_out\",\"exitCode\":124,\"signal\":15"), "%s", hs[6].exit);

	fs_tests();
	tty_tests();

	sess_drop_all();
	mux_fd = -1;
	close(sv[0]);
	close(sv[1]);
}
