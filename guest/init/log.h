/* Console logging for the guest init. Everything goes to fd 2 (the console). */
#ifndef MA_LOG_H
#define MA_LOG_H

#include <stdbool.h>

#define MA_INIT_VERSION "0.1.0"

extern bool log_debug_enabled;

/* "microagent-init: <message>" on stderr. */
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Only with microagent.debug=1 on the kernel command line. */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "microagent-init: fatal: <reason>", then sync and power off. Never returns. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* sync, reboot(RB_POWER_OFF); never returns. */
void power_off_now(void) __attribute__((noreturn));

#endif
