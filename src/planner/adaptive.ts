/**
 * Adaptive partitioning (after Neurosurgeon's adaptation to changing network conditions): keep the
 * bandwidth the current split was planned for, and re-plan when a new measurement has moved past
 * `threshold` (a fraction: 0.5 = 50% up or down) from it. A split that was given (--split-at)
 * has no planned bandwidth, so the first measurement plans.
 */
import { planSplits, type LinkCost, type PlanResult, type UnitCost } from "./partition.js";

export class AdaptivePlanner {
  private plannedBandwidth: number | null;
  private split: number[];

  constructor(
    private readonly units: readonly UnitCost[],
    private readonly stages: number,
    private readonly microbatches: number,
    private readonly threshold: number,
    initial: { splitAt: readonly number[]; bandwidth: number | null },
  ) {
    this.split = initial.splitAt.slice();
    this.plannedBandwidth = initial.bandwidth;
  }

  get splitAt(): number[] {
    return this.split.slice();
  }

  /** A new measurement; returns the new plan when it changes the split, else null. */
  observe(link: LinkCost): PlanResult | null {
    const base = this.plannedBandwidth;
    if (base !== null && Math.abs(link.bandwidth - base) <= this.threshold * base) return null;
    this.plannedBandwidth = link.bandwidth;
    const plan = planSplits(this.units, this.stages, this.microbatches, link);
    if (plan.splitAt.join(",") === this.split.join(",")) return null;
    this.split = plan.splitAt.slice();
    return plan;
  }
}
