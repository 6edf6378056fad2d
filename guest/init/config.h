/* The config disk (docs/protocol.md §4): MACFG001, u32 BE length, JSON. */
#ifndef MA_CONFIG_H
#define MA_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>

#include "exec.h"
#include "json.h"
#include "prefetch.h"

#include "protocol.h" /* CONFIG_MAGIC, CONFIG_MAX_JSON, NET_MAX_DNS */

/* config.network (docs/protocol.md §4). NET_NONE: the field is absent. */
enum net_mode { NET_NONE, NET_USER, NET_ISOLATED };

struct guest_net {
	enum net_mode mode;
	struct in_addr addr, mask, gw; /* network byte order */
	int prefix;
	struct in_addr dns[NET_MAX_DNS];
	size_t ndns;
	int mtu; /* 0: leave the driver's default */
};

struct guest_config {
	const char *workspace;
	const char *hostname;
	struct kv *env;
	size_t envc;
	bool has_command;
	struct exec_req command; /* argv, env, cwd (limits/timeout unused) */
	bool power_off;
	struct guest_net net;
	const char *prefetch[PREFETCH_MAX]; /* commands or absolute paths */
	size_t nprefetch;
};

/* Parses the disk bytes (at least the header + JSON). */
int config_parse_disk(const uint8_t *disk, size_t len, struct jarena *a, struct guest_config *c, char *err,
		      size_t errlen);
int config_parse_json(const char *json, size_t len, struct jarena *a, struct guest_config *c, char *err,
		      size_t errlen);
/* Finds the ma-config disk (waiting up to wait_ms), reads and parses it.
 * Allocates its buffers once (kept for the life of PID 1). */
int config_load(struct guest_config *c, int wait_ms, char *err, size_t errlen);

#endif
