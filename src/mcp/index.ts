/**
 * The MCP server (`microagent serve mcp`): tools over the library, with a
 * uniform answer envelope, idempotent replays and a clean shutdown.
 * See docs/mcp.md.
 */
export {
  MicroagentMcpServer,
  serveMcpStdio,
  CLOSE_GRACE_MS,
  type McpServerOptions,
  type ServeStdioOptions,
} from './server.js';
export { TOOLS, type ToolDef, type ToolContext } from './tools.js';
export type { Envelope, EnvelopeError, EnvelopeMeta } from './envelope.js';
export { IdempotencyStore, IDEMPOTENCY_TTL_MS } from './idempotency.js';
