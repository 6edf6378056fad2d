/* Unit tests of net_filter_guest_frame (make test-c). */
#include <stdio.h>
#include <string.h>

#include "net-filter.h"

static int failures;

#define CHECK(cond, ...)                                                                   \
	do {                                                                               \
		if (!(cond)) {                                                             \
			failures++;                                                        \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);               \
			fprintf(stderr, __VA_ARGS__);                                      \
			fputc('\n', stderr);                                               \
		}                                                                          \
	} while (0)

/* An Ethernet frame with an IPv4 header to a.b.c.d (TCP, no payload). */
static size_t ipv4_frame(unsigned char *f, int a, int b, int c, int d)
{
	memset(f, 0, 64);
	f[12] = 0x08;
	f[13] = 0x00;
	f[14] = 0x45; /* version 4, IHL 5 */
	f[23] = 6;    /* TCP */
	f[26] = 10, f[27] = 0, f[28] = 2, f[29] = 15;
	f[30] = (unsigned char)a, f[31] = (unsigned char)b, f[32] = (unsigned char)c,
	f[33] = (unsigned char)d;
	return 54;
}

int main(void)
{
	unsigned char f[64];
	size_t n;

	n = ipv4_frame(f, 192, 0, 2, 1);
	CHECK(net_filter_guest_frame(f, n) == NET_PASS, "an outside address passes");
	n = ipv4_frame(f, 10, 0, 2, 3);
	CHECK(net_filter_guest_frame(f, n) == NET_PASS, "the DNS forwarder passes");
	n = ipv4_frame(f, 127, 0, 0, 1);
	CHECK(net_filter_guest_frame(f, n) == NET_DROP_LOOPBACK, "127.0.0.1 is dropped");
	n = ipv4_frame(f, 127, 1, 2, 3);
	CHECK(net_filter_guest_frame(f, n) == NET_DROP_LOOPBACK, "all of 127/8 is dropped");
	n = ipv4_frame(f, 0, 0, 0, 0);
	CHECK(net_filter_guest_frame(f, n) == NET_DROP_LOOPBACK, "0.0.0.0 is dropped");
	n = ipv4_frame(f, 128, 0, 0, 1);
	CHECK(net_filter_guest_frame(f, n) == NET_PASS, "128.0.0.1 passes");

	/* IHL larger than the packet, IHL below 5, wrong version, truncated. */
	n = ipv4_frame(f, 192, 0, 2, 1);
	f[14] = 0x4f;
	CHECK(net_filter_guest_frame(f, n) == NET_DROP_MALFORMED, "IHL beyond the frame");
	f[14] = 0x44;
	CHECK(net_filter_guest_frame(f, n) == NET_DROP_MALFORMED, "IHL below 5");
	f[14] = 0x65;
	CHECK(net_filter_guest_frame(f, n) == NET_DROP_MALFORMED, "version 6 in an IPv4 frame");
	f[14] = 0x45;
	CHECK(net_filter_guest_frame(f, 33) == NET_DROP_MALFORMED, "truncated IPv4 header");
	CHECK(net_filter_guest_frame(f, 13) == NET_DROP_MALFORMED, "shorter than Ethernet");

	memset(f, 0, sizeof f);
	f[12] = 0x08, f[13] = 0x06;
	CHECK(net_filter_guest_frame(f, 42) == NET_PASS, "ARP passes");
	f[12] = 0x86, f[13] = 0xdd;
	f[14] = 0x60;
	CHECK(net_filter_guest_frame(f, 54) == NET_DROP_IPV6, "IPv6 to :: is dropped");
	f[38] = 0xff, f[39] = 0x02, f[53] = 0x02;
	CHECK(net_filter_guest_frame(f, 54) == NET_PASS, "IPv6 to ff02::2 (router solicitation) passes");
	CHECK(net_filter_guest_frame(f, 53) == NET_DROP_IPV6, "a truncated IPv6 header is dropped");
	f[39] = 0x05;
	CHECK(net_filter_guest_frame(f, 54) == NET_DROP_IPV6, "site-scope multicast is dropped");
	f[38] = 0, f[39] = 0, f[53] = 1;
	CHECK(net_filter_guest_frame(f, 54) == NET_DROP_IPV6, "IPv6 to ::1 is dropped");
	memset(f + 14, 0, 50);
	f[12] = 0x81, f[13] = 0x00;
	CHECK(net_filter_guest_frame(f, 60) == NET_DROP_OTHER, "VLAN-tagged is dropped");

	if (failures) {
		fprintf(stderr, "net-filter: %d failure(s)\n", failures);
		return 1;
	}
	printf("net-filter: all tests passed\n");
	return 0;
}
