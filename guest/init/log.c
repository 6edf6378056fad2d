/* Console logging and the last-resort power off. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/reboot.h>
#include <time.h>
#include <unistd.h>

bool log_debug_enabled;

static void vlog(const char *prefix, const char *fmt, va_list ap)
{
	char buf[1024];
	int n = snprintf(buf, sizeof buf, "microagent-init: %s", prefix);
	if (n < 0 || (size_t)n >= sizeof buf)
		return;
	int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
	if (m < 0)
		return;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof buf - 2)
		len = sizeof buf - 2;
	buf[len++] = '\n';
	/* Best effort: the console is all we have. */
	ssize_t r = write(2, buf, len);
	(void)r;
}

void log_msg(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vlog("", fmt, ap);
	va_end(ap);
	errno = saved;
}

void log_debug(const char *fmt, ...)
{
	if (!log_debug_enabled)
		return;
	int saved = errno;
	struct timespec ts;
	char prefix[48] = "";
	if (clock_gettime(CLOCK_BOOTTIME, &ts) == 0)
		snprintf(prefix, sizeof prefix, "[%ld.%03ld] ", (long)ts.tv_sec, ts.tv_nsec / 1000000);
	va_list ap;
	va_start(ap, fmt);
	vlog(prefix, fmt, ap);
	va_end(ap);
	errno = saved;
}

void power_off_now(void)
{
	sync();
	if (reboot(RB_POWER_OFF) != 0)
		log_msg("reboot(RB_POWER_OFF): %s", strerror(errno));
	/* PID 1 exiting panics the kernel; with panic=-1 and -no-reboot QEMU exits. */
	_exit(1);
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("fatal: ", fmt, ap);
	va_end(ap);
	power_off_now();
}
