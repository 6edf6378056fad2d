/* The mux stream table and the exec service running on each stream
 * (docs/protocol.md §1 streams/flow control, §3 exec). */
#ifndef MA_SESSION_H
#define MA_SESSION_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Implemented by pid1.c: log, stop using the channel. */
void mux_protocol_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void sess_on_open(uint32_t id, uint32_t port);
void sess_on_data(uint32_t id, const uint8_t *p, uint32_t len);
void sess_on_eof(uint32_t id);
void sess_on_reset(uint32_t id);
void sess_on_credit(uint32_t id, uint32_t inc);
/* Sends the CREDIT frames for what was consumed. */
void sess_flush_credits(void);

/* Appends the pollfds the sessions need; returns how many. */
int sess_poll_fill(struct pollfd *pfds, int max);
/* Handles the revents of the n pollfds added by the last sess_poll_fill. */
void sess_poll_handle(const struct pollfd *pfds, int n);
/* Earliest timer (CLOCK_MONOTONIC ms), or -1. */
int64_t sess_next_deadline(void);
void sess_timers(int64_t now);

/* A reaped child: true if it belonged to a stream. */
bool sess_on_child_exit(pid_t pid, int wstatus);
/* Signal every running program's process group. */
void sess_signal_all(int sig);
/* The channel is gone: SIGKILL every program, drop every stream, forget
 * the stream ids (the next host session starts from 1). */
void sess_drop_all(void);
int sess_count(void);
/* No more OPENs accepted (power off in progress). */
extern bool sess_closing;

#endif
