import type { ConsistencyMode, ShardClocks } from "./mode.js";

/**
 * Stale-synchronous parallel (Ho et al., NIPS 2013): a worker at clock c may read only when
 * every worker's clock is at least c - s. Gradients are applied on arrival, and a worker's own
 * push is applied before its read is considered (read-my-writes). s = 0 is BSP's read rule.
 */
export class SspMode implements ConsistencyMode {
  readonly name = "ssp" as const;
  readonly pushPolicy = "apply" as const;
  constructor(readonly staleness: number) {
    if (!Number.isInteger(staleness) || staleness < 0) throw new RangeError(`staleness must be an integer >= 0 (got ${staleness})`);
  }
  canRead(clocks: ShardClocks, _rank: number, clock: number): boolean {
    return clocks.minClock() >= clock - this.staleness;
  }
  describe(): string {
    return `ssp (s=${this.staleness}): a worker at clock c reads once every worker's clock >= c - ${this.staleness}`;
  }
}
