/* Config disk reading and validation. */
#include "config.h"
#include "log.h"
#include "mux.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cerr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int cerr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static int parse_command(const struct jval *o, struct jarena *a, struct guest_config *c, char *err, size_t errlen)
{
	static const char *const allowed[] = {"argv", "env", "cwd", "powerOff", NULL};
	char bad[80];
	if (o->type != J_OBJ)
		return cerr(err, errlen, "config: command must be an object or null");
	if (!json_keys_allowed(o, allowed, bad, sizeof bad))
		return cerr(err, errlen, "config: unknown field \"command.%s\"", bad);
	struct exec_req *r = &c->command;
	memset(r, 0, sizeof *r);
	const struct jval *argv = json_get(o, "argv");
	if (!argv || argv->type != J_ARR || argv->count < 1)
		return cerr(err, errlen, "config: command.argv must be a non-empty array of strings");
	r->argv = jarena_alloc(a, (argv->count + 1) * sizeof *r->argv);
	if (!r->argv)
		return cerr(err, errlen, "config: command.argv too large");
	size_t i = 0;
	for (const struct jval *s = argv->child; s; s = s->next, i++) {
		if (!json_is_cstr(s))
			return cerr(err, errlen, "config: command.argv[%zu] must be a string without NUL", i);
		r->argv[i] = s->s;
	}
	r->argv[i] = NULL;
	r->argc = i;
	const struct jval *env = json_get(o, "env");
	if (env && parse_env(env, a, &r->env, &r->envc, "config: command.env", err, errlen) != 0)
		return -1;
	r->cwd = "/";
	const struct jval *cwd = json_get(o, "cwd");
	if (cwd) {
		if (!json_is_cstr(cwd) || cwd->s[0] != '/')
			return cerr(err, errlen, "config: command.cwd must be an absolute path");
		r->cwd = cwd->s;
	}
	r->stdout_limit = r->stderr_limit = EXEC_NO_LIMIT;
	const struct jval *po = json_get(o, "powerOff");
	c->power_off = false;
	if (po) {
		if (po->type != J_BOOL)
			return cerr(err, errlen, "config: command.powerOff must be a boolean");
		c->power_off = po->b;
	}
	c->has_command = true;
	return 0;
}

/* A strict dotted quad (what zod's IPV4_PATTERN accepts; inet_pton agrees). */
static int parse_ipv4(const struct jval *v, struct in_addr *out)
{
	if (!json_is_cstr(v) || v->slen > 15)
		return -1;
	return inet_pton(AF_INET, v->s, out) == 1 ? 0 : -1;
}

static int parse_network(const struct jval *o, struct guest_net *n, char *err, size_t errlen)
{
	static const char *const user_keys[] = {"mode", "address", "gateway", "dns", "mtu", NULL};
	static const char *const isolated_keys[] = {"mode", NULL};
	char bad[80];
	memset(n, 0, sizeof *n);
	if (o->type != J_OBJ)
		return cerr(err, errlen, "config: network must be an object");
	const struct jval *mode = json_get(o, "mode");
	if (!json_is_cstr(mode))
		return cerr(err, errlen, "config: network.mode must be \"user\" or \"isolated\"");
	if (!strcmp(mode->s, "isolated")) {
		if (!json_keys_allowed(o, isolated_keys, bad, sizeof bad))
			return cerr(err, errlen, "config: unknown field \"network.%s\"", bad);
		n->mode = NET_ISOLATED;
		return 0;
	}
	if (strcmp(mode->s, "user") != 0)
		return cerr(err, errlen, "config: network.mode must be \"user\" or \"isolated\"");
	if (!json_keys_allowed(o, user_keys, bad, sizeof bad))
		return cerr(err, errlen, "config: unknown field \"network.%s\"", bad);
	n->mode = NET_USER;
	const struct jval *addr = json_get(o, "address");
	char ip[16];
	const char *slash = json_is_cstr(addr) ? strchr(addr->s, '/') : NULL;
	if (!slash || (size_t)(slash - addr->s) >= sizeof ip)
		return cerr(err, errlen, "config: network.address must be an IPv4 address with a prefix length");
	memcpy(ip, addr->s, (size_t)(slash - addr->s));
	ip[slash - addr->s] = '\0';
	char *end;
	errno = 0;
	long prefix = strtol(slash + 1, &end, 10);
	if (inet_pton(AF_INET, ip, &n->addr) != 1 || slash[1] < '1' || slash[1] > '9' || *end != '\0' ||
	    errno != 0 || prefix < 1 || prefix > 32)
		return cerr(err, errlen, "config: network.address must be an IPv4 address with a prefix length 1..32");
	n->prefix = (int)prefix;
	n->mask.s_addr = htonl(prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> prefix));
	if (parse_ipv4(json_get(o, "gateway"), &n->gw) != 0)
		return cerr(err, errlen, "config: network.gateway must be an IPv4 address");
	const struct jval *dns = json_get(o, "dns");
	if (!dns || dns->type != J_ARR || dns->count > NET_MAX_DNS)
		return cerr(err, errlen, "config: network.dns must be an array of at most %d IPv4 addresses",
			    NET_MAX_DNS);
	for (const struct jval *d = dns->child; d; d = d->next) {
		if (parse_ipv4(d, &n->dns[n->ndns]) != 0)
			return cerr(err, errlen, "config: network.dns[%zu] must be an IPv4 address", n->ndns);
		n->ndns++;
	}
	const struct jval *mtu = json_get(o, "mtu");
	if (mtu) {
		if (mtu->type != J_INT || mtu->i < 576 || mtu->i > 65520)
			return cerr(err, errlen, "config: network.mtu must be an integer 576..65520");
		n->mtu = (int)mtu->i;
	}
	return 0;
}

int config_parse_json(const char *json, size_t len, struct jarena *a, struct guest_config *c, char *err,
		      size_t errlen)
{
	static const char *const allowed[] = {"v", "workspace", "hostname", "env", "command", "network", "prefetch", NULL};
	memset(c, 0, sizeof *c);
	const struct jval *o;
	char jerr[200];
	if (json_parse(json, len, a, &o, jerr, sizeof jerr) != 0)
		return cerr(err, errlen, "config: %s", jerr);
	if (o->type != J_OBJ)
		return cerr(err, errlen, "config: not a JSON object");
	char bad[80];
	if (!json_keys_allowed(o, allowed, bad, sizeof bad))
		return cerr(err, errlen, "config: unknown field \"%s\"", bad);
	const struct jval *v = json_get(o, "v");
	if (!v || v->type != J_INT || v->i != PROTOCOL_VERSION)
		return cerr(err, errlen, "config: v must be %d", PROTOCOL_VERSION);
	const struct jval *ws = json_get(o, "workspace");
	if (!json_is_cstr(ws) || ws->slen == 0)
		return cerr(err, errlen, "config: workspace must be a non-empty string");
	c->workspace = ws->s;
	const struct jval *hn = json_get(o, "hostname");
	if (!json_is_cstr(hn) || hn->slen == 0)
		return cerr(err, errlen, "config: hostname must be a non-empty string");
	/* zod's max(63) counts UTF-16 units; the kernel's limit is 64 bytes. */
	if (hn->slen > 63)
		return cerr(err, errlen, "config: hostname longer than 63 bytes");
	c->hostname = hn->s;
	const struct jval *env = json_get(o, "env");
	if (env && parse_env(env, a, &c->env, &c->envc, "config: env", err, errlen) != 0)
		return -1;
	const struct jval *cmd = json_get(o, "command");
	if (cmd && cmd->type != J_NULL && parse_command(cmd, a, c, err, errlen) != 0)
		return -1;
	const struct jval *net = json_get(o, "network");
	if (net && parse_network(net, &c->net, err, errlen) != 0)
		return -1;
	const struct jval *pf = json_get(o, "prefetch");
	if (pf) {
		if (pf->type != J_ARR || pf->count > PREFETCH_MAX)
			return cerr(err, errlen, "config: prefetch must be an array of at most %d strings", PREFETCH_MAX);
		for (const struct jval *s = pf->child; s; s = s->next) {
			if (!json_is_cstr(s) || s->slen == 0 || s->slen > PREFETCH_MAX_NAME)
				return cerr(err, errlen,
					    "config: prefetch[%zu] must be a non-empty string without NUL (at most %d bytes)",
					    c->nprefetch, PREFETCH_MAX_NAME);
			c->prefetch[c->nprefetch++] = s->s;
		}
	}
	return 0;
}

int config_parse_disk(const uint8_t *disk, size_t len, struct jarena *a, struct guest_config *c, char *err,
		      size_t errlen)
{
	if (len < 12 || memcmp(disk, CONFIG_MAGIC, 8) != 0)
		return cerr(err, errlen, "config disk: bad magic");
	uint32_t n = get_be32(disk + 8);
	if (n > CONFIG_MAX_JSON)
		return cerr(err, errlen, "config disk: JSON length %u over %d", n, CONFIG_MAX_JSON);
	if ((size_t)n > len - 12)
		return cerr(err, errlen, "config disk: JSON length %u past the end of the disk", n);
	return config_parse_json((const char *)disk + 12, n, a, c, err, errlen);
}

int config_load(struct guest_config *c, int wait_ms, char *err, size_t errlen)
{
	char dev[64];
	int64_t deadline = now_ms() + wait_ms;
	while (find_disk_by_serial(CONFIG_DISK_SERIAL, dev, sizeof dev) != 0) {
		if (now_ms() >= deadline)
			return cerr(err, errlen, "no config disk (virtio-blk serial %s)", CONFIG_DISK_SERIAL);
		sleep_ms(10);
	}
	log_debug("config disk %s", dev);
	int fd;
	while ((fd = open(dev, O_RDONLY | O_CLOEXEC)) < 0) {
		if (!retry_while_probing(deadline))
			return cerr(err, errlen, "open %s: %s", dev, strerror(errno));
	}
	size_t cap = 12 + CONFIG_MAX_JSON;
	uint8_t *buf = malloc(cap);
	if (!buf) {
		close(fd);
		return cerr(err, errlen, "config: out of memory");
	}
	ssize_t n = read_full(fd, buf, 4096);
	if (n >= 12 && memcmp(buf, CONFIG_MAGIC, 8) == 0) {
		size_t want = 12 + (size_t)get_be32(buf + 8);
		if (want > (size_t)n && want <= cap) {
			ssize_t m = read_full(fd, buf + n, want - (size_t)n);
			n = m < 0 ? -1 : n + m;
		}
	}
	int saved = errno;
	close(fd);
	if (n < 0)
		return cerr(err, errlen, "read %s: %s", dev, strerror(saved));
	/* The arena outlives this call: the config is used until power off. */
	size_t acap = 48 * (size_t)n + 65536; /* worst case ~one 80-byte node per 2 input bytes */
	void *abuf = malloc(acap);
	if (!abuf)
		return cerr(err, errlen, "config: out of memory");
	struct jarena a;
	jarena_init(&a, abuf, acap, (size_t)n + 16);
	return config_parse_disk(buf, (size_t)n, &a, c, err, errlen);
}
