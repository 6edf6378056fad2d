/**
 * OCI images: references, registry pulls, the blob cache and the local
 * image index. The library API the `image` commands and the rootfs builder use.
 */
export {
  apiHost,
  canonicalReference,
  formatReference,
  isLoopbackRegistry,
  isMutable,
  parseReference,
  type ImageReference,
} from './reference.js';
export {
  MEDIA,
  formatPlatform,
  hostPlatform,
  parsePlatform,
  type Compression,
  type ImageConfig,
  type Platform,
} from './manifest.js';
export { dockerConfigPath, resolveCredentials, type Credentials } from './auth.js';
export { RegistryClient, type RegistryClientOptions, type RetryOptions } from './registry.js';
export { blobPath, hasBlob, listBlobs, readBlob } from './blobs.js';
export {
  findImages,
  getImage,
  listImages,
  pruneImages,
  registerBlobRoots,
  removeImage,
  tagImage,
  type BlobRootProvider,
  type ImageRecord,
  type PruneResult,
} from './images.js';
export {
  loadPulledImage,
  pullImage,
  type PullEvent,
  type PullOptions,
  type PullResult,
  type PulledLayer,
} from './pull.js';
