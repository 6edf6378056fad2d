/**
 * Workspace names: what users may type, and generated names for one-shot runs.
 */
import { randomBytes } from 'node:crypto';
import { MicroagentError } from '../errors.js';

export const WORKSPACE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Throws INVALID_NAME unless name is a valid workspace name. */
export function validateWorkspaceName(name: string): string {
  if (!WORKSPACE_NAME_PATTERN.test(name)) {
    throw new MicroagentError('INVALID_NAME', `invalid workspace name "${name}"`, {
      data: { name },
    });
  }
  return name;
}

const ADJECTIVES = [
  'brave',
  'calm',
  'eager',
  'fair',
  'gentle',
  'happy',
  'jolly',
  'keen',
  'lively',
  'merry',
  'nimble',
  'proud',
  'quick',
  'quiet',
  'sharp',
  'swift',
  'tidy',
  'vivid',
  'warm',
  'wise',
];
const ANIMALS = [
  'otter',
  'heron',
  'lynx',
  'falcon',
  'badger',
  'beaver',
  'crane',
  'fox',
  'gecko',
  'hare',
  'ibis',
  'koala',
  'lemur',
  'marten',
  'newt',
  'orca',
  'panda',
  'quail',
  'raven',
  'seal',
];

/** A fresh one-shot name such as run-brave-otter-4f9c. */
export function generateRunName(prefix = 'run'): string {
  const bytes = randomBytes(4);
  const adjective = ADJECTIVES[(bytes[0] as number) % ADJECTIVES.length] as string;
  const animal = ANIMALS[(bytes[1] as number) % ANIMALS.length] as string;
  return `${prefix}-${adjective}-${animal}-${bytes.subarray(2).toString('hex')}`;
}

/** Hostname derived from a workspace name (RFC 1123 label). */
export function hostnameFor(name: string): string {
  const label = name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return label || 'microagent';
}
