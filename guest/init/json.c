/* Strict JSON parser and writer (see json.h). */
#include "json.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void jarena_init(struct jarena *a, void *buf, size_t cap, size_t max_nodes)
{
	a->buf = buf;
	a->cap = cap;
	a->used = 0;
	a->nodes = 0;
	a->max_nodes = max_nodes;
}

void jarena_reset(struct jarena *a)
{
	a->used = 0;
	a->nodes = 0;
}

void *jarena_alloc(struct jarena *a, size_t n)
{
	size_t start = (a->used + 7) & ~(size_t)7;
	if (start > a->cap || n > a->cap - start)
		return NULL;
	a->used = start + n;
	return a->buf + start;
}

struct parser {
	const unsigned char *p, *end;
	struct jarena *a;
	char *err;
	size_t errlen;
	int depth;
};

static const unsigned char *g_start; /* for error offsets; parsing is single-threaded */

static int perr_at(struct parser *ps, const char *msg)
{
	if (ps->errlen > 0)
		snprintf(ps->err, ps->errlen, "invalid JSON: %s at byte %ld", msg, (long)(ps->p - g_start));
	return -1;
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static struct jval *new_node(struct parser *ps, enum jtype t)
{
	if (ps->a->nodes >= ps->a->max_nodes) {
		perr_at(ps, "too many values");
		return NULL;
	}
	struct jval *v = jarena_alloc(ps->a, sizeof *v);
	if (!v) {
		perr_at(ps, "document too large");
		return NULL;
	}
	ps->a->nodes++;
	memset(v, 0, sizeof *v);
	v->type = t;
	return v;
}

static int hex4(const unsigned char *p, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned c = p[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -1;
		v = v * 16 + d;
	}
	*out = v;
	return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xC0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xE0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		o[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	o[0] = (char)(0xF0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	o[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	if (c < 0x80)
		return 1;
	size_t n;
	unsigned min, cp;
	if ((c & 0xE0) == 0xC0) {
		n = 2;
		min = 0x80;
		cp = c & 0x1F;
	} else if ((c & 0xF0) == 0xE0) {
		n = 3;
		min = 0x800;
		cp = c & 0x0F;
	} else if ((c & 0xF8) == 0xF0) {
		n = 4;
		min = 0x10000;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if ((size_t)(end - p) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

/* Parses a string at ps->p (on the opening quote) into the arena. */
static int parse_string(struct parser *ps, const char **out, size_t *outlen)
{
	ps->p++; /* opening quote */
	/* Decoded output is never longer than the raw text. */
	const unsigned char *q = ps->p;
	while (q < ps->end && *q != '"') {
		if (*q == '\\')
			q++;
		q++;
	}
	if (q >= ps->end)
		return perr_at(ps, "unterminated string");
	char *o = jarena_alloc(ps->a, (size_t)(q - ps->p) + 1);
	if (!o)
		return perr_at(ps, "document too large");
	size_t n = 0;
	while (ps->p < ps->end) {
		unsigned c = *ps->p;
		if (c == '"') {
			ps->p++;
			o[n] = 0;
			*out = o;
			*outlen = n;
			return 0;
		}
		if (c < 0x20)
			return perr_at(ps, "control character in string");
		if (c != '\\') {
			size_t l = utf8_seq(ps->p, ps->end);
			if (l == 0)
				return perr_at(ps, "invalid UTF-8");
			memcpy(o + n, ps->p, l);
			n += l;
			ps->p += l;
			continue;
		}
		if (ps->end - ps->p < 2)
			return perr_at(ps, "bad escape");
		unsigned e = ps->p[1];
		ps->p += 2;
		switch (e) {
		case '"': o[n++] = '"'; break;
		case '\\': o[n++] = '\\'; break;
		case '/': o[n++] = '/'; break;
		case 'b': o[n++] = '\b'; break;
		case 'f': o[n++] = '\f'; break;
		case 'n': o[n++] = '\n'; break;
		case 'r': o[n++] = '\r'; break;
		case 't': o[n++] = '\t'; break;
		case 'u': {
			unsigned cp;
			if (ps->end - ps->p < 4 || hex4(ps->p, &cp) != 0)
				return perr_at(ps, "bad \\u escape");
			ps->p += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				unsigned lo;
				if (ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u' &&
				    hex4(ps->p + 2, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
					ps->p += 6;
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				} else {
					cp = 0xFFFD;
				}
			} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
				cp = 0xFFFD;
			}
			/* \uXXXX is 6 raw bytes; its UTF-8 is at most 4 (a pair: 12 → 4). */
			n += put_utf8(o + n, cp);
			break;
		}
		default:
			return perr_at(ps, "bad escape");
		}
	}
	return perr_at(ps, "unterminated string");
}

static int parse_value(struct parser *ps, struct jval **out);

static int parse_number(struct parser *ps, struct jval **out)
{
	bool neg = false;
	if (*ps->p == '-') {
		neg = true;
		ps->p++;
	}
	if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
		return perr_at(ps, "bad number");
	int64_t v = 0;
	if (*ps->p == '0') {
		ps->p++;
	} else {
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
			v = v * 10 + (*ps->p - '0');
			if (v > JSON_MAX_INT)
				return perr_at(ps, "number out of range");
			ps->p++;
		}
	}
	if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'))
		return perr_at(ps, "not an integer");
	if (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
		return perr_at(ps, "leading zero");
	struct jval *n = new_node(ps, J_INT);
	if (!n)
		return -1;
	n->i = neg ? -v : v;
	*out = n;
	return 0;
}

static int parse_word(struct parser *ps, const char *w, struct jval **out, enum jtype t, bool b)
{
	size_t l = strlen(w);
	if ((size_t)(ps->end - ps->p) < l || memcmp(ps->p, w, l) != 0)
		return perr_at(ps, "unexpected token");
	ps->p += l;
	struct jval *n = new_node(ps, t);
	if (!n)
		return -1;
	n->b = b;
	*out = n;
	return 0;
}

static int parse_container(struct parser *ps, struct jval **out, bool obj)
{
	if (++ps->depth > JSON_MAX_DEPTH)
		return perr_at(ps, "nesting too deep");
	struct jval *c = new_node(ps, obj ? J_OBJ : J_ARR);
	if (!c)
		return -1;
	ps->p++;
	skip_ws(ps);
	struct jval **tail = &c->child;
	char close = obj ? '}' : ']';
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		ps->depth--;
		*out = c;
		return 0;
	}
	for (;;) {
		const char *key = NULL;
		size_t keylen = 0;
		skip_ws(ps);
		if (obj) {
			if (ps->p >= ps->end || *ps->p != '"')
				return perr_at(ps, "expected a key");
			if (parse_string(ps, &key, &keylen) != 0)
				return -1;
			for (struct jval *m = c->child; m; m = m->next)
				if (m->keylen == keylen && memcmp(m->key, key, keylen) == 0)
					return perr_at(ps, "duplicate key");
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != ':')
				return perr_at(ps, "expected ':'");
			ps->p++;
		}
		struct jval *v;
		if (parse_value(ps, &v) != 0)
			return -1;
		v->key = key;
		v->keylen = keylen;
		*tail = v;
		tail = &v->next;
		c->count++;
		skip_ws(ps);
		if (ps->p >= ps->end)
			return perr_at(ps, "unexpected end");
		if (*ps->p == ',') {
			ps->p++;
			continue;
		}
		if (*ps->p == close) {
			ps->p++;
			break;
		}
		return perr_at(ps, obj ? "expected ',' or '}'" : "expected ',' or ']'");
	}
	ps->depth--;
	*out = c;
	return 0;
}

static int parse_value(struct parser *ps, struct jval **out)
{
	skip_ws(ps);
	if (ps->p >= ps->end)
		return perr_at(ps, "unexpected end");
	switch (*ps->p) {
	case '{':
		return parse_container(ps, out, true);
	case '[':
		return parse_container(ps, out, false);
	case '"': {
		struct jval *n = new_node(ps, J_STR);
		if (!n)
			return -1;
		if (parse_string(ps, &n->s, &n->slen) != 0)
			return -1;
		*out = n;
		return 0;
	}
	case 't':
		return parse_word(ps, "true", out, J_BOOL, true);
	case 'f':
		return parse_word(ps, "false", out, J_BOOL, false);
	case 'n':
		return parse_word(ps, "null", out, J_NULL, false);
	default:
		if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
			return parse_number(ps, out);
		return perr_at(ps, "unexpected character");
	}
}

int json_parse(const char *in, size_t len, struct jarena *a, const struct jval **out, char *err,
	       size_t errlen)
{
	struct parser ps = {(const unsigned char *)in, (const unsigned char *)in + len, a, err, errlen, 0};
	g_start = ps.p;
	if (errlen > 0)
		err[0] = 0;
	struct jval *v;
	if (parse_value(&ps, &v) != 0)
		return -1;
	skip_ws(&ps);
	if (ps.p != ps.end)
		return perr_at(&ps, "trailing bytes");
	*out = v;
	return 0;
}

const struct jval *json_get(const struct jval *obj, const char *key)
{
	if (!obj || obj->type != J_OBJ)
		return NULL;
	size_t kl = strlen(key);
	for (const struct jval *m = obj->child; m; m = m->next)
		if (m->keylen == kl && memcmp(m->key, key, kl) == 0)
			return m;
	return NULL;
}

bool json_keys_allowed(const struct jval *obj, const char *const *allowed, char *bad, size_t badlen)
{
	for (const struct jval *m = obj->child; m; m = m->next) {
		bool ok = false;
		for (const char *const *k = allowed; *k; k++)
			if (strlen(*k) == m->keylen && memcmp(*k, m->key, m->keylen) == 0) {
				ok = true;
				break;
			}
		if (!ok) {
			if (badlen > 0)
				snprintf(bad, badlen, "%.*s", (int)(m->keylen > 64 ? 64 : m->keylen), m->key);
			return false;
		}
	}
	return true;
}

bool json_is_cstr(const struct jval *v)
{
	return v && v->type == J_STR && strlen(v->s) == v->slen;
}

/* ---- writer ---- */
/* Only objects are written; values in them always follow jw_key, so the
 * separator logic lives in jw_key. */

static void jw_put(struct jw *w, const char *s, size_t n)
{
	if (w->overflow || n > w->cap - w->len) {
		w->overflow = true;
		return;
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
}

void jw_init(struct jw *w, char *buf, size_t cap)
{
	memset(w, 0, sizeof *w);
	w->buf = buf;
	w->cap = cap;
}

void jw_obj_begin(struct jw *w)
{
	jw_put(w, "{", 1);
	if (w->depth >= 8) {
		w->overflow = true;
		return;
	}
	w->first[w->depth++] = true;
}

void jw_obj_end(struct jw *w)
{
	jw_put(w, "}", 1);
	if (w->depth > 0)
		w->depth--;
}

void jw_key(struct jw *w, const char *key)
{
	if (w->depth > 0) {
		if (!w->first[w->depth - 1])
			jw_put(w, ",", 1);
		w->first[w->depth - 1] = false;
	}
	jw_str(w, key, strlen(key));
	jw_put(w, ":", 1);
}

/* Same escaping as JSON.stringify: \" \\ \b \f \n \r \t, other controls as
 * \u00xx (lowercase hex), everything else raw. */
void jw_str(struct jw *w, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	jw_put(w, "\"", 1);
	while (p < end) {
		unsigned c = *p;
		const char *esc = NULL;
		char ubuf[8];
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default:
			if (c < 0x20) {
				snprintf(ubuf, sizeof ubuf, "\\u%04x", c);
				esc = ubuf;
			}
		}
		if (esc) {
			jw_put(w, esc, strlen(esc));
			p++;
			continue;
		}
		size_t l = utf8_seq(p, end);
		if (l == 0) {
			jw_put(w, "\xEF\xBF\xBD", 3);
			p++;
		} else {
			jw_put(w, (const char *)p, l);
			p += l;
		}
	}
	jw_put(w, "\"", 1);
}

void jw_cstr(struct jw *w, const char *s) { jw_str(w, s, strlen(s)); }

void jw_int(struct jw *w, int64_t v)
{
	char b[24];
	int n = snprintf(b, sizeof b, "%" PRId64, v);
	jw_put(w, b, (size_t)n);
}

void jw_bool(struct jw *w, bool v) { jw_put(w, v ? "true" : "false", v ? 4 : 5); }

long jw_finish(struct jw *w)
{
	if (w->overflow || w->depth != 0)
		return -1;
	return (long)w->len;
}
