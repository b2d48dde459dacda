import type { TrainConfig } from "../config/train-config.js";
import { checkpointDir, listCheckpoints, readCheckpoint, type ShardCheckpoint } from "../ps/checkpoint.js";
import { badOption } from "../util/errors.js";

/** Where a resumed run starts: each shard's checkpoint and each worker's first step. */
export interface ResumePlan {
  /** per shard: the checkpoint step it restores */
  shardSteps: number[];
  /** per worker: the step it starts at (its clock at every shard) */
  startSteps: number[];
  /** checkpoints passed over because they did not verify, with why */
  skipped: string[];
}

/**
 * Sync: the newest step at which every shard has a checkpoint that verifies (they are taken at
 * the same global steps, so the weights, optimizer state and clocks form one consistent cut, and
 * every worker starts at that step). Async/SSP: each shard's newest valid checkpoint, and each
 * worker starts at its smallest clock over the shards; a shard whose checkpoint already holds
 * some of those gradients receives them again (docs/reliability.md).
 */
export function planResume(cfg: TrainConfig, dir: string): ResumePlan {
  const skipped: string[] = [];
  const valid: Map<number, ShardCheckpoint>[] = [];
  for (let k = 0; k < cfg.servers; k++) {
    const m = new Map<number, ShardCheckpoint>();
    for (const c of listCheckpoints(checkpointDir(dir, k))) {
      try {
        const ck = readCheckpoint(c.file);
        if (ck.header.clocks.length !== cfg.workers) throw new Error(`${c.file}: clocks of ${ck.header.clocks.length} workers, the run has ${cfg.workers}`);
        m.set(c.step, ck);
      } catch (err) {
        skipped.push(err instanceof Error ? err.message : String(err));
      }
    }
    if (m.size === 0) throw badOption(`--resume ${dir}: server shard ${k} has no valid checkpoint in ${checkpointDir(dir, k)}${skipped.length ? ` (${skipped.join("; ")})` : ""}`);
    valid.push(m);
  }
  if (cfg.mode === "sync") {
    const common = [...valid[0]!.keys()].filter((s) => valid.every((m) => m.has(s))).sort((a, b) => b - a);
    const step = common[0];
    if (step === undefined) throw badOption(`--resume ${dir}: the shards have no checkpoint at a common step`);
    return { shardSteps: valid.map(() => step), startSteps: new Array<number>(cfg.workers).fill(step), skipped };
  }
  const chosen = valid.map((m) => m.get(Math.max(...m.keys()))!);
  const startSteps = [...Array(cfg.workers).keys()].map((r) => Math.min(...chosen.map((c) => c.header.clocks[r]!)));
  return { shardSteps: chosen.map((c) => c.header.step), startSteps, skipped };
}
