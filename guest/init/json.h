/* A small strict JSON parser (into a caller-supplied arena) and writer.
 * Parser: objects, arrays, strings (all escapes, \uXXXX and surrogate pairs
 * to UTF-8; lone surrogates become U+FFFD as in Node's UTF-8 encoder), integers
 * (no fractions/exponents; |n| <= 2^53), true/false/null. Rejects duplicate
 * keys, invalid UTF-8, raw control characters, trailing bytes, nesting over
 * JSON_MAX_DEPTH and more than the arena's node budget. */
#ifndef MA_JSON_H
#define MA_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 32
#define JSON_MAX_INT 9007199254740992LL /* 2^53 */

enum jtype { J_NULL, J_BOOL, J_INT, J_STR, J_ARR, J_OBJ };

struct jval {
	enum jtype type;
	bool b;
	int64_t i;
	const char *s; /* J_STR: decoded UTF-8, NUL-terminated (may also hold NULs) */
	size_t slen;
	const char *key; /* members of a J_OBJ */
	size_t keylen;
	struct jval *child; /* J_ARR/J_OBJ: first element */
	struct jval *next;
	size_t count; /* J_ARR/J_OBJ: number of elements */
};

struct jarena {
	char *buf;
	size_t cap, used;
	size_t nodes, max_nodes;
};

void jarena_init(struct jarena *a, void *buf, size_t cap, size_t max_nodes);
void jarena_reset(struct jarena *a);
/* Bump allocation (8-byte aligned); NULL when the arena is full. */
void *jarena_alloc(struct jarena *a, size_t n);

/* 0 and *out on success; -1 with a message in err. */
int json_parse(const char *in, size_t len, struct jarena *a, const struct jval **out, char *err,
	       size_t errlen);

/* Member lookup (NULL if absent or obj is not an object). */
const struct jval *json_get(const struct jval *obj, const char *key);
/* Whether every member key of obj is in the NULL-terminated list; else the
 * first unknown key is copied into bad. */
bool json_keys_allowed(const struct jval *obj, const char *const *allowed, char *bad, size_t badlen);
/* A string without embedded NULs (usable as a C string). */
bool json_is_cstr(const struct jval *v);

/* Writer with JSON.stringify-compatible escaping. Invalid UTF-8 in input
 * strings is written as U+FFFD. */
struct jw {
	char *buf;
	size_t cap, len;
	bool overflow;
	int depth;
	bool first[8];
};

void jw_init(struct jw *w, char *buf, size_t cap);
void jw_obj_begin(struct jw *w);
void jw_obj_end(struct jw *w);
void jw_key(struct jw *w, const char *key);
void jw_str(struct jw *w, const char *s, size_t len);
void jw_cstr(struct jw *w, const char *s);
void jw_int(struct jw *w, int64_t v);
void jw_bool(struct jw *w, bool v);
/* Length written, or -1 on overflow. */
long jw_finish(struct jw *w);

#endif
