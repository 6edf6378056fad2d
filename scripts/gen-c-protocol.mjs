// Writes guest/init/protocol.h, the guest init's copy of the protocol
// constants, from src/guest/protocol.ts (the host's single source), so the
// C side cannot drift from the TypeScript one. Run after the TS build:
//   scripts/node scripts/gen-c-protocol.mjs
// `npm run check` fails when the committed header differs from what this
// writes.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const P = await import(join(root, 'dist/src/guest/protocol.js'));

const str = (s) => JSON.stringify(s);
const lines = [
  '/* Generated from src/guest/protocol.ts by scripts/gen-c-protocol.mjs: do not',
  ' * edit. The protocol constants the guest init shares with the host',
  ' * (docs/protocol.md). */',
  '#ifndef MA_PROTOCOL_H',
  '#define MA_PROTOCOL_H',
  '',
  `#define PROTOCOL_VERSION ${P.PROTOCOL_VERSION}`,
  `#define MUX_PORT_NAME ${str(P.MUX_PORT_NAME)}`,
  `#define ROOT_DISK_SERIAL ${str(P.ROOT_DISK_SERIAL)}`,
  `#define CONFIG_DISK_SERIAL ${str(P.CONFIG_DISK_SERIAL)}`,
  '',
  `#define MUX_HEADER_SIZE ${P.MUX_HEADER_SIZE}`,
  `#define MUX_MAX_PAYLOAD ${P.MUX_MAX_PAYLOAD}`,
  `#define MUX_MAX_DATA ${P.MUX_MAX_DATA}`,
  `#define MUX_WINDOW ${P.MUX_WINDOW}`,
  `#define MUX_MAX_STREAMS ${P.MUX_MAX_STREAMS}`,
  `#define MUX_MAX_RESET_REASON ${P.MUX_MAX_RESET_REASON}`,
  '',
  'enum frame_type {',
  ...Object.entries(P.FrameType).map(([k, v]) => `\tF_${k} = ${v},`),
  '};',
  '',
  `#define EXEC_HEADER_SIZE ${P.EXEC_HEADER_SIZE}`,
  `#define EXEC_MAX_MESSAGE ${P.EXEC_MAX_MESSAGE}`,
  ...Object.entries(P.GuestPort).map(([k, v]) => `#define GUEST_PORT_${k} ${v}`),
  '',
  `enum exec_kind { ${Object.entries(P.ExecKind)
    .map(([k, v]) => `EK_${k} = ${v}`)
    .join(', ')} };`,
  '',
  '/* Kinds on the fs stream (same header as exec). */',
  ...Object.entries(P.FsKind).map(([k, v]) => `#define FK_${k} ${v}`),
  `#define FS_MAX_PATH ${P.FS_MAX_PATH}`,
  '',
  `#define CONFIG_MAGIC ${str(P.CONFIG_MAGIC)}`,
  `#define CONFIG_MAX_JSON ${P.CONFIG_MAX_JSON}`,
  `#define NET_MAX_DNS ${P.NET_MAX_DNS}`,
  `#define PREFETCH_MAX ${P.PREFETCH_MAX}`,
  `#define PREFETCH_MAX_NAME ${P.PREFETCH_MAX_NAME}`,
  '',
  '#endif',
  '',
];
writeFileSync(join(root, 'guest/init/protocol.h'), lines.join('\n'));
