/* PID 1 (stage 1 goes on in this role after switching root): mounts, config
 * disk, hostname, the mux channel, the event loop, zombie reaping, signals
 * and power off (docs/protocol.md §1, §4, §5). */
#include "config.h"
#include "exec.h"
#include "hello.h"
#include "json.h"
#include "log.h"
#include "mux.h"
#include "net.h"
#include "prefetch.h"
#include "roles.h"
#include "session.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHANNEL_WAIT_MS 5000
#define CONFIG_WAIT_MS 5000
#define POWEROFF_GRACE_MS 1000
#define RECONNECT_POLL_MS 100
#define RESULT_DIR "/run/microagent"
#define RESULT_FILE RESULT_DIR "/result.json"

enum ch_state { CH_WAIT_HELLO, CH_READY, CH_DISCONNECTED, CH_DEAD };

static struct guest_config config;
static enum ch_state ch_state;
static int sig_fd = -1;
static uint8_t rbuf[2 * (MUX_HEADER_SIZE + MUX_MAX_PAYLOAD)];
static size_t rlen;
static char chan_path[64];

static bool powering_off;
static int64_t poweroff_deadline;
static bool no_children;

/* The boot command (config.command). */
static enum { BOOT_NONE, BOOT_WAITING, BOOT_RUNNING, BOOT_DONE } boot_state;
static pid_t boot_pid;
static int64_t boot_start_ms;
static char boot_result[1024];
static long boot_result_len = -1;
static bool boot_result_sent;

void ensure_stdio(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int c = open("/dev/console", O_RDWR | O_NOCTTY);
		if (c < 0)
			c = open("/dev/null", O_RDWR);
		if (c < 0)
			return;
		if (c != fd) {
			dup2(c, fd);
			close(c);
		}
	}
}

/* ---- mounts ---- */

static bool is_mountpoint(const char *path)
{
	struct stat a, b;
	char parent[256];
	snprintf(parent, sizeof parent, "%s/..", path);
	if (stat(path, &a) != 0 || stat(parent, &b) != 0)
		return false;
	return a.st_dev != b.st_dev || a.st_ino == b.st_ino;
}

struct mnt {
	const char *src, *target, *type;
	unsigned long flags;
	const char *data;
	mode_t mode;
	bool required;
};

static const struct mnt mounts[] = {
	{"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555, true},
	{"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555, true},
	{"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", 0755, true},
	{"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5", 0755,
	 false},
	{"shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777, false},
	{"run", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", 0755, false},
	{"tmp", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777, false},
};

static void do_mounts(void)
{
	for (size_t i = 0; i < sizeof mounts / sizeof mounts[0]; i++) {
		const struct mnt *m = &mounts[i];
		if (mkdir_p1(m->target, m->mode) != 0) {
			if (m->required)
				fatal("cannot create %s", m->target);
			continue;
		}
		if (is_mountpoint(m->target))
			continue;
		if (mount(m->src, m->target, m->type, m->flags, m->data) != 0 && errno != EBUSY) {
			if (m->required)
				fatal("mount %s: %s", m->target, strerror(errno));
			log_msg("mount %s: %s", m->target, strerror(errno));
			continue;
		}
		if (i == 2)
			ensure_stdio();
	}
	static const char *const links[][2] = {
		{"/proc/self/fd", "/dev/fd"},
		{"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"},
		{"/proc/self/fd/2", "/dev/stderr"},
	};
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
		if (symlink(links[i][0], links[i][1]) != 0 && errno != EEXIST)
			log_msg("symlink %s: %s", links[i][1], strerror(errno));
	struct stat st;
	if (lstat("/dev/ptmx", &st) != 0 && symlink("pts/ptmx", "/dev/ptmx") != 0)
		log_msg("symlink /dev/ptmx: %s", strerror(errno));
}

/* ---- power off ---- */

static void final_poweroff(void)
{
	if (mux_fd >= 0) {
		close(mux_fd);
		mux_fd = -1;
	}
	sync();
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL) != 0)
		log_msg("remount / read-only: %s", strerror(errno));
	log_debug("power off");
	power_off_now();
}

static void begin_poweroff(const char *reason)
{
	if (powering_off)
		return;
	log_debug("powering off: %s", reason);
	powering_off = true;
	sess_closing = true;
	sess_signal_all(SIGTERM);
	if (boot_state == BOOT_RUNNING && kill(-boot_pid, SIGTERM) != 0 && errno != ESRCH)
		log_msg("kill -%d: %s", boot_pid, strerror(errno));
	if (kill(-1, SIGTERM) != 0 && errno != ESRCH)
		log_msg("kill -1 TERM: %s", strerror(errno));
	poweroff_deadline = now_ms() + POWEROFF_GRACE_MS;
	no_children = false;
}

static void finish_poweroff(void)
{
	if (kill(-1, SIGKILL) != 0 && errno != ESRCH)
		log_msg("kill -1 KILL: %s", strerror(errno));
	int64_t end = now_ms() + 500;
	while (now_ms() < end) {
		pid_t p = waitpid(-1, NULL, WNOHANG);
		if (p < 0 && errno == ECHILD)
			break;
		if (p == 0)
			sleep_ms(5);
	}
	final_poweroff();
}

/* ---- boot command ---- */

static void boot_finish(struct exec_result *r)
{
	boot_state = BOOT_DONE;
	boot_result_len = exec_format_exit(r, boot_result, sizeof boot_result);
	log_debug("boot command finished: exit code %d", r->exit_code);
	int fd = open(RESULT_FILE ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, boot_result, (size_t)boot_result_len) != 0 || fsync(fd) != 0 ||
	    close(fd) != 0 || rename(RESULT_FILE ".tmp", RESULT_FILE) != 0)
		log_msg("write %s: %s", RESULT_FILE, strerror(errno));
	if (ch_state == CH_READY && mux_send(0, F_RESULT, boot_result, (size_t)boot_result_len) == 0)
		boot_result_sent = true;
	if (config.power_off)
		begin_poweroff("boot command finished");
}

static void boot_start(void)
{
	static struct jarena a;
	static char *abuf;
	struct exec_result r;
	memset(&r, 0, sizeof r);
	boot_state = BOOT_RUNNING;
	size_t cap = 4u << 20;
	if (!abuf && !(abuf = malloc(cap))) {
		exec_result_fail(&r, ERR_SETUP_FAILED, "out of memory");
		boot_finish(&r);
		return;
	}
	jarena_init(&a, abuf, cap, 0);
	char **envp;
	const char *path;
	if (exec_env_for(config.command.env, config.command.envc, &a, &envp, &path) != 0) {
		exec_result_fail(&r, ERR_SETUP_FAILED, "environment too large");
		boot_finish(&r);
		return;
	}
	struct spawn_io io = {-1, -1, -1, false};
	boot_start_ms = now_ms();
	log_debug("boot command: %s", config.command.argv[0]);
	if (exec_spawn(config.command.argv, envp, path, config.command.cwd, &io, &boot_pid, &r) != 0) {
		log_msg("boot command: %s", r.message);
		boot_finish(&r);
	}
}

static void boot_exited(int wstatus)
{
	struct exec_result r;
	memset(&r, 0, sizeof r);
	exec_result_from_wait(&r, wstatus, false, 0);
	r.duration_ms = (uint64_t)(now_ms() - boot_start_ms);
	boot_finish(&r);
}

/* ---- channel ---- */

static int find_channel(char *path, size_t cap)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	if (!d)
		return -1;
	int rc = -1;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char p[300], name[128];
		snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", de->d_name);
		if (read_text_file(p, name, sizeof name) < 0 || strcmp(name, MUX_PORT_NAME) != 0)
			continue;
		if (strlen(de->d_name) + 6 > cap)
			continue;
		snprintf(path, cap, "/dev/%.*s", (int)(cap - 6), de->d_name);
		if (access(path, F_OK) == 0) {
			rc = 0;
			break;
		}
	}
	closedir(d);
	return rc;
}

static int send_hello(void)
{
	char buf[128];
	long n = hello_format_guest(buf, sizeof buf, MA_INIT_VERSION, boottime_ms());
	ch_state = CH_WAIT_HELLO;
	rlen = 0;
	log_debug("HELLO sent");
	return mux_send(0, F_HELLO, buf, (size_t)n);
}

void mux_protocol_error(const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	log_msg("mux protocol error: %s; no longer using the channel", msg);
	ch_state = CH_DEAD;
	sess_drop_all();
	if (mux_fd >= 0) {
		close(mux_fd);
		mux_fd = -1;
	}
}

static void channel_lost(void)
{
	log_msg("mux: host disconnected");
	sess_drop_all();
	ch_state = CH_DISCONNECTED;
	rlen = 0;
}

static void on_host_hello(const uint8_t *p, uint32_t len)
{
	int64_t t;
	char err[200];
	if (hello_parse_host((const char *)p, len, &t, err, sizeof err) != 0) {
		mux_protocol_error("%s", err);
		return;
	}
	struct timespec ts = {(time_t)(t / 1000), (long)(t % 1000) * 1000000L};
	if (clock_settime(CLOCK_REALTIME, &ts) != 0)
		log_msg("clock_settime: %s", strerror(errno));
	ch_state = CH_READY;
	log_debug("host HELLO; clock set");
	if (boot_state == BOOT_WAITING && !powering_off)
		boot_start();
	else if (boot_state == BOOT_DONE && !boot_result_sent && boot_result_len > 0 &&
		 mux_send(0, F_RESULT, boot_result, (size_t)boot_result_len) == 0)
		boot_result_sent = true;
}

static void on_poweroff_frame(const uint8_t *p, uint32_t len)
{
	static char abuf[4096];
	struct jarena a;
	jarena_init(&a, abuf, sizeof abuf, 16);
	const struct jval *o, *r = NULL;
	char err[200];
	if (json_parse((const char *)p, len, &a, &o, err, sizeof err) == 0)
		r = json_get(o, "reason");
	if (!r || !json_is_cstr(r) || o->count != 1)
		log_msg("POWEROFF with a malformed payload; powering off anyway");
	begin_poweroff(r && json_is_cstr(r) ? r->s : "host request");
}

static void dispatch(const struct mux_hdr *h, const uint8_t *p)
{
	bool ctl = h->type == F_HELLO || h->type == F_POWEROFF || h->type == F_PING;
	if (ctl != (h->stream == 0)) {
		mux_protocol_error("frame type %u on stream %u", h->type, h->stream);
		return;
	}
	if (ch_state == CH_WAIT_HELLO && h->type != F_HELLO && h->type != F_PING) {
		mux_protocol_error("frame type %u before the host HELLO", h->type);
		return;
	}
	switch (h->type) {
	case F_HELLO:
		if (ch_state != CH_WAIT_HELLO) {
			mux_protocol_error("second host HELLO");
			return;
		}
		on_host_hello(p, h->len);
		break;
	case F_OPEN:
		if (h->len != 4) {
			mux_protocol_error("OPEN payload of %u bytes", h->len);
			return;
		}
		sess_on_open(h->stream, get_be32(p));
		break;
	case F_DATA:
		if (h->len < 1 || h->len > MUX_MAX_DATA) {
			mux_protocol_error("DATA payload of %u bytes", h->len);
			return;
		}
		sess_on_data(h->stream, p, h->len);
		break;
	case F_EOF:
		if (h->len != 0) {
			mux_protocol_error("EOF with a payload");
			return;
		}
		sess_on_eof(h->stream);
		break;
	case F_RESET:
		if (h->len > MUX_MAX_RESET_REASON) {
			mux_protocol_error("RESET reason of %u bytes", h->len);
			return;
		}
		sess_on_reset(h->stream);
		break;
	case F_CREDIT:
		if (h->len != 4) {
			mux_protocol_error("CREDIT payload of %u bytes", h->len);
			return;
		}
		sess_on_credit(h->stream, get_be32(p));
		break;
	case F_POWEROFF:
		on_poweroff_frame(p, h->len);
		break;
	case F_PING:
		if (h->len > MUX_MAX_PING) {
			mux_protocol_error("PING payload of %u bytes", h->len);
			return;
		}
		mux_send(0, F_PONG, p, h->len);
		break;
	default:
		mux_protocol_error("frame type %u is guest-to-host only", h->type);
	}
}

/* A virtio-serial read returns at most one page: keep reading (the fd is
 * non-blocking) instead of going through poll() for every page of a bulk
 * transfer. Bounded so that the other fds and the timers get their turn. */
#define CHANNEL_READS_PER_TURN 64

static int channel_read_once(void);

static void channel_readable(void)
{
	for (int i = 0; i < CHANNEL_READS_PER_TURN && (ch_state == CH_WAIT_HELLO || ch_state == CH_READY); i++)
		if (channel_read_once() <= 0)
			return;
}

/* One read and the frames it completes: 1 if bytes were read, 0 if none were
 * available, -1 if the channel is gone. */
static int channel_read_once(void)
{
	ssize_t n = read(mux_fd, rbuf + rlen, sizeof rbuf - rlen);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return 0;
		log_msg("mux read: %s", strerror(errno));
		channel_lost();
		return -1;
	}
	if (n == 0) {
		channel_lost();
		return -1;
	}
	rlen += (size_t)n;
	size_t off = 0;
	while (rlen - off >= MUX_HEADER_SIZE && (ch_state == CH_WAIT_HELLO || ch_state == CH_READY)) {
		struct mux_hdr h;
		char err[128];
		if (mux_decode_header(rbuf + off, &h, err, sizeof err) != 0) {
			mux_protocol_error("%s", err);
			return -1;
		}
		if (rlen - off < MUX_HEADER_SIZE + h.len)
			break;
		dispatch(&h, rbuf + off + MUX_HEADER_SIZE);
		off += MUX_HEADER_SIZE + h.len;
	}
	if (ch_state != CH_WAIT_HELLO && ch_state != CH_READY) {
		rlen = 0;
		return -1;
	}
	memmove(rbuf, rbuf + off, rlen - off);
	rlen -= off;
	return 1;
}

static void check_reconnect(void)
{
	struct pollfd p = {mux_fd, POLLIN, 0};
	if (poll(&p, 1, 0) < 0 || (p.revents & POLLHUP))
		return;
	log_debug("mux: host reconnected");
	send_hello();
}

/* ---- signals and children ---- */

static void reap(void)
{
	for (;;) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);
		if (p < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD)
				no_children = true;
			else
				log_msg("waitpid: %s", strerror(errno));
			return;
		}
		if (p == 0)
			return;
		if (p == exec_setup_pid) {
			exec_setup_pid = 0;
			continue;
		}
		if (boot_state == BOOT_RUNNING && p == boot_pid) {
			boot_exited(st);
			continue;
		}
		sess_on_child_exit(p, st);
	}
}

static void signals_readable(void)
{
	struct signalfd_siginfo si;
	for (;;) {
		ssize_t n = read(sig_fd, &si, sizeof si);
		if (n != (ssize_t)sizeof si) {
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				log_msg("signalfd read: %s", strerror(errno));
			return;
		}
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap();
			break;
		case SIGTERM:
		case SIGINT:
		case SIGPWR:
			begin_poweroff(strsignal((int)si.ssi_signo));
			break;
		default:
			log_msg("ignoring signal %u", si.ssi_signo);
		}
	}
}

static void setup_signals(void)
{
	sigset_t set;
	sigemptyset(&set);
	int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGPWR, SIGUSR1, SIGUSR2, SIGHUP};
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaddset(&set, sigs[i]);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		fatal("sigprocmask: %s", strerror(errno));
	sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sig_fd < 0)
		fatal("signalfd: %s", strerror(errno));
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		fatal("signal SIGPIPE: %s", strerror(errno));
	/* Ctrl-Alt-Del → SIGINT to us instead of an immediate reboot. */
	if (reboot(RB_DISABLE_CAD) != 0)
		log_msg("reboot(RB_DISABLE_CAD): %s", strerror(errno));
}

/* ---- setup ---- */

static void set_hostname(void)
{
	if (sethostname(config.hostname, strlen(config.hostname)) != 0)
		fatal("sethostname %s: %s", config.hostname, strerror(errno));
	char line[80];
	int n = snprintf(line, sizeof line, "%s\n", config.hostname);
	if (n < 0 || (size_t)n >= sizeof line)
		return;
	if (publish_file("/etc/hostname", line, (size_t)n) != 0 &&
	    errno != EROFS && errno != ENOENT)
		log_msg("write /etc/hostname: %s", strerror(errno));
}

/*
 * Brings up lo and the NIC. Usually stage 1 has set the NIC up while root
 * was mounting and its carrier is on: then a few ioctls and resolv.conf
 * are done here (~15 ms under TCG), while the host's answer to HELLO is on
 * its way; forking a child for them cost more, and the first command
 * waited for that child. Otherwise (the NIC still probing, or its link not
 * up yet) a child waits for it, so that the channel is served meanwhile;
 * commands wait for the child (exec_setup_pid), so they always start with
 * the network configured. net_configure logs its own failures; exec works
 * without a network.
 */
static void start_network(void)
{
	net_loopback_up();
	if (net_configure(&config.net, false) != 1)
		return;
	pid_t c = fork();
	if (c < 0)
		log_msg("fork: %s; configuring the network before serving the channel",
			strerror(errno));
	if (c <= 0) {
		net_configure(&config.net, true);
		if (c == 0)
			_exit(0);
		return;
	}
	exec_setup_pid = c;
}

static void open_channel(void)
{
	int64_t deadline = now_ms() + CHANNEL_WAIT_MS;
	while (find_channel(chan_path, sizeof chan_path) != 0) {
		if (now_ms() >= deadline)
			fatal("no virtio-serial port named %s after %d ms", MUX_PORT_NAME, CHANNEL_WAIT_MS);
		sleep_ms(5);
	}
	/* Non-blocking reads (channel_readable); mux_send waits for room itself. */
	while ((mux_fd = open(chan_path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0) {
		if (!retry_while_probing(deadline))
			fatal("open %s: %s", chan_path, strerror(errno));
	}
	log_debug("mux channel %s", chan_path);
}

/* The PATH commands get when their request sets none: the config's, else the default. */
static const char *config_path(void)
{
	for (size_t i = 0; i < config.envc; i++)
		if (strcmp(config.env[i].k, "PATH") == 0)
			return config.env[i].v;
	return DEFAULT_PATH;
}

int pid1_main(void)
{
	ensure_stdio();
	do_mounts();
	log_debug_enabled = cmdline_has("microagent.debug=1");
	log_debug("PID 1 start (microagent-init %s)", MA_INIT_VERSION);
	if (cmdline_has("microagent.bench=poweroff"))
		final_poweroff();
	if (chdir("/") != 0)
		fatal("chdir /: %s", strerror(errno));
	umask(022);
	setup_signals();
	char err[300];
	if (config_load(&config, CONFIG_WAIT_MS, err, sizeof err) != 0)
		fatal("%s", err);
	exec_set_config_env(config.env, config.envc);
	log_debug("config: workspace %s", config.workspace);
	boot_state = config.has_command ? BOOT_WAITING : BOOT_NONE;
	/* HELLO first: the host's answer and its first requests cross the
	 * channel (~10 ms under TCG) while the rest is set up. Nothing is read
	 * from the channel before the loop, by which time the hostname is set
	 * and the network configured (or exec_setup_pid names its child). */
	open_channel();
	if (send_hello() != 0)
		channel_lost();
	prefetch_start(config.prefetch, config.nprefetch, config_path());
	start_network();
	set_hostname();
	if (mkdir_p1(RESULT_DIR, 0755) != 0)
		log_msg("cannot create %s", RESULT_DIR);

	static struct pollfd pfds[2 + MUX_MAX_STREAMS * 3];
	for (;;) {
		if (powering_off)
			reap(); /* sets no_children once every process is gone */
		int64_t now = now_ms();
		if (powering_off && (no_children || now >= poweroff_deadline))
			finish_poweroff();
		int64_t deadline = sess_next_deadline();
		if (powering_off && (deadline < 0 || poweroff_deadline < deadline))
			deadline = poweroff_deadline;
		if (ch_state == CH_DISCONNECTED && (deadline < 0 || now + RECONNECT_POLL_MS < deadline))
			deadline = now + RECONNECT_POLL_MS;
		int timeout = deadline < 0 ? -1 : deadline <= now ? 0 : (int)(deadline - now);
		pfds[0] = (struct pollfd){sig_fd, POLLIN, 0};
		bool chan = ch_state == CH_WAIT_HELLO || ch_state == CH_READY;
		pfds[1] = (struct pollfd){chan ? mux_fd : -1, POLLIN, 0};
		int ns = sess_poll_fill(pfds + 2, MUX_MAX_STREAMS * 3);
		int r = poll(pfds, (nfds_t)(2 + ns), timeout);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			fatal("poll: %s", strerror(errno));
		}
		if (pfds[0].revents)
			signals_readable();
		if (chan && pfds[1].revents) {
			if (pfds[1].revents & POLLIN)
				channel_readable();
			else
				channel_lost();
		}
		sess_poll_handle(pfds + 2, ns);
		sess_timers(now_ms());
		if (ch_state == CH_DISCONNECTED)
			check_reconnect();
		if (ch_state == CH_READY)
			sess_flush_credits();
	}
}
