import type { ModeName } from "../config/train-config.js";

/** What a mode may look at: the shard's per-worker clocks and its version. */
export interface ShardClocks {
  readonly workers: number;
  /** gradients received from `rank` so far (its clock) */
  clockOf(rank: number): number;
  /** the slowest worker's clock */
  minClock(): number;
  /** updates applied so far: aggregates in sync, single gradients in async/SSP */
  readonly version: number;
}

/**
 * A consistency mode is a strategy: it decides when a shard applies a pushed gradient and
 * when a read may be answered. The shard does the bookkeeping and the arithmetic.
 */
export interface ConsistencyMode {
  readonly name: ModeName;
  /**
   * `apply`: every gradient is one optimizer step as it arrives (scaled by 1/workers so that
   * a learning rate means the same in every mode); `aggregate`: gradients of one clock are
   * summed and their mean is applied once all workers have pushed that clock.
   */
  readonly pushPolicy: "apply" | "aggregate";
  /** May `rank`, which has pushed `clock` gradients, read the weights now? */
  canRead(clocks: ShardClocks, rank: number, clock: number): boolean;
  /** A short description of the rule, for logs and docs. */
  describe(): string;
}
