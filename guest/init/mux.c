/* Mux frame codec and the channel writer. */
#include "mux.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <sys/uio.h>

int mux_fd = -1;

void mux_encode_header(uint8_t out[MUX_HEADER_SIZE], uint32_t stream, uint8_t type, uint32_t len)
{
	put_be32(out, stream);
	out[4] = type;
	out[5] = 0;
	out[6] = 0;
	out[7] = 0;
	put_be32(out + 8, len);
}

int mux_decode_header(const uint8_t in[MUX_HEADER_SIZE], struct mux_hdr *h, char *err, size_t errlen)
{
	h->stream = get_be32(in);
	h->type = in[4];
	h->len = get_be32(in + 8);
	if (h->type < F_HELLO || h->type > F_RESULT) {
		snprintf(err, errlen, "unknown mux frame type %u", h->type);
		return -1;
	}
	if (in[5] != 0 || in[6] != 0 || in[7] != 0) {
		snprintf(err, errlen, "non-zero mux flags");
		return -1;
	}
	if (h->len > MUX_MAX_PAYLOAD) {
		snprintf(err, errlen, "mux frame too long: %u", h->len);
		return -1;
	}
	return 0;
}

void exec_encode_header(uint8_t out[EXEC_HEADER_SIZE], uint8_t kind, uint32_t len)
{
	out[0] = kind;
	put_be32(out + 1, len);
}

int exec_decode_header(const uint8_t in[EXEC_HEADER_SIZE], uint8_t *kind, uint32_t *len, char *err,
		       size_t errlen)
{
	*kind = in[0];
	*len = get_be32(in + 1);
	if (*kind < EK_JSON || *kind > EK_STDERR) {
		snprintf(err, errlen, "unknown exec message kind %u", *kind);
		return -1;
	}
	if (*len > EXEC_MAX_MESSAGE) {
		snprintf(err, errlen, "exec message too long: %u", *len);
		return -1;
	}
	return 0;
}

int mux_send2(uint32_t stream, uint8_t type, const void *a, size_t alen, const void *b, size_t blen)
{
	if (mux_fd < 0)
		return -1;
	uint8_t hdr[MUX_HEADER_SIZE];
	mux_encode_header(hdr, stream, type, (uint32_t)(alen + blen));
	struct iovec iov[3] = {{hdr, sizeof hdr}, {(void *)a, alen}, {(void *)b, blen}};
	int iovcnt = 3, idx = 0;
	while (idx < iovcnt) {
		ssize_t n = writev(mux_fd, iov + idx, iovcnt - idx);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				/* A non-blocking channel whose host side is slow: wait for room (the
				 * writer blocks as a blocking fd would). */
				struct pollfd p = {mux_fd, POLLOUT, 0};
				if (poll(&p, 1, -1) < 0 && errno != EINTR) {
					log_msg("mux poll: %s", strerror(errno));
					return -1;
				}
				if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) {
					log_msg("mux write: the host end is gone");
					return -1;
				}
				continue;
			}
			log_msg("mux write: %s", strerror(errno));
			return -1;
		}
		while (idx < iovcnt && (size_t)n >= iov[idx].iov_len) {
			n -= (ssize_t)iov[idx].iov_len;
			idx++;
		}
		if (idx < iovcnt) {
			iov[idx].iov_base = (char *)iov[idx].iov_base + n;
			iov[idx].iov_len -= (size_t)n;
		}
	}
	return 0;
}

int mux_send(uint32_t stream, uint8_t type, const void *payload, size_t len)
{
	return mux_send2(stream, type, payload, len, NULL, 0);
}

int mux_send_u32(uint32_t stream, uint8_t type, uint32_t v)
{
	uint8_t b[4];
	put_be32(b, v);
	return mux_send(stream, type, b, 4);
}
