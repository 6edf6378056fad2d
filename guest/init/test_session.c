/* The stream table and exec service driven over a socketpair on the build
 * host: flow control, stdin, invalid requests, resets. */
#include "exec.h"
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
	char exit[1024];
	bool started, open_ok, eof;
	char reset[256];
} hs[8];

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
		struct hstream *s = &hs[h.stream < 8 ? h.stream : 0];
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
				if (s->ebuf[0] == EK_STDOUT)
					s->out += l;
				else if (s->ebuf[0] == EK_STDERR)
					s->err += l;
				else if (!memcmp(s->ebuf + 5, "{\"type\":\"started\"", 17))
					s->started = true;
				else
				{
					size_t m = l < sizeof s->exit - 1 ? l : sizeof s->exit - 1;
					memcpy(s->exit, s->ebuf + 5, m);
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

void test_session(void)
{
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
	signal(SIGPIPE, SIG_IGN);
	mux_fd = sv[0];
	host_fd = sv[1];
	fcntl(host_fd, F_SETFL, O_NONBLOCK);
	memset(hs, 0, sizeof hs);

	/* 1: output larger than the window waits for credit. */
	host_send(1, F_OPEN, "\0\0\0\1", 4);
	const char *r1 = "{\"type\":\"exec\",\"v\":1,\"argv\":[\"sh\",\"-c\",\"head -c 300000 /dev/zero; echo e >&2; exit 3\"]}";
	host_exec_msg(1, EK_JSON, r1, strlen(r1));
	CHECK(run_until(window_full, 1, 10000, false), "window filled: %zu", hs[1].data_bytes);
	run_until(never, 1, 100, false);
	CHECK(hs[1].open_ok && hs[1].started, "opened and started");
	CHECK(hs[1].data_bytes <= MUX_WINDOW && hs[1].data_bytes > MUX_WINDOW - 32768, "window respected: %zu",
	      hs[1].data_bytes);
	CHECK(!hs[1].exit[0], "no exit while output is pending");
	CHECK(hs[1].guest_credit == strlen(r1) + 5, "request bytes credited: %zu", hs[1].guest_credit);
	CHECK(run_until(has_exit, 1, 5000, true), "exit after credit");
	CHECK(hs[1].out == 300000 && hs[1].err == 2, "output %zu/%zu", hs[1].out, hs[1].err);
	CHECK(strstr(hs[1].exit, "\"exitCode\":3") && strstr(hs[1].exit, "\"stdoutBytes\":300000"), "%s", hs[1].exit);
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

	sess_drop_all();
	mux_fd = -1;
	close(sv[0]);
	close(sv[1]);
}
