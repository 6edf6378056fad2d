/* Guest networking from the config disk (docs/protocol.md §4 "network"). */
#ifndef MA_NET_H
#define MA_NET_H

#include <stdbool.h>

#include "config.h"

/* NET_USER: waits (bounded) for the first non-loopback interface, sets its
 * address, netmask, MTU, brings it up, adds the default route, writes
 * /etc/resolv.conf and waits (bounded) for the link. NET_ISOLATED /
 * NET_NONE: nothing (only lo exists). Returns 0, or -1 after logging what
 * failed (the boot goes on: exec still works without a network). With
 * wait false it returns 1 at once, having changed nothing, unless the
 * interface is there with its carrier on (then nothing would wait). */
int net_configure(const struct guest_net *n, bool wait);

/* Sets IFF_UP on lo and every interface there is, without addresses: stage
 * 1's module loader calls it once the drivers are in, so that the NIC's open
 * (~15 ms under TCG: it fills the receive ring) overlaps the root mount
 * instead of delaying the first command. net_configure does the rest. */
void net_links_up(void);

/* Sets IFF_UP on lo (PID 1, whether or not the loader got there first). */
void net_loopback_up(void);

/* "nameserver a.b.c.d\n" lines for n into buf; returns the length or -1. */
int net_resolv_conf(const struct guest_net *n, char *buf, size_t cap);

#endif
