/**
 * The workspace spec (`microagent.yaml`): loading, validation with source
 * positions, and conversion to create/run options. See docs/spec.md.
 */
export { loadSpec, parseSpec, SpecSchema, type Spec, type SpecIssue } from './spec.js';
export {
  commandArgv,
  mergeSpecWithFlags,
  specToCreateOptions,
  specToRunOptions,
  type SpecFlags,
} from './convert.js';
