/* Reading the first command's files ahead (config.prefetch, docs/protocol.md §4). */
#ifndef MA_PREFETCH_H
#define MA_PREFETCH_H

#include <stddef.h>

#include "protocol.h" /* PREFETCH_MAX, PREFETCH_MAX_NAME */

#define PREFETCH_MAX_BYTES (64L * 1024 * 1024)

/*
 * Opens what exec would run for `name` (a path with a '/', else the first
 * regular, executable file of that name on `path`) for reading; -1 when
 * there is none. The file is never executed.
 */
int prefetch_open(const char *name, const char *path);

/*
 * The ELF interpreter named by an opened executable's PT_INTERP (written to
 * out); -1 when it has none or is not a 64-bit little-endian ELF.
 */
int prefetch_interp(int fd, char *out, size_t cap);

/*
 * Forks a child that reads each name's file (and its ELF interpreter) into
 * the page cache, so that the first command does not wait for a cold disk
 * (~20-40 ms under TCG). Nothing waits for the child; PID 1 reaps it.
 */
void prefetch_start(const char *const *names, size_t n, const char *path);

#endif
