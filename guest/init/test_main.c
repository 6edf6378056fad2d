/* Runs the guest init's unit tests: test-init <fixture dir>. */
#include "test.h"

#include <stdlib.h>

int t_failed, t_checks;

unsigned char *test_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0;
	unsigned char *buf = malloc(cap);
	for (;;) {
		if (n == cap)
			buf = realloc(buf, cap *= 2);
		size_t r = fread(buf + n, 1, cap - n, f);
		if (r == 0)
			break;
		n += r;
	}
	fclose(f);
	*len = n;
	return buf;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s <fixture dir>\n", argv[0]);
		return 2;
	}
	test_json();
	test_exec();
	test_user();
	test_prefetch();
	test_fixtures(argv[1]);
	test_session();
	printf("test-init: %d checks, %d failed\n", t_checks, t_failed);
	return t_failed ? 1 : 0;
}
