/**
 * `--file microagent.yaml` for create and run: the spec with the command
 * line's flags merged over it (flags win; env, labels and outputs merge key
 * by key). docs/spec.md.
 */
import type { FlagSpecs } from '../args.js';
import { loadSpec, mergeSpecWithFlags, type Spec } from '../../index.js';

export const FILE_FLAG: FlagSpecs = {
  file: {
    type: 'string',
    short: 'f',
    arg: 'PATH',
    help: 'Read settings from a microagent.yaml (flags override it)',
  },
};

/**
 * The spec named by --file merged with the flags, or undefined without
 * --file. `image` is run's image from before `--` (`run IMAGE -- CMD`),
 * which overrides the spec's like --image does.
 */
export async function specFromFlags(
  flags: Record<string, unknown>,
  image?: string,
): Promise<Spec | undefined> {
  const path = flags.file as string | undefined;
  if (path === undefined) return undefined;
  const spec = await loadSpec(path);
  const s = (k: string): string | undefined =>
    k === 'image' && image !== undefined ? image : (flags[k] as string | undefined);
  const l = (k: string): string[] | undefined => flags[k] as string[] | undefined;
  return mergeSpecWithFlags(spec, {
    ...(s('image') !== undefined ? { image: s('image') } : {}),
    ...(s('name') !== undefined ? { name: s('name') } : {}),
    ...(s('profile') !== undefined ? { profile: s('profile') } : {}),
    ...(s('cpus') !== undefined ? { cpus: s('cpus') } : {}),
    ...(s('memory') !== undefined ? { memory: s('memory') } : {}),
    ...(s('disk-size') !== undefined ? { diskSize: s('disk-size') } : {}),
    ...(l('env') !== undefined ? { env: l('env') } : {}),
    ...(l('setup') !== undefined ? { setup: l('setup') } : {}),
    ...(l('publish') !== undefined ? { publish: l('publish') } : {}),
    ...(s('network') !== undefined ? { network: s('network') } : {}),
    ...(flags['allow-host-loopback'] === true ? { allowHostLoopback: true } : {}),
    ...(l('label') !== undefined ? { label: l('label') } : {}),
    ...(l('output') !== undefined ? { output: l('output') } : {}),
  });
}
