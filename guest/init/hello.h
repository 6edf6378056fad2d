/* HELLO payloads (docs/protocol.md §1 start-up). */
#ifndef MA_HELLO_H
#define MA_HELLO_H

#include <stddef.h>
#include <stdint.h>

/* {"v":1,"init":"<init>","bootMs":<ms>}; length or -1. */
long hello_format_guest(char *buf, size_t cap, const char *init, int64_t boot_ms);
/* Strict {"v":1,"timeMs":<ms>}; 0 with *time_ms, or -1 with err. */
int hello_parse_host(const char *json, size_t len, int64_t *time_ms, char *err, size_t errlen);

#endif
