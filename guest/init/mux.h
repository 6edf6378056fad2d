/* The mux frame codec and the exec message header (docs/protocol.md §1, §3),
 * plus the blocking frame writer for the channel. */
#ifndef MA_MUX_H
#define MA_MUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol.h" /* generated from src/guest/protocol.ts */

/* A ping's payload the guest echoes at most (guest-side bound). */
#define MUX_MAX_PING 64

struct mux_hdr {
	uint32_t stream;
	uint8_t type;
	uint32_t len;
};


static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

void mux_encode_header(uint8_t out[MUX_HEADER_SIZE], uint32_t stream, uint8_t type, uint32_t len);
/* Rejects unknown types, non-zero flags/reserved, length > MUX_MAX_PAYLOAD. */
int mux_decode_header(const uint8_t in[MUX_HEADER_SIZE], struct mux_hdr *h, char *err, size_t errlen);

void exec_encode_header(uint8_t out[EXEC_HEADER_SIZE], uint8_t kind, uint32_t len);
/* Rejects unknown kinds and length > EXEC_MAX_MESSAGE. */
int exec_decode_header(const uint8_t in[EXEC_HEADER_SIZE], uint8_t *kind, uint32_t *len, char *err,
		       size_t errlen);

/* The channel (the virtio-serial port), -1 when not open. */
extern int mux_fd;
/* Writes one frame (blocking). -1 if the channel is gone (logged). */
int mux_send(uint32_t stream, uint8_t type, const void *payload, size_t len);
/* Same, with the payload in two parts (exec header + bytes). */
int mux_send2(uint32_t stream, uint8_t type, const void *a, size_t alen, const void *b, size_t blen);
int mux_send_u32(uint32_t stream, uint8_t type, uint32_t v);

#endif
