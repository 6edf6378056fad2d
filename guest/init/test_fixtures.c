/* Golden-fixture tests: the bytes in test/fixtures/protocol/ come from
 * src/guest/protocol.ts (scripts/gen-protocol-fixtures.mjs); the C side must
 * decode them to the same values and encode the same bytes. */
#include "config.h"
#include "exec.h"
#include "fs.h"
#include "hello.h"
#include "json.h"
#include "mux.h"
#include "net.h"
#include "test.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *fixture_dir;

static unsigned char *load(const struct jval *c, size_t *len)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", fixture_dir, json_get(c, "file")->s);
	unsigned char *b = test_read_file(path, len);
	CHECK(b != NULL, "cannot read %s", path);
	return b;
}

static size_t unhex(const char *h, unsigned char *out)
{
	size_t n = 0;
	for (; h[0] && h[1]; h += 2) {
		unsigned v;
		sscanf(h, "%2x", &v);
		out[n++] = (unsigned char)v;
	}
	return n;
}

static int64_t geti(const struct jval *o, const char *k)
{
	const struct jval *v = json_get(o, k);
	return v && v->type == J_INT ? v->i : -999;
}

static bool str_eq(const char *s, const struct jval *v)
{
	return v && v->type == J_STR && strlen(s) == v->slen && memcmp(s, v->s, v->slen) == 0;
}

/* env (kv list) equals the expected object exactly. */
static bool env_eq(const struct kv *env, size_t n, const struct jval *want)
{
	if (want->count != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!str_eq(env[i].v, json_get(want, env[i].k)))
			return false;
	return true;
}

static bool argv_eq(const char **argv, size_t argc, const struct jval *want)
{
	if (want->count != argc)
		return false;
	size_t i = 0;
	for (const struct jval *s = want->child; s; s = s->next, i++)
		if (!str_eq(argv[i], s))
			return false;
	return argv[argc] == NULL;
}

static void frame_case(const char *name, const struct jval *c, const unsigned char *b, size_t len)
{
	struct mux_hdr h;
	char err[128];
	CHECK(len >= MUX_HEADER_SIZE && mux_decode_header(b, &h, err, sizeof err) == 0, "%s: %s", name, err);
	CHECK(h.stream == (uint32_t)geti(c, "stream") && h.type == geti(c, "type"), "%s: header fields", name);
	CHECK(h.len == len - MUX_HEADER_SIZE, "%s: length", name);
	const struct jval *hex = json_get(c, "payloadHex");
	if (hex) {
		unsigned char want[128];
		size_t n = unhex(hex->s, want);
		CHECK(n == h.len && memcmp(want, b + MUX_HEADER_SIZE, n) == 0, "%s: payload", name);
	} else {
		CHECK(geti(c, "payloadLen") == h.len, "%s: payload length", name);
		bool same = true;
		for (size_t i = 0; i < h.len; i++)
			same &= b[MUX_HEADER_SIZE + i] == geti(c, "payloadFill");
		CHECK(same, "%s: payload bytes", name);
	}
	uint8_t enc[MUX_HEADER_SIZE];
	mux_encode_header(enc, h.stream, h.type, h.len);
	CHECK(memcmp(enc, b, MUX_HEADER_SIZE) == 0, "%s: re-encoded header differs", name);
}

static int parse_exec_msg(const unsigned char *b, size_t len, struct jarena *a, struct exec_host_msg *m,
			  char *err, size_t errlen)
{
	uint8_t kind;
	uint32_t n;
	if (len < EXEC_HEADER_SIZE || exec_decode_header(b, &kind, &n, err, errlen) != 0)
		return -2;
	if (kind != EK_JSON || n != len - EXEC_HEADER_SIZE)
		return -2;
	jarena_reset(a);
	return exec_parse_host_json((const char *)b + EXEC_HEADER_SIZE, n, a, m, err, errlen);
}

static void exit_case(const char *name, const struct jval *c, const unsigned char *b, size_t len)
{
	const struct jval *e = json_get(c, "exit");
	struct exec_result r;
	memset(&r, 0, sizeof r);
	static const char *const st[] = {"exited", "signaled", "timed_out", "failed_to_start"};
	static const char *const codes[] = {"",		    "not_found",       "not_executable", "bad_cwd",
					    "setup_failed", "invalid_request", "bad_user"};
	for (int i = 0; i < 4; i++)
		if (str_eq(st[i], json_get(e, "status")))
			r.status = (enum exec_status)i;
	r.exit_code = (int)geti(e, "exitCode");
	r.signal = json_get(e, "signal") ? (int)geti(e, "signal") : 0;
	r.stdout_bytes = (uint64_t)geti(e, "stdoutBytes");
	r.stderr_bytes = (uint64_t)geti(e, "stderrBytes");
	r.stdout_truncated = json_get(e, "stdoutTruncated")->b;
	r.stderr_truncated = json_get(e, "stderrTruncated")->b;
	r.duration_ms = (uint64_t)geti(e, "durationMs");
	const struct jval *er = json_get(e, "error");
	if (er) {
		for (int i = 1; i < 7; i++)
			if (str_eq(codes[i], json_get(er, "code")))
				r.error = (enum exec_error)i;
		const struct jval *msg = json_get(er, "message");
		memcpy(r.message, msg->s, msg->slen + 1);
	}
	unsigned char out[2048];
	long n = exec_format_exit(&r, (char *)out + EXEC_HEADER_SIZE, sizeof out - EXEC_HEADER_SIZE);
	CHECK(n > 0, "%s: format", name);
	exec_encode_header(out, EK_JSON, (uint32_t)n);
	CHECK((size_t)n + EXEC_HEADER_SIZE == len && memcmp(out, b, len) == 0, "%s: bytes differ:\n  C:  %.*s\n  TS: %.*s",
	      name, (int)n, out + EXEC_HEADER_SIZE, (int)(len - 5), b + 5);
}

static void config_case(const char *name, const struct jval *c, const unsigned char *b, size_t len,
			struct jarena *a)
{
	struct guest_config g;
	char err[300];
	jarena_reset(a);
	int rc = config_parse_disk(b, len, a, &g, err, sizeof err);
	CHECK(rc == 0, "%s: %s", name, err);
	if (rc != 0)
		return;
	const struct jval *x = json_get(c, "expect");
	CHECK(str_eq(g.workspace, json_get(x, "workspace")) && str_eq(g.hostname, json_get(x, "hostname")),
	      "%s: names", name);
	CHECK(env_eq(g.env, g.envc, json_get(x, "env")), "%s: env", name);
	const struct jval *cmd = json_get(x, "command");
	CHECK(g.has_command == (cmd->type != J_NULL), "%s: command presence", name);
	if (g.has_command && cmd->type == J_OBJ) {
		CHECK(argv_eq(g.command.argv, g.command.argc, json_get(cmd, "argv")), "%s: command argv", name);
		CHECK(env_eq(g.command.env, g.command.envc, json_get(cmd, "env")), "%s: command env", name);
		CHECK(str_eq(g.command.cwd, json_get(cmd, "cwd")), "%s: command cwd", name);
		CHECK(g.power_off == json_get(cmd, "powerOff")->b, "%s: powerOff", name);
	}
	const struct jval *pf = json_get(x, "prefetch");
	CHECK(g.nprefetch == pf->count, "%s: prefetch count", name);
	size_t k = 0;
	for (const struct jval *p = pf->child; p && k < g.nprefetch; p = p->next, k++)
		CHECK(str_eq(g.prefetch[k], p), "%s: prefetch[%zu]", name, k);
	const struct jval *net = json_get(x, "network");
	if (net->type == J_NULL) {
		CHECK(g.net.mode == NET_NONE, "%s: network absent", name);
	} else if (!strcmp(json_get(net, "mode")->s, "isolated")) {
		CHECK(g.net.mode == NET_ISOLATED, "%s: network isolated", name);
	} else {
		CHECK(g.net.mode == NET_USER, "%s: network user", name);
		char ip[INET_ADDRSTRLEN], cidr[INET_ADDRSTRLEN + 4];
		inet_ntop(AF_INET, &g.net.addr, ip, sizeof ip);
		snprintf(cidr, sizeof cidr, "%s/%d", ip, g.net.prefix);
		CHECK(!strcmp(cidr, json_get(net, "address")->s), "%s: address %s", name, cidr);
		inet_ntop(AF_INET, &g.net.gw, ip, sizeof ip);
		CHECK(str_eq(ip, json_get(net, "gateway")), "%s: gateway", name);
		const struct jval *dns = json_get(net, "dns");
		CHECK(g.net.ndns == dns->count, "%s: dns count", name);
		size_t i = 0;
		for (const struct jval *d = dns->child; d && i < g.net.ndns; d = d->next, i++) {
			inet_ntop(AF_INET, &g.net.dns[i], ip, sizeof ip);
			CHECK(str_eq(ip, d), "%s: dns[%zu]", name, i);
		}
		const struct jval *mtu = json_get(net, "mtu");
		CHECK(g.net.mtu == (mtu ? (int)mtu->i : 0), "%s: mtu", name);
		char conf[256];
		CHECK(net_resolv_conf(&g.net, conf, sizeof conf) > 0 && (g.net.ndns == 0 || strstr(conf, "nameserver ")),
		      "%s: resolv.conf", name);
	}
}

static void fs_request_case(const char *name, const struct jval *c, const unsigned char *b, size_t len,
			    struct jarena *a, bool valid)
{
	uint8_t kind;
	uint32_t n;
	char err[300] = "";
	CHECK(len >= EXEC_HEADER_SIZE && exec_decode_header(b, &kind, &n, err, sizeof err) == 0 && kind == FK_JSON &&
		      n == len - EXEC_HEADER_SIZE,
	      "%s: header", name);
	struct fs_req r;
	jarena_reset(a);
	int rc = fs_parse_request((const char *)b + EXEC_HEADER_SIZE, n, a, &r, err, sizeof err);
	if (!valid) {
		CHECK(rc != 0, "%s: accepted", name);
		return;
	}
	CHECK(rc == 0, "%s: %s", name, err);
	if (rc != 0)
		return;
	const struct jval *x = json_get(c, "expect");
	CHECK((r.op == FS_READ) == str_eq("read", json_get(x, "op")), "%s: op", name);
	CHECK(str_eq(r.path, json_get(x, "path")), "%s: path", name);
	CHECK(r.mode == geti(x, "mode") && r.size == (uint64_t)geti(x, "size"), "%s: mode/size", name);
	int64_t uid = geti(x, "uid"), gid = geti(x, "gid");
	CHECK(r.uid == (uid < 0 ? FS_ID_NONE : (uint32_t)uid) && r.gid == (gid < 0 ? FS_ID_NONE : (uint32_t)gid),
	      "%s: uid/gid", name);
}

/* stat/done/error: the C side must write exactly these bytes. */
static void fs_guest_case(const char *name, const char *kind, const struct jval *c, const unsigned char *b,
			  size_t len)
{
	const struct jval *m = json_get(c, "message");
	char out[2048];
	long n = -1;
	if (!strcmp(kind, "fs_stat")) {
		n = fs_format_stat((uint64_t)geti(m, "size"), (uint32_t)geti(m, "mode"), (uint32_t)geti(m, "uid"),
				   (uint32_t)geti(m, "gid"), out + EXEC_HEADER_SIZE, sizeof out - EXEC_HEADER_SIZE);
	} else if (!strcmp(kind, "fs_done")) {
		n = fs_format_done((uint64_t)geti(m, "bytes"), out + EXEC_HEADER_SIZE, sizeof out - EXEC_HEADER_SIZE);
	} else {
		enum fs_error code = FSE_NONE;
		for (int i = FSE_NOT_FOUND; i <= FSE_INVALID_REQUEST; i++)
			if (str_eq(fs_error_name((enum fs_error)i), json_get(m, "code")))
				code = (enum fs_error)i;
		CHECK(code != FSE_NONE, "%s: code", name);
		n = fs_format_error(code, json_get(m, "message")->s, out + EXEC_HEADER_SIZE, sizeof out - EXEC_HEADER_SIZE);
	}
	CHECK(n > 0, "%s: format", name);
	if (n <= 0)
		return;
	exec_encode_header((uint8_t *)out, FK_JSON, (uint32_t)n);
	CHECK((size_t)n + EXEC_HEADER_SIZE == len && memcmp(out, b, len) == 0, "%s: bytes differ:\n  C:  %.*s\n  TS: %.*s",
	      name, (int)n, out + EXEC_HEADER_SIZE, (int)(len - 5), b + 5);
}

void test_fixtures(const char *dir)
{
	fixture_dir = dir;
	char path[512];
	snprintf(path, sizeof path, "%s/cases.json", dir);
	size_t len;
	unsigned char *text = test_read_file(path, &len);
	CHECK(text != NULL, "cannot read %s", path);
	if (!text)
		return;
	struct jarena ca, ra;
	jarena_init(&ca, malloc(64 << 20), 64 << 20, 1 << 20);
	jarena_init(&ra, malloc(64 << 20), 64 << 20, 1 << 20);
	const struct jval *cases;
	char err[300];
	CHECK(json_parse((const char *)text, len, &ca, &cases, err, sizeof err) == 0, "cases.json: %s", err);
	int ran = 0;
	for (const struct jval *c = cases->child; c; c = c->next, ran++) {
		const char *name = json_get(c, "name")->s, *kind = json_get(c, "kind")->s;
		size_t blen;
		unsigned char *b = load(c, &blen);
		if (!b)
			continue;
		struct exec_host_msg m;
		memset(&m, 0, sizeof m);
		if (!strcmp(kind, "frame")) {
			frame_case(name, c, b, blen);
		} else if (!strcmp(kind, "frame_invalid")) {
			struct mux_hdr h;
			CHECK(mux_decode_header(b, &h, err, sizeof err) != 0, "%s: accepted", name);
		} else if (!strcmp(kind, "exec_header_invalid")) {
			uint8_t k;
			uint32_t n;
			CHECK(exec_decode_header(b, &k, &n, err, sizeof err) != 0, "%s: accepted", name);
		} else if (!strcmp(kind, "exec_stdin")) {
			uint8_t k;
			uint32_t n;
			unsigned char want[64];
			size_t wn = unhex(json_get(c, "payloadHex")->s, want);
			CHECK(exec_decode_header(b, &k, &n, err, sizeof err) == 0 && k == EK_STDIN && n == wn &&
				      memcmp(b + 5, want, wn) == 0,
			      "%s", name);
		} else if (!strcmp(kind, "exec_request")) {
			int rc = parse_exec_msg(b, blen, &ra, &m, err, sizeof err);
			CHECK(rc == 0 && m.type == EXEC_MSG_EXEC, "%s: %s", name, err);
			if (rc != 0)
				goto next;
			const struct jval *x = json_get(c, "expect");
			struct exec_req *r = &m.req;
			CHECK(argv_eq(r->argv, r->argc, json_get(x, "argv")), "%s: argv", name);
			CHECK(env_eq(r->env, r->envc, json_get(x, "env")), "%s: env", name);
			CHECK(str_eq(r->cwd, json_get(x, "cwd")), "%s: cwd", name);
			CHECK(r->stdin_pipe == json_get(x, "stdin")->b, "%s: stdin", name);
			CHECK((int64_t)r->timeout_ms == geti(x, "timeoutMs"), "%s: timeoutMs", name);
			int64_t ol = geti(x, "stdoutLimit"), el = geti(x, "stderrLimit");
			CHECK(r->stdout_limit == (ol < 0 ? EXEC_NO_LIMIT : (uint64_t)ol), "%s: stdoutLimit", name);
			CHECK(r->stderr_limit == (el < 0 ? EXEC_NO_LIMIT : (uint64_t)el), "%s: stderrLimit", name);
			const struct jval *tty = json_get(x, "tty");
			CHECK(r->tty == (tty->type == J_OBJ), "%s: tty presence", name);
			if (r->tty && tty->type == J_OBJ) {
				const struct jval *term = json_get(tty, "term");
				CHECK(r->rows == geti(tty, "rows") && r->cols == geti(tty, "cols"), "%s: tty size", name);
				CHECK(term->type == J_NULL ? r->term == NULL : r->term && str_eq(r->term, term), "%s: tty term",
				      name);
			}
			const struct jval *user = json_get(x, "user");
			CHECK(user->type == J_NULL ? r->user == NULL : r->user && str_eq(r->user, user), "%s: user", name);
		} else if (!strcmp(kind, "exec_request_invalid")) {
			int rc = parse_exec_msg(b, blen, &ra, &m, err, sizeof err);
			CHECK(rc != 0 || m.type != EXEC_MSG_EXEC, "%s: accepted", name);
		} else if (!strcmp(kind, "exec_signal")) {
			int rc = parse_exec_msg(b, blen, &ra, &m, err, sizeof err);
			CHECK(rc == 0 && m.type == EXEC_MSG_SIGNAL && m.signal == geti(c, "signal"), "%s: %s", name, err);
		} else if (!strcmp(kind, "exec_signal_invalid")) {
			CHECK(parse_exec_msg(b, blen, &ra, &m, err, sizeof err) != 0, "%s: accepted", name);
		} else if (!strcmp(kind, "exec_resize")) {
			int rc = parse_exec_msg(b, blen, &ra, &m, err, sizeof err);
			CHECK(rc == 0 && m.type == EXEC_MSG_RESIZE && m.rows == geti(c, "rows") && m.cols == geti(c, "cols"),
			      "%s: %s", name, err);
		} else if (!strcmp(kind, "exec_resize_invalid")) {
			CHECK(parse_exec_msg(b, blen, &ra, &m, err, sizeof err) != 0, "%s: accepted", name);
		} else if (!strcmp(kind, "fs_request") || !strcmp(kind, "fs_request_invalid")) {
			fs_request_case(name, c, b, blen, &ra, !strcmp(kind, "fs_request"));
		} else if (!strcmp(kind, "fs_stat") || !strcmp(kind, "fs_done") || !strcmp(kind, "fs_error")) {
			fs_guest_case(name, kind, c, b, blen);
		} else if (!strcmp(kind, "exec_started")) {
			unsigned char out[128];
			long n = exec_format_started((pid_t)geti(c, "pid"), (char *)out + 5, sizeof out - 5);
			exec_encode_header(out, EK_JSON, (uint32_t)n);
			CHECK((size_t)n + 5 == blen && memcmp(out, b, blen) == 0, "%s: bytes differ", name);
		} else if (!strcmp(kind, "exec_exit")) {
			exit_case(name, c, b, blen);
		} else if (!strcmp(kind, "hello_guest")) {
			char out[256];
			long n = hello_format_guest(out, sizeof out, json_get(c, "init")->s, geti(c, "bootMs"));
			CHECK((size_t)n == blen && memcmp(out, b, blen) == 0, "%s: bytes differ", name);
		} else if (!strcmp(kind, "hello_host")) {
			int64_t t = -1;
			int rc = hello_parse_host((const char *)b, blen, &t, err, sizeof err);
			if (json_get(c, "valid")->b)
				CHECK(rc == 0 && t == geti(c, "timeMs"), "%s: %s", name, err);
			else
				CHECK(rc != 0, "%s: accepted", name);
		} else if (!strcmp(kind, "config")) {
			config_case(name, c, b, blen, &ra);
		} else if (!strcmp(kind, "config_invalid")) {
			struct guest_config g;
			jarena_reset(&ra);
			CHECK(config_parse_disk(b, blen, &ra, &g, err, sizeof err) != 0, "%s: accepted", name);
		} else {
			CHECK(0, "%s: unknown fixture kind %s", name, kind);
		}
	next:
		free(b);
	}
	CHECK(ran >= 100, "only %d fixture cases", ran);
	free(ca.buf);
	free(ra.buf);
	free(text);
}
