/* Minimal test harness for the guest init's unit tests (make test-c). */
#ifndef MA_TEST_H
#define MA_TEST_H

#include <stdio.h>

extern int t_failed, t_checks;

#define CHECK(cond, ...)                                                                                   \
	do {                                                                                               \
		t_checks++;                                                                                \
		if (!(cond)) {                                                                             \
			t_failed++;                                                                        \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                    \
			fprintf(stderr, __VA_ARGS__);                                                      \
			fputc('\n', stderr);                                                               \
		}                                                                                          \
	} while (0)

void test_json(void);
void test_exec(void);
void test_fixtures(const char *dir);
void test_session(void);
void test_user(void);
void test_prefetch(void);

/* Reads a whole file (malloc'd); NULL on error. */
unsigned char *test_read_file(const char *path, size_t *len);

#endif
