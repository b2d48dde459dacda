import { strict as assert } from "node:assert";
import { parseBandwidth } from "../../src/cli/plan-command.js";
import { selectBackend } from "../../src/model/backend.js";
import { createModel } from "../../src/model/zoo.js";
import { pipelineUnits } from "../../src/pipeline/units.js";
import { allSplits, bestEdgeCut, edgeCloudCuts, evaluateSplit, planSplits, type UnitCost } from "../../src/planner/partition.js";
import { profileUnits } from "../../src/planner/profile.js";
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
  this.timeout(120_000);

  before(async () => {
    await selectBackend("cpu");
  });

  // How the planner's split compares with every split measured by running it is a timing
  // question: npm run bench:planner prints it. Here: the planner works on real profiles.
  for (const [name, shape, stages, micro] of [
    ["mlp", [784], 2, 32],
    ["cnn", [28, 28, 1], 3, 16],
  ] as const) {
    it(`${name}, ${stages} stages: every unit profiles to a positive cost, and the planner's split is the best one under those costs`, () => {
      const model = createModel(name, [...shape], 10, "classification");
      const units = pipelineUnits(model).length;
      const costs = profileUnits(model, micro, 3, 3);
      model.dispose();
      assert.equal(costs.length, units);
      for (const c of costs) {
        assert.ok(c.forwardMs > 0 && c.backwardMs > 0, `${c.name}: forward ${c.forwardMs} ms, backward ${c.backwardMs} ms`);
        assert.ok(c.activationBytes > 0 && c.params > 0, `${c.name}: ${c.activationBytes} activation bytes, ${c.params} parameters`);
      }
      const link = { bandwidth: Infinity, latencyMs: 0 };
      const plan = planSplits(costs, stages, 1, link);
      const best = Math.min(...allSplits(costs.length, stages).map((s) => evaluateSplit(costs, s, 1, link).bottleneckMs));
      assert.equal(plan.bottleneckMs, best);
      assert.equal(plan.splitAt.length, stages - 1);
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
