/* JSON parser and writer unit tests. */
#include "json.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

static char abuf[1 << 20];

static const struct jval *parse(const char *s, size_t len, char *err)
{
	struct jarena a;
	jarena_init(&a, abuf, sizeof abuf, 4096);
	const struct jval *v;
	return json_parse(s, len, &a, &v, err, 200) == 0 ? v : NULL;
}

static const struct jval *p(const char *s, char *err) { return parse(s, strlen(s), err); }

static void valid(void)
{
	char err[200];
	const struct jval *v = p(" {\"a\":[1,-2,true,false,null,{\"b\":\"c\"}],\"n\":9007199254740992} ", err);
	CHECK(v && v->type == J_OBJ && v->count == 2, "%s", err);
	const struct jval *a = json_get(v, "a");
	CHECK(a && a->type == J_ARR && a->count == 6, "array");
	CHECK(a && a->child->i == 1 && a->child->next->i == -2, "ints");
	CHECK(a && a->child->next->next->type == J_BOOL && a->child->next->next->b, "true");
	CHECK(json_get(v, "n")->i == 9007199254740992LL, "2^53");
	CHECK(json_get(v, "missing") == NULL, "missing");

	v = p("\"\\u00e9\\ud83d\\ude00\\n\\\"\\\\\\/\\b\\f\\r\\t\\u0000x\"", err);
	CHECK(v && v->type == J_STR, "%s", err);
	const char want[] = "\xc3\xa9\xf0\x9f\x98\x80\n\"\\/\b\f\r\t\0x";
	CHECK(v && v->slen == sizeof want - 1 && memcmp(v->s, want, v->slen) == 0, "escapes");
	CHECK(v && !json_is_cstr(v), "embedded NUL is not a C string");

	v = p("\"a\\ud800b\\udc00\"", err);
	CHECK(v && v->slen == 8 && memcmp(v->s, "a\xef\xbf\xbd" "b\xef\xbf\xbd", 8) == 0, "lone surrogates");
	v = p("\"\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80\"", err);
	CHECK(v && v->slen == 9, "raw UTF-8: %s", err);
	v = p("[]", err);
	CHECK(v && v->type == J_ARR && v->count == 0 && !v->child, "empty array");
	v = p("{}", err);
	CHECK(v && v->type == J_OBJ && v->count == 0, "empty object");
	v = p("-0", err);
	CHECK(v && v->i == 0, "-0");

	char deep[200];
	memset(deep, '[', 32);
	memset(deep + 32, ']', 32);
	deep[64] = 0;
	CHECK(p(deep, err) != NULL, "depth 32: %s", err);
}

static void invalid(void)
{
	static const char *const bad[] = {
		"",
		" ",
		"{",
		"[1,]",
		"{\"a\":1,}",
		"01",
		"1.5",
		"1e3",
		"-",
		"+1",
		"9007199254740993",
		"tru",
		"nul",
		"'a'",
		"\"a",
		"\"\\x\"",
		"\"\\u12\"",
		"\"\\u12G4\"",
		"\"\t\"",
		"\"\x01\"",
		"\"\xff\"",
		"\"\xc0\xaf\"",
		"\"\xed\xa0\x80\"",
		"\"\xf4\x90\x80\x80\"",
		"\"\xe2\x82\"",
		"{\"a\":1,\"a\":2}",
		"{\"a\" 1}",
		"{1:2}",
		"[1 2]",
		"{} x",
		"[] []",
		"NaN",
		"Infinity",
		NULL,
	};
	char err[200];
	for (int i = 0; bad[i]; i++)
		CHECK(p(bad[i], err) == NULL, "accepted bad JSON #%d: %s", i, bad[i]);
	CHECK(parse("\"a\0b\"", 5, err) == NULL, "raw NUL");
	char deep[200];
	memset(deep, '[', 33);
	memset(deep + 33, ']', 33);
	deep[66] = 0;
	CHECK(p(deep, err) == NULL && strstr(err, "deep"), "depth 33: %s", err);

	/* Node budget. */
	struct jarena a;
	jarena_init(&a, abuf, sizeof abuf, 10);
	const struct jval *v;
	CHECK(json_parse("[1,2,3,4,5,6,7,8,9,10]", 22, &a, &v, err, sizeof err) != 0 && strstr(err, "too many"),
	      "node limit: %s", err);
	/* Arena size. */
	static char small[256];
	jarena_init(&a, small, sizeof small, 1000);
	CHECK(json_parse("[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
			 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]",
			 196, &a, &v, err, sizeof err) != 0,
	      "arena limit");
}

static void keys(void)
{
	char err[200], bad[80];
	const struct jval *v = p("{\"a\":1,\"b\":2}", err);
	static const char *const ab[] = {"a", "b", NULL}, *const a_only[] = {"a", NULL};
	CHECK(json_keys_allowed(v, ab, bad, sizeof bad), "allowed");
	CHECK(!json_keys_allowed(v, a_only, bad, sizeof bad) && strcmp(bad, "b") == 0, "unknown key %s", bad);
}

static void writer(void)
{
	char buf[256];
	struct jw w;
	jw_init(&w, buf, sizeof buf);
	jw_obj_begin(&w);
	jw_key(&w, "s");
	jw_cstr(&w, "q\" b\\ s/ \n\r\t\b\f\x01\x1f\x7f \xc3\xa9 \xff!");
	jw_key(&w, "n");
	jw_int(&w, -42);
	jw_key(&w, "o");
	jw_obj_begin(&w);
	jw_key(&w, "t");
	jw_bool(&w, true);
	jw_key(&w, "f");
	jw_bool(&w, false);
	jw_obj_end(&w);
	jw_obj_end(&w);
	long n = jw_finish(&w);
	const char *want = "{\"s\":\"q\\\" b\\\\ s/ \\n\\r\\t\\b\\f\\u0001\\u001f\x7f \xc3\xa9 \xef\xbf\xbd!\",\"n\":-42,"
			   "\"o\":{\"t\":true,\"f\":false}}";
	CHECK(n == (long)strlen(want) && memcmp(buf, want, (size_t)n) == 0, "writer: %.*s", (int)n, buf);

	jw_init(&w, buf, 10);
	jw_obj_begin(&w);
	jw_key(&w, "long key here");
	jw_obj_end(&w);
	CHECK(jw_finish(&w) == -1, "overflow detected");
}

void test_json(void)
{
	valid();
	invalid();
	keys();
	writer();
}
