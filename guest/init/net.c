/* Static IPv4 configuration of the guest NIC with ioctl (no DHCP client and
 * no `ip` binary are needed in the image). */
#include "net.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <stdio.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* Stage 1's module loader may still be probing virtio_net when PID 1
 * starts: the NIC then appears within ms; this bounds a pathological case. */
#define NIC_WAIT_MS 3000
#define LINK_WAIT_MS 2000
#define RESOLV_CONF "/etc/resolv.conf"

/* The first interface in /sys/class/net other than lo (name order). */
static int find_nic(char *name, size_t cap)
{
	DIR *d = opendir("/sys/class/net");
	if (!d)
		return -1;
	int found = -1;
	char best[IFNAMSIZ] = "";
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || !strcmp(e->d_name, "lo") || strlen(e->d_name) >= IFNAMSIZ)
			continue;
		if (found != 0 || strcmp(e->d_name, best) < 0) {
			snprintf(best, sizeof best, "%s", e->d_name);
			found = 0;
		}
	}
	closedir(d);
	if (found == 0)
		snprintf(name, cap, "%s", best);
	return found;
}

static void set_sin(struct sockaddr *sa, struct in_addr a)
{
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr = a;
	memcpy(sa, &sin, sizeof sin);
}

static int ifreq_ioctl(int s, unsigned long req, struct ifreq *ifr, const char *what)
{
	if (ioctl(s, req, ifr) != 0) {
		log_msg("%s %s: %s", what, ifr->ifr_name, strerror(errno));
		return -1;
	}
	return 0;
}

int net_resolv_conf(const struct guest_net *n, char *buf, size_t cap)
{
	size_t len = 0;
	int w = snprintf(buf, cap, "# written by microagent-init from the config disk\n");
	if (w < 0 || (size_t)w >= cap)
		return -1;
	len = (size_t)w;
	for (size_t i = 0; i < n->ndns; i++) {
		char ip[INET_ADDRSTRLEN];
		if (!inet_ntop(AF_INET, &n->dns[i], ip, sizeof ip))
			return -1;
		w = snprintf(buf + len, cap - len, "nameserver %s\n", ip);
		if (w < 0 || (size_t)w >= cap - len)
			return -1;
		len += (size_t)w;
	}
	return (int)len;
}

static void write_resolv_conf(const struct guest_net *n)
{
	char text[256];
	int len = net_resolv_conf(n, text, sizeof text);
	if (len < 0)
		return;
	/* A dangling link into a resolver's runtime directory, or a link or
	 * a missing file on a read-only root: DNS is then the image's own
	 * business. */
	if (publish_file(RESOLV_CONF, text, (size_t)len) != 0 &&
	    errno != EROFS)
		log_msg("write %s: %s", RESOLV_CONF, strerror(errno));
}

/* Whether nic's carrier is on: then the kernel sends on it at once. */
static bool carrier_on(const char *nic)
{
	char path[64], v[32] = "";
	snprintf(path, sizeof path, "/sys/class/net/%s/carrier", nic);
	return read_text_file(path, v, sizeof v) >= 0 && strcmp(v, "1") == 0;
}

/*
 * The kernel sends on a NIC once it has a carrier and its queue is active.
 * If virtio-net had reported the link before SIOCSIFFLAGS, opening the NIC
 * activated the queue: carrier is 1 at once (only operstate lags, by up to
 * a second of link-watch delay). If the link is reported after the open
 * (the driver's probe had just finished), the link watch activates the
 * queue and sets operstate "up" a few ms later: wait for that, so the first
 * command's first packets are not dropped.
 */
static void wait_link_up(const char *nic)
{
	char operstate[64], v[32] = "";
	snprintf(operstate, sizeof operstate, "/sys/class/net/%s/operstate", nic);
	if (carrier_on(nic))
		return;
	int64_t deadline = now_ms() + LINK_WAIT_MS;
	for (;;) {
		if (read_text_file(operstate, v, sizeof v) >= 0 &&
		    (strcmp(v, "up") == 0 || strcmp(v, "unknown") == 0))
			return;
		if (now_ms() >= deadline) {
			log_msg("network: %s link not up after %d ms (%s)", nic, LINK_WAIT_MS, v);
			return;
		}
		sleep_ms(1);
	}
}

/* Sets IFF_UP on the interface name (s: an AF_INET socket) unless it is up;
 * a failure is logged. */
static void link_up(int s, const char *name)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
		if (errno != ENODEV) /* not one that went away meanwhile */
			log_msg("SIOCGIFFLAGS %s: %s", name, strerror(errno));
		return;
	}
	if (ifr.ifr_flags & IFF_UP)
		return;
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
		log_msg("SIOCSIFFLAGS %s up: %s", name, strerror(errno));
	else
		log_debug("link %s up", name);
}

void net_links_up(void)
{
	DIR *d = opendir("/sys/class/net");
	if (!d)
		return;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct dirent *e;
	while (s >= 0 && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || strlen(e->d_name) >= IFNAMSIZ)
			continue;
		link_up(s, e->d_name);
	}
	if (s >= 0)
		close(s);
	closedir(d);
}

void net_loopback_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		log_msg("socket: %s", strerror(errno));
		return;
	}
	link_up(s, "lo");
	close(s);
}

int net_configure(const struct guest_net *n, bool wait)
{
	if (n->mode != NET_USER)
		return 0;
	char nic[IFNAMSIZ];
	if (!wait && (find_nic(nic, sizeof nic) != 0 || !carrier_on(nic)))
		return 1; /* not ready: nothing changed */
	int64_t deadline = now_ms() + NIC_WAIT_MS;
	while (find_nic(nic, sizeof nic) != 0) {
		if (now_ms() >= deadline) {
			log_msg("network: no network interface after %d ms", NIC_WAIT_MS);
			return -1;
		}
		sleep_ms(5);
	}
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		log_msg("socket: %s", strerror(errno));
		return -1;
	}
	int rc = -1;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", nic);
	set_sin(&ifr.ifr_addr, n->addr);
	if (ifreq_ioctl(s, SIOCSIFADDR, &ifr, "SIOCSIFADDR") != 0)
		goto out;
	set_sin(&ifr.ifr_netmask, n->mask);
	if (ifreq_ioctl(s, SIOCSIFNETMASK, &ifr, "SIOCSIFNETMASK") != 0)
		goto out;
	if (n->mtu > 0) {
		ifr.ifr_mtu = n->mtu;
		ifreq_ioctl(s, SIOCSIFMTU, &ifr, "SIOCSIFMTU"); /* a smaller MTU still works */
	}
	if (ifreq_ioctl(s, SIOCGIFFLAGS, &ifr, "SIOCGIFFLAGS") != 0)
		goto out;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ifreq_ioctl(s, SIOCSIFFLAGS, &ifr, "SIOCSIFFLAGS") != 0)
		goto out;
	struct rtentry rt;
	memset(&rt, 0, sizeof rt);
	struct in_addr any = {.s_addr = INADDR_ANY};
	set_sin(&rt.rt_dst, any);
	set_sin(&rt.rt_genmask, any);
	set_sin(&rt.rt_gateway, n->gw);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	rt.rt_dev = nic;
	if (ioctl(s, SIOCADDRT, &rt) != 0 && errno != EEXIST) {
		log_msg("SIOCADDRT default via gateway on %s: %s", nic, strerror(errno));
		goto out;
	}
	write_resolv_conf(n);
	wait_link_up(nic);
	char ip[INET_ADDRSTRLEN] = "?";
	inet_ntop(AF_INET, &n->addr, ip, sizeof ip);
	log_debug("network: %s %s/%d up", nic, ip, n->prefix);
	rc = 0;
out:
	close(s);
	return rc;
}
