import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { OptimizerName } from "../../src/config/train-config.js";
import { ShardBatcher } from "../../src/data/batcher.js";
import { loadDataset } from "../../src/data/load.js";
import { partitionIndices } from "../../src/data/partition.js";
import { selectBackend } from "../../src/model/backend.js";
import { createModel } from "../../src/model/zoo.js";
import { learningRate } from "../../src/ps/lr-schedule.js";
import { createOptimizer } from "../../src/ps/optimizer.js";
import { syntheticLinearTruth } from "../../src/data/synthetic.js";
import { deriveSeed } from "../../src/util/rng.js";
import { maxAbsDiff, savedWeights, smallConfig, train } from "../helpers/run.js";

/** Single-process SGD on the concatenation of the workers' batches: what BSP must reproduce. */
async function singleProcessReference(cfg: ReturnType<typeof smallConfig>): Promise<Float32Array> {
  await selectBackend(cfg.backend);
  const ds = await loadDataset(cfg.dataset, { seed: cfg.seed, trainLimit: cfg.trainLimit, testLimit: cfg.testLimit });
  const parts = partitionIndices(ds.trainY, ds.trainCount, cfg.workers, cfg.partition, cfg.seed, ds.task);
  const batchers = parts.map((p, r) => new ShardBatcher(ds, p, cfg.batchSize, deriveSeed(cfg.seed, 0x5eed, r)));
  const model = createModel(cfg.model, ds.inputShape, ds.numOutputs, ds.task);
  const w = model.init(cfg.seed);
  const opt = createOptimizer({ ...cfg, totalSteps: cfg.maxSteps }, model.size);
  const xs = batchers[0]!.xSize;
  const ys = batchers[0]!.ySize;
  const gx = new Float32Array(cfg.workers * cfg.batchSize * xs);
  const gy = new Float32Array(cfg.workers * cfg.batchSize * ys);
  const g = new Float32Array(model.size);
  for (let step = 0; step < cfg.maxSteps; step++) {
    let n = 0;
    for (const b of batchers) {
      const batch = b.nextBatch();
      gx.set(batch.x.subarray(0, batch.size * xs), n * xs);
      gy.set(batch.y.subarray(0, batch.size * ys), n * ys);
      n += batch.size;
    }
    model.setWeights(w);
    model.gradient(gx.subarray(0, n * xs), gy.subarray(0, n * ys), n, g);
    opt.apply(w, g, 1, learningRate({ ...cfg, totalSteps: cfg.maxSteps }, step));
  }
  model.dispose();
  return w;
}

describe("training modes, end to end (real processes, real sockets)", function () {
  this.timeout(180_000);

  for (const optimizer of ["sgd", "momentum"] as OptimizerName[]) {
    it(`sync with 3 workers and 2 shards reproduces single-process ${optimizer} with batch 3b`, async () => {
      const cfg = smallConfig({ mode: "sync", workers: 3, servers: 2, optimizer, lr: 0.2, momentum: 0.9, maxSteps: 12, model: "mlp", batchSize: 8, trainLimit: 600 });
      const summary = await train(cfg);
      assert.equal(summary.steps, 12);
      const got = savedWeights(cfg.out);
      const want = await singleProcessReference(cfg);
      const diff = maxAbsDiff(got, want);
      assert.ok(diff < 1e-4, `max |w_ps - w_ref| = ${diff}`);
      assert.equal(summary.staleness.max, 0);
    });
  }

  it("sync gives the same weights bit for bit over shm and ipc, and counts the same tensor bytes", async () => {
    const runs = [];
    for (const transport of ["shm", "ipc"] as const) {
      const cfg = smallConfig({ mode: "sync", workers: 2, servers: 2, transport, maxSteps: 10, model: "mlp", batchSize: 8, trainLimit: 400 });
      const summary = await train(cfg);
      const config = JSON.parse(readFileSync(join(cfg.out, "config.json"), "utf8")) as { transport: string };
      assert.equal(config.transport, transport, "config.json records the transport the run used");
      runs.push({ transport, weights: savedWeights(cfg.out), summary });
    }
    const [shm, ...others] = runs;
    for (const o of others) {
      assert.equal(maxAbsDiff(shm!.weights, o.weights), 0, `shm vs ${o.transport}`);
      // the same tensors, counted where they went (files or frames): within the 8-byte references
      const workerSent = (s: typeof o.summary) => s.workerStats.reduce((a, w) => a + w.bytesSent, 0);
      const steps = shm!.summary.steps * 2 * 2; // steps x workers x shards messages
      assert.ok(Math.abs(workerSent(shm!.summary) - workerSent(o.summary)) <= 8 * (steps + 4), `${workerSent(shm!.summary)} vs ${workerSent(o.summary)} bytes`);
    }
  });

  it("allreduce (3 workers, ring) gives the same weights bit for bit over shm and ipc", async () => {
    const weights = [];
    for (const transport of ["shm", "ipc"] as const) {
      const cfg = smallConfig({ mode: "sync", comm: "allreduce", allreduceAlgo: "ring", workers: 3, transport, maxSteps: 10, model: "mlp", batchSize: 8, trainLimit: 400 });
      await train(cfg);
      weights.push(savedWeights(cfg.out));
    }
    assert.equal(maxAbsDiff(weights[0]!, weights[1]!), 0);
  });

  it("ssp never lets a read see a worker more than s clocks behind, and does hold fast workers back", async () => {
    const s = 2;
    const cfg = smallConfig({ mode: "ssp", staleness: s, workers: 3, servers: 2, maxSteps: 30, slow: { 0: 4 } });
    const summary = await train(cfg);
    assert.ok(summary.readGap.max <= s, `read gap ${summary.readGap.max} > s = ${s}`);
    assert.ok(summary.readGap.max >= 1, "with a straggler some reads ran ahead (the bound was exercised)");
    assert.ok(summary.readsWaited > 0, "fast workers were held back by the slow one");
  });

  it("ssp with s = 0 matches sync (SGD)", async () => {
    const base = { workers: 3, servers: 1, maxSteps: 10, optimizer: "sgd" as const, lr: 0.3 };
    const a = smallConfig({ ...base, mode: "sync" });
    const b = smallConfig({ ...base, mode: "ssp", staleness: 0 });
    await train(a);
    const sb = await train(b);
    assert.equal(sb.readGap.max, 0);
    const diff = maxAbsDiff(savedWeights(a.out), savedWeights(b.out));
    assert.ok(diff < 1e-5, `sync vs ssp(0): ${diff}`);
  });

  it("async records staleness and converges on the synthetic task", async () => {
    const cfg = smallConfig({ mode: "async", workers: 4, servers: 2, epochs: 3, optimizer: "momentum", lr: 0.2, slow: { 1: 3 } });
    const summary = await train(cfg);
    assert.ok(summary.staleness.max > 0, "stale gradients were applied");
    assert.ok(summary.staleness.mean > 0);
    assert.ok(summary.testAccuracy > 0.9, `test accuracy ${summary.testAccuracy}`);
    const lines = readFileSync(join(cfg.out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; staleness?: number });
    assert.ok(lines.some((l) => l.type === "step" && (l.staleness ?? 0) > 0));
    assert.ok(lines.some((l) => l.type === "eval"));
  });

  it("async --async-overlap on: one worker's every gradient is one step stale, every step is pushed once, and it converges", async () => {
    const cfg = smallConfig({ mode: "async", workers: 1, servers: 2, epochs: 2, optimizer: "sgd", lr: 0.3, asyncOverlap: "on" });
    const summary = await train(cfg);
    // Step k's gradient is computed on step k-1's weights: the shards measure staleness 1 (0 for the first).
    const steps = readFileSync(join(cfg.out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; step?: number; staleness?: number }).filter((l) => l.type === "step");
    assert.deepEqual(steps.map((l) => l.step), [...Array(summary.stepsPerWorker).keys()], "every step reported once, in order");
    assert.equal(steps[0]!.staleness, 0);
    assert.ok(steps.slice(1).every((l) => l.staleness === 1), `staleness ${[...new Set(steps.map((l) => l.staleness))].join(",")}`);
    assert.equal(summary.staleness.max, 1);
    assert.equal(summary.steps, summary.stepsPerWorker);
    assert.ok(summary.testAccuracy > 0.9, `test accuracy ${summary.testAccuracy}`);
  });

  it("async linear regression converges to the known optimum", async () => {
    const cfg = smallConfig({ mode: "async", workers: 3, servers: 2, dataset: "synthetic-linear", model: "linreg", epochs: 4, optimizer: "sgd", lr: 0.3 });
    const summary = await train(cfg);
    assert.equal(summary.task, "regression");
    const truth = syntheticLinearTruth(cfg.seed);
    const w = savedWeights(cfg.out);
    const want = Float32Array.from([...truth.w, truth.b]);
    const diff = maxAbsDiff(w, want);
    assert.ok(diff < 0.02, `max |w - w*| = ${diff}`);
    assert.ok(summary.testLoss < 3 * truth.noise ** 2 + 1e-4, `test MSE ${summary.testLoss}`);
  });

  it("sync evaluates at exact steps, so a run that stops at a target accuracy is reproducible", async () => {
    const base = { mode: "sync" as const, workers: 3, servers: 2, epochs: 3, evalEvery: 7, targetAccuracy: 0.9, lr: 0.3, slow: { 1: 2 } };
    const a = smallConfig(base);
    const b = smallConfig({ ...base, slow: { 2: 3 } });
    const sa = await train(a);
    const sb = await train(b);
    assert.ok(sa.timeToTargetSeconds !== null && sa.stoppedEarly, "the target was reached before the end");
    assert.deepEqual(sa.evals.map((e) => e.globalStep), sb.evals.map((e) => e.globalStep));
    assert.ok(sa.evals.slice(0, -1).every((e, i) => e.globalStep === 7 * (i + 1)), `eval steps ${sa.evals.map((e) => e.globalStep)}`);
    assert.equal(sa.steps, sb.steps, "both stopped after the same step");
    assert.equal(sa.steps, sa.evals[sa.evals.length - 2]!.globalStep, "stopped exactly at the evaluation that reached the target");
    assert.equal(maxAbsDiff(savedWeights(a.out), savedWeights(b.out)), 0, "same weights, bit for bit");
    assert.equal(sa.testAccuracy, sa.evals[sa.evals.length - 2]!.testAccuracy);
  });
});
