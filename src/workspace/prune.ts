/**
 * `image prune`: blobs no image refers to, and rootfs baselines no workspace
 * is built on (a workspace's disk is an overlay that needs its baseline).
 */
import { pruneImages } from '../oci/index.js';
import { StatePaths } from '../paths.js';
import { listBaselines, removeBaseline } from '../rootfs/baseline.js';
import { listWorkspaces } from './store.js';

export interface PruneResult {
  removedBlobs: string[];
  reclaimedBytes: number;
  removedBaselines: string[];
}

export async function prune(options: { stateDir?: string } = {}): Promise<PruneResult> {
  const paths = new StatePaths(options.stateDir);
  const inUse = new Set((await listWorkspaces(paths)).map(({ record }) => record.image.key));
  const removedBaselines: string[] = [];
  for (const baseline of await listBaselines(paths)) {
    if (inUse.has(baseline.key)) continue;
    // A baseline being built or used right now is locked; skip it quietly.
    try {
      await removeBaseline(paths, baseline.key);
      removedBaselines.push(baseline.key);
    } catch {
      // busy: leave it for the next prune
    }
  }
  const blobs = await pruneImages(paths);
  return {
    removedBlobs: blobs.removedBlobs,
    reclaimedBytes: blobs.reclaimedBytes,
    removedBaselines,
  };
}
