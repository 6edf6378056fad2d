/*
 * netstack: one VM's user-mode network, on the distribution's libslirp.
 *
 *   netstack --socket PATH --address A --gateway G --dns D --prefix N --mtu M
 *            [--allow-host-loopback] [--forward HOST_IP:HOST_PORT:GUEST_PORT]...
 *
 * QEMU's NIC is a stream netdev listening on PATH (server=on); this process
 * connects to it and speaks its framing: a 4-byte big-endian length, then an
 * Ethernet frame. Guest frames pass the frame filter (net-filter.c) and go
 * to libslirp, which terminates the guest's TCP and UDP and opens ordinary
 * host sockets for them; what libslirp sends back is framed and queued.
 *
 * Why not passt (Debian 12's 2023-03 build): it writes frames to a
 * non-blocking socket in pieces and gives up on the rest of a frame when the
 * socket is full, so under bulk traffic QEMU reads a torn stream ("oversized
 * packet received") and drops the NIC. Here a frame is queued whole or
 * dropped whole (TCP recovers a dropped frame; nothing recovers a torn
 * stream), and the queue is written with partial writes resumed.
 *
 * The socket is QEMU's listening one, so when this process dies QEMU accepts
 * the next one: the monitor can restart the stack without touching the VM.
 * Root drops to nobody once the published ports are bound and QEMU's socket
 * is connected; the parent-death signal is armed again after the drop.
 * Exit status: 0 when QEMU closed the link, 1 on a runtime failure, 2 on bad
 * arguments. Messages go to stderr (the workspace's net.log).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <slirp/libslirp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "net-filter.h"

/* A frame's largest length: libslirp's largest MTU plus the Ethernet header. */
#define MAX_FRAME (65521 + 14)
#define IN_BUF (512 * 1024)
/* Frames for the guest that QEMU has not read yet. libslirp keeps at most
 * its socket buffer (~128 KiB) in flight per connection, so this holds many
 * connections' worth before a frame is dropped. */
#define OUT_BUF (8 * 1024 * 1024)
#define MAX_FORWARDS 64
#define CONNECT_TIMEOUT_MS 30000

static int qemu_fd = -1;
static uint8_t *outq;
static size_t out_head, out_tail;
static unsigned long out_dropped;

static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("netstack: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void die(int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("netstack: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	_exit(status);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- timers: libslirp's few (TCP fast/slow, RA), a plain list ---------- */

struct timer {
	SlirpTimerCb cb;
	void *cb_opaque;
	int64_t expire_ms; /* -1: not armed */
	struct timer *next;
};
static struct timer *timers;

static void *timer_new_cb(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
	struct timer *t = calloc(1, sizeof *t);
	if (t == NULL)
		die(1, "out of memory");
	t->cb = cb;
	t->cb_opaque = cb_opaque;
	t->expire_ms = -1;
	t->next = timers;
	timers = t;
	return t;
}

static void timer_free_cb(void *timer, void *opaque)
{
	for (struct timer **p = &timers; *p != NULL; p = &(*p)->next) {
		if (*p == timer) {
			*p = ((struct timer *)timer)->next;
			free(timer);
			return;
		}
	}
}

static void timer_mod_cb(void *timer, int64_t expire_ms, void *opaque)
{
	((struct timer *)timer)->expire_ms = expire_ms;
}

/* Milliseconds until the next armed timer, capped at cap. */
static int timers_wait_ms(int cap)
{
	int64_t now = now_ns() / 1000000;
	int wait = cap;
	for (struct timer *t = timers; t != NULL; t = t->next) {
		if (t->expire_ms < 0)
			continue;
		int64_t d = t->expire_ms - now;
		if (d < 0)
			d = 0;
		if (wait < 0 || d < wait)
			wait = (int)d;
	}
	return wait;
}

static void timers_run(void)
{
	int64_t now = now_ns() / 1000000;
	/* A callback may re-arm or free timers: restart the walk after each. */
	for (;;) {
		struct timer *due = NULL;
		for (struct timer *t = timers; t != NULL; t = t->next) {
			if (t->expire_ms >= 0 && t->expire_ms <= now) {
				due = t;
				break;
			}
		}
		if (due == NULL)
			return;
		due->expire_ms = -1;
		due->cb(due->cb_opaque);
	}
}

/* ---- frames to the guest ------------------------------------------------ */

/* Writes what QEMU takes now; a partial write is resumed next time. */
static void flush_out(void)
{
	while (out_head < out_tail) {
		ssize_t w = send(qemu_fd, outq + out_head, out_tail - out_head, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			die(0, "write to QEMU: %s", strerror(errno));
		}
		out_head += (size_t)w;
	}
	out_head = out_tail = 0;
}

static ssize_t send_packet_cb(const void *buf, size_t len, void *opaque)
{
	if (len > MAX_FRAME)
		return (ssize_t)len; /* cannot happen with our MTU; never torn */
	if (OUT_BUF - out_tail < len + 4 && out_head > 0) {
		memmove(outq, outq + out_head, out_tail - out_head);
		out_tail -= out_head;
		out_head = 0;
	}
	if (OUT_BUF - out_tail < len + 4) {
		/* QEMU is not keeping up: drop the whole frame, as a full NIC
		 * queue would; TCP sends it again. */
		if (out_dropped++ % 10000 == 0)
			say("QEMU is not reading: dropped %lu frame(s) for the guest so far",
			    out_dropped);
		return (ssize_t)len;
	}
	uint8_t *p = outq + out_tail;
	p[0] = (uint8_t)(len >> 24);
	p[1] = (uint8_t)(len >> 16);
	p[2] = (uint8_t)(len >> 8);
	p[3] = (uint8_t)len;
	memcpy(p + 4, buf, len);
	out_tail += len + 4;
	return (ssize_t)len;
}

/* ---- frames from the guest ---------------------------------------------- */

static void log_drop(enum net_verdict v, const uint8_t *frame, size_t len)
{
	static unsigned long drops;
	/* The guest kernel sends IPv6 solicitations on its own: not worth a line. */
	if (v == NET_DROP_IPV6)
		return;
	drops++;
	if (drops > 10 && drops % 1000 != 0)
		return;
	if (v == NET_DROP_LOOPBACK && len >= 34)
		say("dropped guest packet #%lu to %u.%u.%u.%u (%s)", drops, frame[30], frame[31],
		    frame[32], frame[33], net_verdict_name(v));
	else
		say("dropped guest frame #%lu (%s)", drops, net_verdict_name(v));
}

static uint8_t inbuf[IN_BUF + MAX_FRAME + 4];
static size_t in_have;

/* Reads what QEMU sent and hands every whole frame to libslirp. */
static void read_in(Slirp *slirp)
{
	for (int round = 0; round < 8; round++) {
		ssize_t r = recv(qemu_fd, inbuf + in_have, sizeof inbuf - in_have, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			die(0, "read from QEMU: %s", strerror(errno));
		}
		if (r == 0)
			die(0, "QEMU closed the link");
		in_have += (size_t)r;
		size_t off = 0;
		while (in_have - off >= 4) {
			const uint8_t *h = inbuf + off;
			size_t flen = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
			if (flen > MAX_FRAME)
				die(1, "QEMU sent a frame of %zu bytes: protocol error", flen);
			if (in_have - off - 4 < flen)
				break;
			enum net_verdict v = net_filter_guest_frame(h + 4, flen);
			if (v == NET_PASS)
				slirp_input(slirp, h + 4, (int)flen);
			else
				log_drop(v, h + 4, flen);
			off += flen + 4;
		}
		memmove(inbuf, inbuf + off, in_have - off);
		in_have -= off;
		if ((size_t)r < IN_BUF / 2)
			return; /* drained for now */
	}
}

/* ---- libslirp's poll set ------------------------------------------------ */

static struct pollfd *pfds;
static size_t npfds, cap_pfds;

/* libslirp's poll flags and poll(2)'s; ERR and HUP are only ever returned. */
static const struct {
	int slirp;
	short poll;
} POLL_FLAGS[] = {
	{ SLIRP_POLL_IN, POLLIN },   { SLIRP_POLL_OUT, POLLOUT }, { SLIRP_POLL_PRI, POLLPRI },
	{ SLIRP_POLL_ERR, POLLERR }, { SLIRP_POLL_HUP, POLLHUP },
};
#define N_POLL_FLAGS (sizeof POLL_FLAGS / sizeof POLL_FLAGS[0])

static int add_poll_cb(int fd, int events, void *opaque)
{
	if (npfds == cap_pfds) {
		cap_pfds = cap_pfds ? cap_pfds * 2 : 64;
		pfds = realloc(pfds, cap_pfds * sizeof *pfds);
		if (pfds == NULL)
			die(1, "out of memory");
	}
	short ev = 0;
	for (size_t i = 0; i < N_POLL_FLAGS; i++)
		if (events & POLL_FLAGS[i].slirp)
			ev |= POLL_FLAGS[i].poll;
	pfds[npfds] = (struct pollfd){ .fd = fd, .events = ev };
	return (int)npfds++;
}

static int get_revents_cb(int idx, void *opaque)
{
	if (idx < 0 || (size_t)idx >= npfds)
		return 0;
	int out = 0;
	for (size_t i = 0; i < N_POLL_FLAGS; i++)
		if (pfds[idx].revents & POLL_FLAGS[i].poll)
			out |= POLL_FLAGS[i].slirp;
	return out;
}

static void guest_error_cb(const char *msg, void *opaque)
{
	static unsigned long n;
	if (n++ < 10)
		say("guest error: %s", msg);
}

static int64_t clock_get_ns_cb(void *opaque)
{
	return now_ns();
}

static void noop_fd_cb(int fd, void *opaque) {}
static void notify_cb(void *opaque) {}

/* ---- set-up ------------------------------------------------------------- */

static struct in_addr parse_ip(const char *flag, const char *s)
{
	struct in_addr a;
	if (inet_pton(AF_INET, s, &a) != 1)
		die(2, "%s: \"%s\" is not an IPv4 address", flag, s);
	return a;
}

static long parse_num(const char *flag, const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (*s == 0 || *end != 0 || errno != 0 || v < lo || v > hi)
		die(2, "%s: \"%s\" is not a number from %ld to %ld", flag, s, lo, hi);
	return v;
}

struct forward {
	struct in_addr host;
	int host_port, guest_port;
	const char *text;
};

static struct forward parse_forward(const char *s)
{
	char buf[64];
	if (strlen(s) >= sizeof buf)
		die(2, "--forward: \"%s\" is too long", s);
	strcpy(buf, s);
	char *c2 = strrchr(buf, ':');
	if (c2 == NULL)
		die(2, "--forward: \"%s\" is not HOST_IP:HOST_PORT:GUEST_PORT", s);
	*c2 = 0;
	char *c1 = strrchr(buf, ':');
	if (c1 == NULL)
		die(2, "--forward: \"%s\" is not HOST_IP:HOST_PORT:GUEST_PORT", s);
	*c1 = 0;
	struct forward f = {
		.host = parse_ip("--forward", buf),
		.host_port = (int)parse_num("--forward", c1 + 1, 1, 65535),
		.guest_port = (int)parse_num("--forward", c2 + 1, 1, 65535),
		.text = s,
	};
	return f;
}

/* Connects to QEMU's listening NIC socket, which appears while QEMU starts. */
static int connect_qemu(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path)
		die(2, "--socket: the path is longer than %zu bytes", sizeof sa.sun_path - 1);
	strcpy(sa.sun_path, path);
	int64_t deadline = now_ns() + (int64_t)CONNECT_TIMEOUT_MS * 1000000;
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			die(1, "socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
			return fd;
		int err = errno;
		close(fd);
		if ((err != ENOENT && err != ECONNREFUSED) || now_ns() > deadline)
			die(1, "cannot connect to QEMU's NIC socket %s: %s", path, strerror(err));
		usleep(2000);
	}
}

/* Root keeps nothing it does not need: nobody, no new privileges. */
static void drop_privileges(pid_t parent)
{
	if (geteuid() == 0) {
		uid_t uid = 65534;
		gid_t gid = 65534;
		struct passwd *pw = getpwnam("nobody");
		if (pw != NULL) {
			uid = pw->pw_uid;
			gid = pw->pw_gid;
		}
		if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
			die(1, "cannot drop privileges to nobody: %s", strerror(errno));
		if (setuid(0) == 0)
			die(1, "privileges were not dropped");
		/* The credential change cleared the parent-death signal. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
			die(1, "prctl: %s", strerror(errno));
		if (getppid() != parent)
			die(1, "the parent exited");
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		die(1, "prctl: %s", strerror(errno));
	if (chdir("/") != 0)
		die(1, "chdir: %s", strerror(errno));
}

static void usage(void)
{
	die(2, "usage: netstack --socket PATH --address A --gateway G --dns D --prefix N --mtu M "
	       "[--allow-host-loopback] [--forward HOST_IP:HOST_PORT:GUEST_PORT]...");
}

int main(int argc, char **argv)
{
	const char *sock = NULL;
	struct in_addr addr = { 0 }, gw = { 0 }, dns = { 0 };
	long prefix = -1, mtu = -1;
	bool allow_loopback = false;
	struct forward fwd[MAX_FORWARDS];
	int nfwd = 0;
	bool have_addr = false, have_gw = false, have_dns = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--allow-host-loopback") == 0) {
			allow_loopback = true;
			continue;
		}
		if (v == NULL)
			usage();
		i++;
		if (strcmp(a, "--socket") == 0)
			sock = v;
		else if (strcmp(a, "--address") == 0)
			addr = parse_ip(a, v), have_addr = true;
		else if (strcmp(a, "--gateway") == 0)
			gw = parse_ip(a, v), have_gw = true;
		else if (strcmp(a, "--dns") == 0)
			dns = parse_ip(a, v), have_dns = true;
		else if (strcmp(a, "--prefix") == 0)
			prefix = parse_num(a, v, 8, 30);
		else if (strcmp(a, "--mtu") == 0)
			mtu = parse_num(a, v, 576, 65520);
		else if (strcmp(a, "--forward") == 0) {
			if (nfwd == MAX_FORWARDS)
				die(2, "--forward: more than %d", MAX_FORWARDS);
			fwd[nfwd++] = parse_forward(v);
		} else
			usage();
	}
	if (sock == NULL || !have_addr || !have_gw || !have_dns || prefix < 0 || mtu < 0)
		usage();

	signal(SIGPIPE, SIG_IGN);
	pid_t parent = getppid();
	/* Every guest connection is a host socket: take all the descriptors
	 * the hard limit allows (the soft default of 1024 is a few hundred
	 * connections of headroom). */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}
	outq = malloc(OUT_BUF);
	if (outq == NULL)
		die(1, "out of memory");

	uint32_t mask = htonl(~((1u << (32 - prefix)) - 1));
	SlirpConfig cfg = {
		.version = 4,
		.restricted = 0,
		.in_enabled = true,
		.vnetwork = { .s_addr = addr.s_addr & mask },
		.vnetmask = { .s_addr = mask },
		.vhost = gw,
		.in6_enabled = false,
		.vdhcp_start = addr,
		.vnameserver = dns,
		.if_mtu = (size_t)mtu,
		.if_mru = (size_t)mtu,
		/* The gateway is the host's loopback only when asked for. */
		.disable_host_loopback = !allow_loopback,
		.enable_emu = false,
		/* The guest init configures eth0 itself. */
		.disable_dhcp = true,
	};
	SlirpCb cb = {
		.send_packet = send_packet_cb,
		.guest_error = guest_error_cb,
		.clock_get_ns = clock_get_ns_cb,
		.timer_new = timer_new_cb,
		.timer_free = timer_free_cb,
		.timer_mod = timer_mod_cb,
		.register_poll_fd = noop_fd_cb,
		.unregister_poll_fd = noop_fd_cb,
		.notify = notify_cb,
	};
	Slirp *slirp = slirp_new(&cfg, &cb, NULL);
	if (slirp == NULL)
		die(1, "libslirp refused the configuration");
	for (int i = 0; i < nfwd; i++) {
		errno = 0;
		if (slirp_add_hostfwd(slirp, 0, fwd[i].host, fwd[i].host_port, addr,
				      fwd[i].guest_port) < 0)
			die(1, "cannot publish %s: %s", fwd[i].text,
			    errno ? strerror(errno) : "the host port cannot be bound");
	}

	qemu_fd = connect_qemu(sock);
	int one = 1 << 20;
	setsockopt(qemu_fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
	setsockopt(qemu_fd, SOL_SOCKET, SO_RCVBUF, &one, sizeof one);
	int fl = fcntl(qemu_fd, F_GETFL);
	if (fl < 0 || fcntl(qemu_fd, F_SETFL, fl | O_NONBLOCK) < 0)
		die(1, "fcntl: %s", strerror(errno));
	drop_privileges(parent);
	say("connected to QEMU; %d published port(s)%s", nfwd,
	    allow_loopback ? "; the host's loopback is reachable as the gateway" : "");

	for (;;) {
		npfds = 0;
		add_poll_cb(qemu_fd, SLIRP_POLL_IN | (out_tail > out_head ? SLIRP_POLL_OUT : 0), NULL);
		uint32_t timeout = UINT32_MAX;
		slirp_pollfds_fill(slirp, &timeout, add_poll_cb, NULL);
		int wait = timeout == UINT32_MAX ? -1 : (int)(timeout > INT_MAX ? INT_MAX : timeout);
		wait = timers_wait_ms(wait);
		int rc = poll(pfds, npfds, wait);
		if (rc < 0 && errno != EINTR)
			die(1, "poll: %s", strerror(errno));
		short qrev = rc > 0 ? pfds[0].revents : 0;
		if (qrev & (POLLIN | POLLHUP | POLLERR))
			read_in(slirp);
		slirp_pollfds_poll(slirp, rc < 0, get_revents_cb, NULL);
		timers_run();
		flush_out();
	}
}
