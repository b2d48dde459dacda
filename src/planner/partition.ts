/**
 * Choosing split points: the pipeline's cost model and a dynamic program over contiguous splits.
 *
 * For a stage k made of units [i, j) and M micro-batches of the batch:
 *   compute  t_k = sum over its units of (forward + backward ms of one micro-batch)
 *   transfer c_k = 2 * act_bytes(j) / bandwidth + 2 * latency   (the activation forward, its
 *                  gradient back; 0 for the last stage)
 *   cost     s_k = t_k + c_k                                    (a stage sends what it computed)
 * The planner minimises the bottleneck max_k s_k, which paces the pipeline, and predicts a step as
 *   T = sum_k s_k + (M - 1) * max_k s_k + exchange
 * (the first micro-batch crosses every stage, the other M - 1 follow at the bottleneck's pace;
 * GPipe's bubble fraction (K - 1) / (M + K - 1) is this formula with equal stages) where exchange
 * is the parameter-server round of the largest stage, 2 * 4 * params_k / bandwidth.
 */

export interface UnitCost {
  name: string;
  /** one micro-batch, ms */
  forwardMs: number;
  backwardMs: number;
  /** bytes of this unit's output for one micro-batch (what crosses a cut after it) */
  activationBytes: number;
  params: number;
}

export interface LinkCost {
  /** bytes per second */
  bandwidth: number;
  /** one-way latency, ms */
  latencyMs: number;
}

export interface PlanResult {
  /** units after which a stage ends (K - 1 ascending values) */
  splitAt: number[];
  /** per stage: compute ms, transfer ms (per micro-batch) */
  stageMs: { computeMs: number; transferMs: number }[];
  bottleneckMs: number;
  predictedStepMs: number;
}

function transferMs(bytes: number, link: LinkCost): number {
  return (2 * bytes * 1000) / link.bandwidth + 2 * link.latencyMs;
}

/** The cost of one stage made of units [i, j) out of n. */
export function stageCost(units: readonly UnitCost[], i: number, j: number, link: LinkCost): { computeMs: number; transferMs: number } {
  let c = 0;
  for (let u = i; u < j; u++) c += units[u]!.forwardMs + units[u]!.backwardMs;
  const t = j < units.length ? transferMs(units[j - 1]!.activationBytes, link) : 0;
  return { computeMs: c, transferMs: t };
}

/** Cost of a given split (predicted step time for `microbatches`). */
export function evaluateSplit(units: readonly UnitCost[], splitAt: readonly number[], microbatches: number, link: LinkCost): PlanResult {
  const cuts = [0, ...splitAt, units.length];
  const stageMs: PlanResult["stageMs"] = [];
  let exchangeMs = 0;
  for (let k = 0; k + 1 < cuts.length; k++) {
    stageMs.push(stageCost(units, cuts[k]!, cuts[k + 1]!, link));
    let params = 0;
    for (let u = cuts[k]!; u < cuts[k + 1]!; u++) params += units[u]!.params;
    exchangeMs = Math.max(exchangeMs, transferMs(4 * params, link));
  }
  const s = stageMs.map((x) => x.computeMs + x.transferMs);
  const bottleneckMs = Math.max(...s);
  const predictedStepMs = s.reduce((a, b) => a + b, 0) + (microbatches - 1) * bottleneckMs + exchangeMs;
  return { splitAt: splitAt.slice(), stageMs, bottleneckMs, predictedStepMs };
}

/**
 * Split n units into `stages` contiguous non-empty stages minimising the bottleneck stage cost
 * (compute + outgoing transfer): dp[k][j] = min over i of max(dp[k-1][i], cost(i, j)),
 * O(K n^2). Among splits with the same bottleneck the predicted step time decides.
 */
export function planSplits(units: readonly UnitCost[], stages: number, microbatches: number, link: LinkCost): PlanResult {
  const n = units.length;
  if (!Number.isInteger(stages) || stages < 1 || stages > n) throw new RangeError(`cannot split ${n} units into ${stages} stages`);
  const cost = (i: number, j: number) => {
    const c = stageCost(units, i, j, link);
    return c.computeMs + c.transferMs;
  };
  // dp[k][j]: best bottleneck of units [0, j) in k stages; from[k][j]: where the last stage starts
  const dp: number[][] = Array.from({ length: stages + 1 }, () => new Array<number>(n + 1).fill(Infinity));
  const from: number[][] = Array.from({ length: stages + 1 }, () => new Array<number>(n + 1).fill(-1));
  dp[0]![0] = 0;
  for (let k = 1; k <= stages; k++) {
    for (let j = k; j <= n; j++) {
      for (let i = k - 1; i < j; i++) {
        const prev = dp[k - 1]![i]!;
        if (prev === Infinity) continue;
        const v = Math.max(prev, cost(i, j));
        // ties: keep the split with the smaller predicted step (compared below on full splits)
        if (v < dp[k]![j]! - 1e-12) {
          dp[k]![j] = v;
          from[k]![j] = i;
        }
      }
    }
  }
  const best = dp[stages]![n]!;
  // Every split that reaches the optimal bottleneck is a candidate; the predicted step time picks
  // among them (the DP alone keeps only one per state).
  const split: number[] = [];
  for (let k = stages, j = n; k > 1; k--) {
    const i = from[k]![j]!;
    split.unshift(i);
    j = i;
  }
  let chosen = evaluateSplit(units, split, microbatches, link);
  for (const alt of allSplits(n, stages)) {
    const r = evaluateSplit(units, alt, microbatches, link);
    if (r.bottleneckMs <= best + 1e-9 && r.predictedStepMs < chosen.predictedStepMs - 1e-9) chosen = r;
  }
  return chosen;
}

/** Every way to cut n units into k non-empty contiguous stages (for tie-breaks and tests). */
export function allSplits(n: number, k: number): number[][] {
  const out: number[][] = [];
  const rec = (start: number, left: number, acc: number[]) => {
    if (left === 0) {
      out.push(acc.slice());
      return;
    }
    for (let c = start; c <= n - left; c++) rec(c + 1, left - 1, [...acc, c]);
  };
  rec(1, k - 1, []);
  return out;
}

/**
 * Neurosurgeon (Kang et al., ASPLOS 2017): where to cut inference between a mobile device and a
 * server. Cut c (0..n) runs units [0, c) on the device, sends unit c-1's output (the input itself
 * for c = 0) up the link, and runs [c, n) on the server; c = n runs everything on the device.
 *
 *   latency = sum_{u<c} edge_u + transfer(c) + sum_{u>=c} server_u
 *   energy  = P_compute * sum_{u<c} edge_u + P_transmit * transfer(c) + P_idle * sum_{u>=c} server_u
 *
 * edge_u = slowdown * forward ms measured here; server_u = forward ms measured here.
 */
export interface PowerModel {
  /** device power while computing, watts */
  computeWatts: number;
  /** device power while its radio transmits, watts */
  transmitWatts: number;
  /** device power while it waits for the server, watts */
  idleWatts: number;
}

export const DEFAULT_POWER: PowerModel = { computeWatts: 2.5, transmitWatts: 1.3, idleWatts: 0.3 };

export interface EdgeCut {
  /** units [0, cut) on the device */
  cut: number;
  /** after which unit ("input" for 0) */
  after: string;
  edgeMs: number;
  transferMs: number;
  serverMs: number;
  latencyMs: number;
  energyMj: number;
}

export function edgeCloudCuts(units: readonly UnitCost[], inputBytes: number, slowdown: number, link: LinkCost, power: PowerModel = DEFAULT_POWER): EdgeCut[] {
  const out: EdgeCut[] = [];
  for (let c = 0; c <= units.length; c++) {
    let edge = 0;
    let server = 0;
    units.forEach((u, i) => {
      if (i < c) edge += slowdown * u.forwardMs;
      else server += u.forwardMs;
    });
    const bytes = c === units.length ? 0 : c === 0 ? inputBytes : units[c - 1]!.activationBytes;
    const t = bytes === 0 ? 0 : (bytes * 1000) / link.bandwidth + link.latencyMs;
    out.push({
      cut: c,
      after: c === 0 ? "input" : units[c - 1]!.name,
      edgeMs: edge,
      transferMs: t,
      serverMs: server,
      latencyMs: edge + t + server,
      // W x ms = mJ
      energyMj: power.computeWatts * edge + power.transmitWatts * t + power.idleWatts * server,
    });
  }
  return out;
}

export function bestEdgeCut(cuts: readonly EdgeCut[], objective: "latency" | "energy"): EdgeCut {
  let best = cuts[0]!;
  for (const c of cuts) {
    const v = objective === "latency" ? c.latencyMs : c.energyMj;
    const b = objective === "latency" ? best.latencyMs : best.energyMj;
    if (v < b) best = c;
  }
  return best;
}
