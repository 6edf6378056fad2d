/*
 * The guest-frame filter of netstack: which Ethernet frames from the guest
 * may reach its TCP/IP stack. A pure function, unit-tested in
 * test_net_filter.c.
 */
#ifndef MICROAGENT_NET_FILTER_H
#define MICROAGENT_NET_FILTER_H

#include <stddef.h>
#include <stdint.h>

enum net_verdict {
	NET_PASS = 0,
	NET_DROP_LOOPBACK, /* IPv4 to 127.0.0.0/8 or 0.0.0.0/8: the host itself */
	NET_DROP_IPV6,     /* IPv6 beyond the link (the guest has none; the stack runs IPv4) */
	NET_DROP_OTHER,    /* an EtherType the guest has no use for (VLAN, ...) */
	NET_DROP_MALFORMED /* too short, or not a well-formed IPv4 header */
};

enum net_verdict net_filter_guest_frame(const uint8_t *frame, size_t len);

/* A short name for a verdict, for the log. */
const char *net_verdict_name(enum net_verdict v);

#endif
