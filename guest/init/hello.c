/* HELLO payloads. */
#include "hello.h"
#include "json.h"
#include "mux.h"

#include <stdio.h>

long hello_format_guest(char *buf, size_t cap, const char *init, int64_t boot_ms)
{
	struct jw w;
	jw_init(&w, buf, cap);
	jw_obj_begin(&w);
	jw_key(&w, "v");
	jw_int(&w, PROTOCOL_VERSION);
	jw_key(&w, "init");
	jw_cstr(&w, init);
	jw_key(&w, "bootMs");
	jw_int(&w, boot_ms);
	/* The host sends at most this much per stream before our CREDIT. */
	jw_key(&w, "window");
	jw_int(&w, MUX_WINDOW);
	jw_obj_end(&w);
	return jw_finish(&w);
}

int hello_parse_host(const char *json, size_t len, int64_t *time_ms, char *err, size_t errlen)
{
	static char abuf[8192];
	static const char *const allowed[] = {"v", "timeMs", NULL};
	struct jarena a;
	jarena_init(&a, abuf, sizeof abuf, 64);
	const struct jval *o;
	if (json_parse(json, len, &a, &o, err, errlen) != 0)
		return -1;
	char bad[80];
	if (o->type != J_OBJ) {
		snprintf(err, errlen, "host HELLO is not an object");
		return -1;
	}
	if (!json_keys_allowed(o, allowed, bad, sizeof bad)) {
		snprintf(err, errlen, "unknown field \"%s\" in host HELLO", bad);
		return -1;
	}
	const struct jval *v = json_get(o, "v"), *t = json_get(o, "timeMs");
	if (!v || v->type != J_INT || v->i != PROTOCOL_VERSION) {
		snprintf(err, errlen, "host HELLO: v must be %d", PROTOCOL_VERSION);
		return -1;
	}
	if (!t || t->type != J_INT || t->i < 0) {
		snprintf(err, errlen, "host HELLO: timeMs must be a non-negative integer");
		return -1;
	}
	*time_ms = t->i;
	return 0;
}
