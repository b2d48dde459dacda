import type { ConsistencyMode, ShardClocks } from "./mode.js";

/** BSP: the mean of all workers' gradients for clock c is applied once; reads for c+1 wait for it. */
export class SyncMode implements ConsistencyMode {
  readonly name = "sync" as const;
  readonly pushPolicy = "aggregate" as const;
  canRead(clocks: ShardClocks, _rank: number, clock: number): boolean {
    // version counts applied aggregates: the read for clock c needs aggregates 0..c-1.
    return clocks.version >= clock;
  }
  describe(): string {
    return "sync (BSP): apply the mean gradient of clock c when all workers pushed it; reads for c+1 wait";
  }
}
