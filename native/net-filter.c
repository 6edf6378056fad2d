/*
 * A user-mode stack connects to whatever address a guest packet names. A
 * guest root that routes 127.0.0.0/8 out of eth0 (route_localnet) would
 * thus reach services on the host's loopback, which unmapping the gateway
 * alone does not stop. Dropping those frames before the stack sees them
 * closes that path. 0.0.0.0/8 goes too: connect() to 0.0.0.0 reaches the
 * local host.
 */
#include "net-filter.h"

#define ETH_HLEN 14
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806
#define ETHERTYPE_IPV6 0x86dd

enum net_verdict net_filter_guest_frame(const uint8_t *frame, size_t len)
{
	if (len < ETH_HLEN)
		return NET_DROP_MALFORMED;
	unsigned type = (unsigned)frame[12] << 8 | frame[13];
	switch (type) {
	case ETHERTYPE_ARP:
		/* The stack answers ARP for its gateway; ARP opens no connection. */
		return NET_PASS;
	case ETHERTYPE_IPV6:
		/* Link-scope multicast (ff02::/16: router and neighbour
		 * solicitations, MLD) passes: it never leaves the link, and it is
		 * what the guest kernel sends first. (libslirp runs IPv4 only and
		 * ignores it; a stack that learns the guest's MAC from it needs
		 * it to deliver inbound connections early.) */
		if (len >= ETH_HLEN + 40 && frame[ETH_HLEN] >> 4 == 6 && frame[ETH_HLEN + 24] == 0xff &&
		    frame[ETH_HLEN + 25] == 0x02)
			return NET_PASS;
		return NET_DROP_IPV6;
	case ETHERTYPE_IPV4:
		break;
	default:
		return NET_DROP_OTHER;
	}
	const uint8_t *ip = frame + ETH_HLEN;
	size_t iplen = len - ETH_HLEN;
	if (iplen < 20 || ip[0] >> 4 != 4 || (size_t)(ip[0] & 0x0f) * 4 < 20 ||
	    (size_t)(ip[0] & 0x0f) * 4 > iplen)
		return NET_DROP_MALFORMED;
	uint8_t first = ip[16]; /* the destination's first octet */
	if (first == 127 || first == 0)
		return NET_DROP_LOOPBACK;
	return NET_PASS;
}

const char *net_verdict_name(enum net_verdict v)
{
	switch (v) {
	case NET_PASS:
		return "pass";
	case NET_DROP_LOOPBACK:
		return "host loopback";
	case NET_DROP_IPV6:
		return "IPv6";
	case NET_DROP_OTHER:
		return "unsupported EtherType";
	case NET_DROP_MALFORMED:
		return "malformed";
	}
	return "?";
}
