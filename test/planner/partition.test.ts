import { strict as assert } from "node:assert";
import { parseBandwidth } from "../../src/cli/plan-command.js";
import { selectBackend } from "../../src/model/backend.js";
import { createModel } from "../../src/model/zoo.js";
import { StageModel } from "../../src/pipeline/stage-model.js";
import { pipelineUnits, stageBounds } from "../../src/pipeline/units.js";
import { allSplits, bestEdgeCut, edgeCloudCuts, evaluateSplit, planSplits, type UnitCost } from "../../src/planner/partition.js";
import { profileUnits } from "../../src/planner/profile.js";
import { tensorFrom } from "../../src/model/transfer.js";
import { Rng } from "../../src/util/rng.js";

function randomUnits(rng: Rng, n: number): UnitCost[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `u${i}`,
    forwardMs: rng.next() * 10,
    backwardMs: rng.next() * 20,
    activationBytes: Math.floor(rng.next() * 4e6),
    params: Math.floor(rng.next() * 1e5),
  }));
}

describe("planner: split points", () => {
  it("the dynamic program finds the bottleneck an exhaustive search finds (random cost tables)", () => {
    const rng = new Rng(7);
    let cases = 0;
    for (let t = 0; t < 300; t++) {
      const n = 1 + Math.floor(rng.next() * 9);
      const k = 1 + Math.floor(rng.next() * n);
      const units = randomUnits(rng, n);
      const link = { bandwidth: 1e6 + rng.next() * 1e9, latencyMs: rng.next() };
      const m = 1 + Math.floor(rng.next() * 8);
      const plan = planSplits(units, k, m, link);
      const all = allSplits(n, k).map((s) => evaluateSplit(units, s, m, link));
      const best = Math.min(...all.map((r) => r.bottleneckMs));
      assert.ok(Math.abs(plan.bottleneckMs - best) < 1e-9, `n=${n} k=${k}: DP ${plan.bottleneckMs} vs exhaustive ${best}`);
      // and among the optimal bottlenecks it takes the smallest predicted step
      const ties = all.filter((r) => r.bottleneckMs <= best + 1e-9).map((r) => r.predictedStepMs);
      assert.ok(plan.predictedStepMs <= Math.min(...ties) + 1e-9);
      assert.equal(plan.splitAt.length, k - 1);
      cases++;
    }
    assert.equal(cases, 300);
  });

  it("enumerates every split once", () => {
    assert.deepEqual(allSplits(4, 2), [[1], [2], [3]]);
    assert.deepEqual(allSplits(5, 3), [[1, 2], [1, 3], [1, 4], [2, 3], [2, 4], [3, 4]]);
    assert.equal(allSplits(9, 4).length, 56);
  });

  it("a slow link moves the cut to the smaller activation", () => {
    const units: UnitCost[] = [
      { name: "a", forwardMs: 1, backwardMs: 1, activationBytes: 8e6, params: 1 },
      { name: "b", forwardMs: 1, backwardMs: 1, activationBytes: 1e3, params: 1 },
      { name: "c", forwardMs: 2, backwardMs: 2, activationBytes: 10, params: 1 },
    ];
    assert.deepEqual(planSplits(units, 2, 1, { bandwidth: 1e12, latencyMs: 0 }).splitAt, [2]);
    assert.deepEqual(planSplits(units, 2, 1, { bandwidth: 1e6, latencyMs: 0 }).splitAt, [2]);
    // with compute balanced at cut 1 but a huge activation there, a slow link still picks cut 2
    const fast = planSplits([{ ...units[0]!, forwardMs: 3, backwardMs: 3 }, units[1]!, units[2]!], 2, 1, { bandwidth: 1e12, latencyMs: 0 });
    const slow = planSplits([{ ...units[0]!, forwardMs: 3, backwardMs: 3 }, units[1]!, units[2]!], 2, 1, { bandwidth: 1e6, latencyMs: 0 });
    assert.deepEqual(fast.splitAt, [1]);
    assert.deepEqual(slow.splitAt, [2]);
  });

  it("edge-cloud: latency and energy per cut, best by either objective", () => {
    const units: UnitCost[] = [
      { name: "conv", forwardMs: 10, backwardMs: 0, activationBytes: 1e6, params: 1 },
      { name: "pool", forwardMs: 1, backwardMs: 0, activationBytes: 1e3, params: 1 },
      { name: "fc", forwardMs: 1, backwardMs: 0, activationBytes: 40, params: 1 },
    ];
    const link = { bandwidth: 1e5, latencyMs: 5 }; // 100 kB/s
    const cuts = edgeCloudCuts(units, 5e5, 4, link, { computeWatts: 2, transmitWatts: 1, idleWatts: 0.5 });
    assert.equal(cuts.length, 4);
    // cut 0: upload 500 kB = 5000 ms + 5; server 12 ms
    assert.ok(Math.abs(cuts[0]!.latencyMs - (5005 + 12)) < 1e-9);
    // cut 2: device 4*(10+1) = 44 ms, upload 1 kB = 10 ms + 5, server 1 ms
    assert.ok(Math.abs(cuts[2]!.latencyMs - (44 + 15 + 1)) < 1e-9);
    assert.ok(Math.abs(cuts[2]!.energyMj - (2 * 44 + 1 * 15 + 0.5 * 1)) < 1e-9);
    // everything on the device: 48 ms, no transfer
    assert.ok(Math.abs(cuts[3]!.latencyMs - 48) < 1e-9);
    assert.equal(bestEdgeCut(cuts, "latency").cut, 3);
    // a fast link sends the input to the server
    const fast = edgeCloudCuts(units, 5e5, 4, { bandwidth: 1e10, latencyMs: 0 });
    assert.equal(bestEdgeCut(fast, "latency").cut, 0);
    assert.equal(bestEdgeCut(fast, "energy").cut, 0);
  });

  it("parses link rates", () => {
    assert.equal(parseBandwidth("10Mbit"), 1.25e6);
    assert.equal(parseBandwidth("1Gbps"), 1.25e8);
    assert.equal(parseBandwidth("50MB/s"), 5e7);
    assert.throws(() => parseBandwidth("fast"), /--bandwidth/);
    assert.throws(() => parseBandwidth("10"), /--bandwidth/);
  });
});

describe("planner: on the real models", function () {
  this.timeout(180_000);
  before(async () => {
    await selectBackend("cpu");
  });

  /**
   * Measure every split by running it: each stage's forward + backward of the micro-batch, the
   * stages of all splits timed in interleaved rounds (median), the bottleneck stage per split.
   */
  function measureSplits(name: "mlp" | "cnn", shape: number[], stages: number, micro: number): { split: number[]; bottleneckMs: number }[] {
    const model = createModel(name, shape, 10, "classification");
    const units = pipelineUnits(model);
    const w = model.init(3);
    const rng = new Rng(3);
    const grad = new Float32Array(model.size);
    const scratch = new Float32Array(model.size);
    const splits = allSplits(units.length, stages);
    const stageKey = (a: number, b: number) => `${a}-${b}`;
    const samples = new Map<string, number[]>();
    const stageModels = new Map<string, { sm: StageModel; x: Float32Array; dy: Float32Array }>();
    for (const s of splits)
      for (const [a, b] of stageBounds(s, units.length)) {
        const k = stageKey(a, b);
        if (stageModels.has(k)) continue;
        const sm = new StageModel(model, units, a, b);
        sm.setWeights(w);
        stageModels.set(k, { sm, x: Float32Array.from({ length: micro * sm.inSize }, () => rng.next()), dy: Float32Array.from({ length: micro * sm.outSize }, () => rng.normal() * 0.01) });
        samples.set(k, []);
      }
    for (let round = 0; round < 8; round++) {
      for (const [k, { sm, x, dy }] of stageModels) {
        sm.beginStep();
        const t0 = performance.now();
        const r = sm.forward(x, micro);
        sm.read(r.y);
        sm.backward(r.trace, tensorFrom(dy, [micro, ...sm.outShape]), grad, scratch);
        const t1 = performance.now();
        sm.endStep();
        if (round > 0) samples.get(k)!.push(t1 - t0);
      }
    }
    const med = (xs: number[]) => xs.slice().sort((p, q) => p - q)[Math.floor(xs.length / 2)]!;
    const out = splits.map((s) => ({ split: s, bottleneckMs: Math.max(...stageBounds(s, units.length).map(([a, b]) => med(samples.get(stageKey(a, b))!))) }));
    for (const { sm } of stageModels.values()) sm.dispose();
    model.dispose();
    return out;
  }

  for (const [name, shape, stages, micro] of [
    ["mlp", [784], 2, 32],
    ["cnn", [28, 28, 1], 3, 16],
  ] as const) {
    it(`${name}, ${stages} stages: the planner's split is within 10% of the fastest split measured by trying each`, () => {
      const model = createModel(name, [...shape], 10, "classification");
      const costs = profileUnits(model, micro, 7, 3);
      model.dispose();
      // compute only (an infinitely fast link), as the measurement
      const plan = planSplits(costs, stages, 1, { bandwidth: Infinity, latencyMs: 0 });
      const measured = measureSplits(name, [...shape], stages, micro);
      const best = Math.min(...measured.map((m) => m.bottleneckMs));
      const chosen = measured.find((m) => m.split.join(",") === plan.splitAt.join(","))!;
      assert.ok(chosen, `the planner's split ${plan.splitAt.join(",")} is one of the splits`);
      assert.ok(chosen.bottleneckMs <= best * 1.1, `planner's split ${plan.splitAt.join(",")}: ${chosen.bottleneckMs.toFixed(3)} ms, fastest ${best.toFixed(3)} ms (${JSON.stringify(measured)})`);
    });
  }
});

describe("planner: adaptive re-planning", () => {
  const units: UnitCost[] = [
    { name: "a", forwardMs: 3, backwardMs: 3, activationBytes: 8e6, params: 1 },
    { name: "b", forwardMs: 1, backwardMs: 1, activationBytes: 1e3, params: 1 },
    { name: "c", forwardMs: 2, backwardMs: 2, activationBytes: 10, params: 1 },
  ];

  it("re-plans only when the bandwidth moves past the threshold, and reports only a changed split", async () => {
    const { AdaptivePlanner } = await import("../../src/planner/adaptive.js");
    const fast = planSplits(units, 2, 1, { bandwidth: 1e12, latencyMs: 0 });
    const ap = new AdaptivePlanner(units, 2, 1, 0.5, { splitAt: fast.splitAt, bandwidth: 1e12 });
    assert.deepEqual(ap.splitAt, [1]);
    assert.equal(ap.observe({ bandwidth: 0.6e12, latencyMs: 0 }), null, "40% down: within the threshold");
    const slow = ap.observe({ bandwidth: 1e6, latencyMs: 0 });
    assert.ok(slow, "a 1e6x slower link moves the cut away from the 8 MB activation");
    assert.deepEqual(slow.splitAt, [2]);
    assert.equal(ap.observe({ bandwidth: 1.2e6, latencyMs: 0 }), null, "20% up from the new baseline");
    assert.deepEqual(ap.observe({ bandwidth: 1e12, latencyMs: 0 })?.splitAt, [1]);
  });

  it("a given split is re-planned at the first measurement", async () => {
    const { AdaptivePlanner } = await import("../../src/planner/adaptive.js");
    const ap = new AdaptivePlanner(units, 2, 1, 0.5, { splitAt: [2], bandwidth: null });
    assert.deepEqual(ap.observe({ bandwidth: 1e12, latencyMs: 0 })?.splitAt, [1]);
    assert.equal(ap.observe({ bandwidth: 1e12, latencyMs: 0 }), null);
  });
});
