/* Generated from src/guest/protocol.ts by scripts/gen-c-protocol.mjs: do not
 * edit. The protocol constants the guest init shares with the host
 * (docs/protocol.md). */
#ifndef MA_PROTOCOL_H
#define MA_PROTOCOL_H

#define PROTOCOL_VERSION 1
#define MUX_PORT_NAME "org.microagent.mux"
#define ROOT_DISK_SERIAL "ma-root"
#define CONFIG_DISK_SERIAL "ma-config"

#define MUX_HEADER_SIZE 12
#define MUX_MAX_PAYLOAD 65536
#define MUX_MAX_DATA 32768
#define MUX_WINDOW 524288
#define MUX_MAX_STREAMS 64
#define MUX_MAX_RESET_REASON 1024

enum frame_type {
	F_HELLO = 1,
	F_OPEN = 2,
	F_OPEN_OK = 3,
	F_RESET = 4,
	F_DATA = 5,
	F_EOF = 6,
	F_CREDIT = 7,
	F_POWEROFF = 8,
	F_PING = 9,
	F_PONG = 10,
	F_RESULT = 11,
};

#define EXEC_HEADER_SIZE 5
#define EXEC_MAX_MESSAGE 1048576
#define GUEST_PORT_EXEC 1
#define GUEST_PORT_FS 2

enum exec_kind { EK_JSON = 1, EK_STDIN = 2, EK_STDOUT = 3, EK_STDERR = 4 };

/* Kinds on the fs stream (same header as exec). */
#define FK_JSON 1
#define FK_DATA_TO_GUEST 2
#define FK_DATA_TO_HOST 3
#define FS_MAX_PATH 4095

#define CONFIG_MAGIC "MACFG001"
#define CONFIG_MAX_JSON 1048576
#define NET_MAX_DNS 3
#define PREFETCH_MAX 8
#define PREFETCH_MAX_NAME 4095

#endif
