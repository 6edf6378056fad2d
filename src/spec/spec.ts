/**
 * `microagent.yaml`: the declarative form of `create` and `run`. The file is
 * parsed with source positions kept, so a YAML syntax error names its line
 * and column and a schema error names the field path and the line it is on.
 * Unknown fields are rejected (a typo must not be ignored silently), and
 * fields of the reference format that this build cannot honour yet (disks,
 * volumes) are refused by name rather than dropped.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { LineCounter, Node } from 'yaml';
import { z } from 'zod';
import { MicroagentError } from '../errors.js';
import { CpusSchema, DiskMiBSchema, MemoryMiBSchema } from '../limits.js';
import { parsePublish } from '../workspace/network.js';
import { PROFILES } from '../workspace/profiles.js';

/**
 * The YAML parser, loaded on first use: it is ~70 modules, and every CLI
 * command that can take a spec would otherwise load it on each start-up.
 */
let yamlModule: typeof import('yaml') | undefined;
function yaml(): typeof import('yaml') {
  yamlModule ??= createRequire(import.meta.url)('yaml') as typeof import('yaml');
  return yamlModule;
}

/** `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]`, checked by the same parser as `--publish`. */
const Publish = z.string().superRefine((value, ctx) => {
  try {
    parsePublish(value);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      // "invalid --publish "x": why" → "why": the field path already says where.
      message: message.replace(/^invalid --publish "[^"]*": /, ''),
    });
  }
});

/** Env and label values: YAML scalars, kept as strings (`PORT: 8080` is "8080"). */
const StringMap = z.record(
  z.string().min(1),
  z.union([z.string(), z.number(), z.boolean()]).transform((v) => String(v)),
);

const OUTPUT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const GuestPath = z.string().startsWith('/', 'must be an absolute guest path (start with /)');
const OutputName = z
  .string()
  .regex(
    OUTPUT_NAME,
    'must be 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit',
  );

/** Outputs as a map (name → path) or, as in the reference format, a list of {name, path}. */
const Outputs = z.union([
  z.record(OutputName, GuestPath),
  z
    .array(z.object({ name: OutputName, path: GuestPath }).strict())
    .transform((list) => Object.fromEntries(list.map((o) => [o.name, o.path]))),
]);

const Network = z
  .object({
    mode: z
      .enum(['user', 'isolated'])
      .optional()
      .describe('user (NAT to the outside) or isolated (no NIC)'),
    publish: z.array(Publish).optional().describe('Host ports forwarded into the guest'),
    allowHostLoopback: z
      .boolean()
      .optional()
      .describe('Let the guest reach services on the host loopback'),
  })
  .strict();

const NotSupported = z.unknown().optional();

export const SpecSchema = z
  .object({
    image: z.string().min(1).optional(),
    name: z.string().min(1).optional(),
    profile: z
      .enum(Object.keys(PROFILES) as [keyof typeof PROFILES, ...(keyof typeof PROFILES)[]])
      .optional(),
    cpus: CpusSchema.optional(),
    /** MiB as a number, or a size such as "512M" / "2G". */
    memory: z
      .union([
        MemoryMiBSchema,
        z.string().regex(/^\d+\s*(m|mi|mib|mb|g|gi|gib|gb)?$/i, 'must look like 512, 512M or 2G'),
      ])
      .optional(),
    /** The root disk, pinned: MiB as a number, or a size such as "4G". */
    diskSize: z
      .union([
        DiskMiBSchema,
        z
          .string()
          .regex(
            /^\d+\s*(m|mi|mib|mb|g|gi|gib|gb|t|ti|tib|tb)?$/i,
            'must look like 512M, 4G or 1T',
          ),
      ])
      .optional(),
    env: StringMap.optional(),
    /** A list is the argv; a string is run with `sh -c`. */
    command: z.union([z.array(z.string()).min(1), z.string().min(1)]).optional(),
    setup: z.array(z.string().min(1)).optional(),
    network: Network.optional(),
    /** Alias of network.publish. */
    ports: z.array(Publish).optional(),
    outputs: Outputs.optional(),
    labels: StringMap.optional(),
    disks: NotSupported,
    volumes: NotSupported,
  })
  .strict();

/** A validated spec. Env and label values are strings; outputs a map. */
export type Spec = Omit<z.output<typeof SpecSchema>, 'disks' | 'volumes' | 'ports'>;

/** Fields of the reference format this build refuses by name. */
const UNSUPPORTED_FIELDS: Record<string, string> = {
  disks: 'extra disks are not supported yet; copy files in with `microagent cp` instead',
  volumes: 'volumes are not supported yet; copy files in with `microagent cp` instead',
};

export interface SpecIssue {
  /** Dotted field path, e.g. `network.publish[0]` (empty for the document itself). */
  path: string;
  message: string;
  line?: number;
  col?: number;
}

function specError(source: string, issues: SpecIssue[]): MicroagentError {
  const lines = issues.map((i) => {
    const where = i.line !== undefined ? `${source}:${i.line}:${i.col ?? 1}` : source;
    return `${where}: ${i.path ? `${i.path}: ` : ''}${i.message}`;
  });
  const first = issues[0];
  return new MicroagentError('SPEC_INVALID', lines.join('\n'), {
    data: {
      file: source,
      issues,
      ...(first?.line !== undefined ? { line: first.line, col: first.col } : {}),
      ...(first?.path ? { path: first.path } : {}),
    },
  });
}

export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? seg : `.${seg}`;
  }
  return out;
}

/**
 * The node at path in the document, for its position: the value node when
 * it exists; with `key`, the key node of the last segment; otherwise the
 * nearest ancestor that exists (a missing field points at its parent map).
 */
function nodeAt(root: Node | null, path: readonly (string | number)[], key?: string): Node | null {
  const { isMap, isScalar, isSeq } = yaml();
  let node: Node | null = root;
  for (const seg of [...path, ...(key !== undefined ? [key] : [])]) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return node;
      if (seg === key) return pair.key as Node;
      node = (pair.value as Node | null) ?? (pair.key as Node);
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as Node | undefined;
      if (!item) return node;
      node = item;
    } else {
      return node;
    }
  }
  return node;
}

function position(
  node: Node | null,
  counter: LineCounter,
): { line: number; col: number } | Record<string, never> {
  const start = node?.range?.[0];
  if (start === undefined) return {};
  const { line, col } = counter.linePos(start);
  return { line, col };
}

/**
 * Parses and validates spec text. `source` names the file in messages.
 * Throws SPEC_INVALID with data.issues [{path, message, line, col}].
 */
export function parseSpec(text: string, source = 'microagent.yaml'): Spec {
  const { LineCounter, parseDocument } = yaml();
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw specError(
      source,
      doc.errors.map((e) => {
        const pos = e.linePos?.[0];
        return {
          path: '',
          // The first line of the message, without the position we print ourselves.
          message: `YAML syntax error: ${(e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, '')}`,
          ...(pos ? { line: pos.line, col: pos.col } : {}),
        };
      }),
    );
  }
  const value: unknown = doc.toJS({ maxAliasCount: 100 }) ?? {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw specError(source, [
      {
        path: '',
        message: 'the spec must be a mapping of fields (image:, command:, ...)',
        ...position(doc.contents, counter),
      },
    ]);
  }
  const root = doc.contents as Node | null;
  const parsed = SpecSchema.safeParse(value);
  const issues: SpecIssue[] = [];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          issues.push({
            path: formatPath([...issue.path, key]),
            message: `unknown field "${key}"`,
            ...position(nodeAt(root, issue.path, key), counter),
          });
        }
        continue;
      }
      const best = bestIssue(issue);
      issues.push({
        path: formatPath(best.path),
        message: describeIssue(best),
        ...position(nodeAt(root, best.path), counter),
      });
    }
  }
  for (const [field, why] of Object.entries(UNSUPPORTED_FIELDS)) {
    if (Object.hasOwn(value, field)) {
      issues.push({
        path: field,
        message: why,
        ...position(nodeAt(root, [field], field), counter),
      });
    }
  }
  if (issues.length > 0 || !parsed.success) {
    issues.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.col ?? 0) - (b.col ?? 0));
    throw specError(source, issues);
  }
  return normalize(parsed.data);
}

/**
 * The most telling issue: for a union, the branch issue that got deepest
 * into the value (its path and message say more than "Invalid input").
 */
export function bestIssue(issue: z.ZodIssue): z.ZodIssue {
  if (issue.code !== 'invalid_union') return issue;
  const nested = issue.unionErrors.flatMap((e) => e.issues).map(bestIssue);
  const deepest = nested.reduce<z.ZodIssue | undefined>((best, i) => {
    if (!best) return i;
    if (i.path.length !== best.path.length) return i.path.length > best.path.length ? i : best;
    return best.code === 'invalid_type' && i.code !== 'invalid_type' ? i : best;
  }, undefined);
  if (!deepest) return issue;
  if (deepest.code === 'invalid_type' && deepest.path.length === issue.path.length) {
    // Every branch refused the type: list what would have been accepted.
    const expected = [
      ...new Set(nested.flatMap((i) => (i.code === 'invalid_type' ? [i.expected] : []))),
    ];
    return { ...deepest, message: `expected ${expected.join(' or ')}, got ${deepest.received}` };
  }
  return deepest;
}

/** A short message for one issue (after bestIssue). */
export function describeIssue(issue: z.ZodIssue): string {
  if (issue.code === 'invalid_type' && !issue.message.startsWith('expected ')) {
    return issue.received === 'undefined'
      ? 'is required'
      : `expected ${issue.expected}, got ${issue.received}`;
  }
  return issue.message;
}

function normalize(data: z.output<typeof SpecSchema>): Spec {
  const { disks: _d, volumes: _v, ports, ...rest } = data;
  const spec: Spec = { ...rest };
  if (ports && ports.length > 0) {
    // `ports` is an alias: its entries join network.publish.
    spec.network = { ...spec.network, publish: [...(spec.network?.publish ?? []), ...ports] };
  }
  return spec;
}

/** Reads and validates a spec file. Throws SPEC_INVALID (or INVALID_ARGUMENT when unreadable). */
export async function loadSpec(path: string): Promise<Spec> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new MicroagentError(
      'INVALID_ARGUMENT',
      `cannot read spec file ${path}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
      {
        remediation: 'Pass the path of a microagent.yaml with --file.',
        data: { path },
        cause: err,
      },
    );
  }
  return parseSpec(text, path);
}
