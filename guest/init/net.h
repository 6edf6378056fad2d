/* Guest networking from the config disk (docs/protocol.md §4 "network"). */
#ifndef MA_NET_H
#define MA_NET_H

#include "config.h"

/* NET_USER: waits (bounded) for the first non-loopback interface, sets its
 * address, netmask, MTU, brings it up, adds the default route and writes
 * /etc/resolv.conf. NET_ISOLATED / NET_NONE: nothing (only lo exists).
 * Returns 0, or -1 after logging what failed (the boot goes on: exec still
 * works without a network). */
int net_configure(const struct guest_net *n);

/* "nameserver a.b.c.d\n" lines for n into buf; returns the length or -1. */
int net_resolv_conf(const struct guest_net *n, char *buf, size_t cap);

#endif
