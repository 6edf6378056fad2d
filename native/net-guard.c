/*
 * net-guard: sits on the socket between QEMU's stream netdev and passt and
 * drops guest frames that passt must never act on (net-filter.c).
 *
 *   net-guard            fd 3: QEMU's side, fd 4: passt's side
 *
 * The stream carries frames as a 4-byte big-endian length and the frame
 * (QEMU's -netdev stream, passt's --fd). Each direction has its own thread
 * and blocking I/O, so a full socket one way never stalls the other way.
 * Guest -> passt is parsed and filtered; passt -> guest is copied as is.
 * When either side closes or errs, the process exits, which closes the
 * other side: passt exits on that EOF, and QEMU sees its link go down.
 * Drops are logged to stderr (passt.log), the first few and then sparsely
 * (IPv6 not at all: the guest kernel sends some by itself).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net-filter.h"

#define QEMU_FD 3
#define PASST_FD 4
/* A frame's largest length: 64 KiB IP packet + Ethernet header, rounded. */
#define MAX_FRAME (65536 + 64)
#define BUF_SIZE (256 * 1024)

static void die(const char *what, int err)
{
	if (err)
		fprintf(stderr, "net-guard: %s: %s\n", what, strerror(err));
	else
		fprintf(stderr, "net-guard: %s\n", what);
	_exit(err ? 1 : 0);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void log_drop(enum net_verdict v, const uint8_t *frame, size_t len)
{
	static unsigned long drops;
	/* The guest kernel sends IPv6 router and neighbour solicitations on
	 * its own: routine, not worth a line. */
	if (v == NET_DROP_IPV6)
		return;
	drops++;
	if (drops > 10 && drops % 1000 != 0)
		return;
	if (v == NET_DROP_LOOPBACK && len >= 34)
		fprintf(stderr, "net-guard: dropped guest packet #%lu to %u.%u.%u.%u (%s)\n", drops,
			frame[30], frame[31], frame[32], frame[33], net_verdict_name(v));
	else
		fprintf(stderr, "net-guard: dropped guest frame #%lu (%s)\n", drops, net_verdict_name(v));
}

/* passt -> QEMU: a plain copy. */
static void *down(void *arg)
{
	static uint8_t buf[BUF_SIZE];
	for (;;) {
		ssize_t r = read(PASST_FD, buf, sizeof buf);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("read from passt", errno);
		if (r == 0)
			die("passt closed the link", 0);
		if (write_all(QEMU_FD, buf, (size_t)r) != 0)
			die("write to QEMU", errno);
	}
	return arg;
}

/* QEMU -> passt: whole frames, filtered. */
static void up(void)
{
	static uint8_t in[BUF_SIZE + MAX_FRAME + 4];
	static uint8_t out[BUF_SIZE + MAX_FRAME + 4];
	size_t have = 0;
	for (;;) {
		ssize_t r = read(QEMU_FD, in + have, sizeof in - have);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("read from QEMU", errno);
		if (r == 0)
			die("QEMU closed the link", 0);
		have += (size_t)r;
		size_t off = 0, outlen = 0;
		while (have - off >= 4) {
			const uint8_t *h = in + off;
			size_t flen = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
			if (flen > MAX_FRAME)
				die("QEMU sent a frame longer than 64 KiB: protocol error", 0);
			if (have - off - 4 < flen)
				break;
			enum net_verdict v = net_filter_guest_frame(h + 4, flen);
			if (v == NET_PASS) {
				memcpy(out + outlen, h, flen + 4);
				outlen += flen + 4;
			} else {
				log_drop(v, h + 4, flen);
			}
			off += flen + 4;
		}
		if (outlen > 0 && write_all(PASST_FD, out, outlen) != 0)
			die("write to passt", errno);
		memmove(in, in + off, have - off);
		have -= off;
	}
}

int main(int argc, char **argv)
{
	if (argc != 1) {
		fprintf(stderr, "usage: net-guard  (fd 3: QEMU's stream netdev, fd 4: passt)\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	/* One end may be the monitor's own (Node sets O_NONBLOCK, a flag of
	 * the shared open file): this process wants blocking I/O. */
	for (int fd = QEMU_FD; fd <= PASST_FD; fd++) {
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
			die("fd 3 and 4 must be the QEMU and passt sockets", errno);
	}
	pthread_t t;
	int err = pthread_create(&t, NULL, down, NULL);
	if (err)
		die("pthread_create", err);
	up();
	return 0;
}
