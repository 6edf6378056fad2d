/**
 * One set of limits (src/limits.ts) for every front: the library's checks,
 * the spec file, the MCP tools' input schemas, the CLI's parsers and the
 * supervisor's wire schema accept and refuse the same values.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { parsePositiveInt } from '../../src/cli/args.js';
import { CPUS, DISK_MIB, MEMORY_MIB } from '../../src/limits.js';
import { TOOLS } from '../../src/mcp/tools.js';
import { parseSpec } from '../../src/spec/index.js';
import { StartConfigSchema } from '../../src/vmkit/schema.js';
import { resolveResources } from '../../src/workspace/profiles.js';

const accepts = (f: () => unknown): boolean => {
  try {
    f();
    return true;
  } catch {
    return false;
  }
};

function mcpField(tool: string, field: string): z.ZodTypeAny {
  const def = TOOLS.find((t) => t.name === tool);
  assert.ok(def, `MCP tool ${tool}`);
  const schema = (def.shape as Record<string, z.ZodTypeAny>)[field];
  assert.ok(schema, `MCP ${tool}.${field}`);
  return schema;
}

describe('limits', () => {
  const cases = [
    {
      what: 'cpus',
      lo: CPUS.min,
      hi: CPUS.max,
      library: (n: number) => resolveResources({ cpus: n }),
      spec: (n: number) => parseSpec(`cpus: ${n}\n`),
      mcp: 'cpus',
      cli: (n: number) => parsePositiveInt(String(n), 'cpus', CPUS.max),
    },
    {
      what: 'memory',
      lo: MEMORY_MIB.min,
      hi: MEMORY_MIB.max,
      library: (n: number) => resolveResources({ memoryMiB: n }),
      spec: (n: number) => parseSpec(`memory: ${n}\n`),
      mcp: 'memory_mib',
    },
    {
      what: 'disk',
      lo: DISK_MIB.min,
      hi: DISK_MIB.max,
      library: (n: number) => resolveResources({ diskMiB: n }),
      spec: (n: number) => parseSpec(`diskSize: ${n}\n`),
      mcp: 'disk_mib',
    },
  ];
  for (const c of cases) {
    it(`${c.what}: ${c.lo}..${c.hi} everywhere`, () => {
      for (const [n, ok] of [
        [c.lo - 1, false],
        [c.lo, true],
        [c.hi, true],
        [c.hi + 1, false],
      ] as const) {
        assert.equal(
          accepts(() => c.library(n)),
          ok,
          `library ${n}`,
        );
        assert.equal(
          accepts(() => c.spec(n)),
          ok,
          `spec ${n}`,
        );
        for (const tool of ['run', 'create'])
          assert.equal(mcpField(tool, c.mcp).safeParse(n).success, ok, `MCP ${tool} ${n}`);
        if (c.cli && n >= 1)
          assert.equal(
            accepts(() => c.cli(n)),
            ok,
            `CLI ${n}`,
          );
      }
    });
  }

  it('the supervisor takes every cpus value the fronts let through', () => {
    const base = {
      runtimeDir: '/r/run',
      workspaceDir: '/r',
      kernel: { path: '/k' },
      disks: [],
      memoryMiB: MEMORY_MIB.min,
      bootTimeoutMs: 1000,
    };
    for (const cpus of [CPUS.min, CPUS.max])
      assert.ok(StartConfigSchema.safeParse({ ...base, cpus }).success, `cpus ${cpus}`);
    assert.equal(StartConfigSchema.safeParse({ ...base, cpus: CPUS.max + 1 }).success, false);
  });
});
