import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { TrainConfig } from "../../src/config/train-config.js";
import { processesOf } from "../helpers/processes.js";
import { maxAbsDiff, savedWeights, smallConfig, train } from "../helpers/run.js";

/** The same run as data parallelism with `replicas` workers and as a pipeline: the weights must agree. */
function pair(over: Partial<TrainConfig>, pipe: Partial<TrainConfig>): [TrainConfig, TrainConfig] {
  const base: Partial<TrainConfig> = { mode: "sync", optimizer: "sgd", lr: 0.2, maxSteps: 8, batchSize: 12, model: "mlp", trainLimit: 600, ...over };
  const replicas = pipe.replicas ?? 1;
  return [smallConfig({ ...base, workers: replicas }), smallConfig({ ...base, ...pipe, workers: replicas * (pipe.stages ?? 1) })];
}

describe("model and hybrid parallelism, end to end (real processes, real sockets)", function () {
  this.timeout(240_000);

  for (const [stages, microbatches, splitAt] of [
    [2, 1, [1]],
    [3, 4, [1, 2]],
    [2, 3, []],
  ] as const) {
    // the planner's case runs over tcp, the others over ipc
    const transport = splitAt.length ? "ipc" : "tcp";
    it(`mlp as a ${stages}-stage pipeline with ${microbatches} micro-batch(es)${splitAt.length ? "" : " (planner's split)"} over ${transport} trains the weights of single-process sync`, async () => {
      const [dp, mp] = pair({ transport }, { parallelism: "model", stages, microbatches, splitAt: [...splitAt] });
      const sd = await train(dp);
      const sm = await train(mp);
      assert.equal(sm.steps, dp.maxSteps);
      assert.equal(sm.samples, sd.samples);
      const diff = maxAbsDiff(savedWeights(mp.out), savedWeights(dp.out));
      assert.ok(diff < 1e-4, `max |w_pipeline - w_data| = ${diff}`);
      // the weights moved: the comparison is not between two copies of the initial weights
      assert.ok(maxAbsDiff(savedWeights(mp.out), new Float32Array(savedWeights(mp.out).length)) > 0);
      assert.equal(sm.parallelism, "model");
      assert.ok(sm.pipeline);
      assert.equal(sm.pipeline.stages, stages);
      assert.equal(sm.pipeline.microbatches, microbatches);
      assert.equal(sm.pipeline.splitAt.length, stages - 1);
      assert.equal(sm.pipeline.chosenBy, splitAt.length ? "--split-at" : "planner");
      assert.ok(Math.abs(sm.pipeline.bubbleFractionIdeal - (stages - 1) / (microbatches + stages - 1)) < 1e-12);
      assert.ok(sm.pipeline.bubbleFraction >= 0 && sm.pipeline.bubbleFraction < 1);
      assert.ok(sm.pipeline.predictedStepMs > 0 && sm.pipeline.measuredStepMs > 0);
      assert.equal(sm.workerStats.length, stages);
      assert.deepEqual(sm.workerStats.map((w) => w.pipeline?.stage), Array.from({ length: stages }, (_, k) => k));
      assert.equal(sm.servers, stages, "one shard per stage with --servers 1");
      assert.deepEqual([sm.stages, sm.microbatches, sm.replicas, sm.splitAt, sm.bubbleFraction], [stages, microbatches, 1, sm.pipeline.splitAt, sm.pipeline.bubbleFraction]);
    });
  }

  it("cnn on MNIST as a 3-stage pipeline with 2 micro-batches trains the weights of single-process sync", async () => {
    const [dp, mp] = pair({ model: "cnn", dataset: "mnist", trainLimit: 240, testLimit: 100, maxSteps: 4, batchSize: 8, lr: 0.05 }, { parallelism: "model", stages: 3, microbatches: 2, splitAt: [2, 4] });
    await train(dp);
    const sm = await train(mp);
    const diff = maxAbsDiff(savedWeights(mp.out), savedWeights(dp.out));
    assert.ok(diff < 1e-4, `max |w_pipeline - w_data| = ${diff}`);
    assert.deepEqual(sm.pipeline?.stageUnits, [["conv1+pool1", "conv2+pool2"], ["flatten+dense1", "dense2"], ["dense3"]]);
  });

  it("hybrid sync (2 replicas of a 2-stage pipeline, 2 shards per stage) matches sync data parallelism with 2 workers", async () => {
    const [dp, hp] = pair({ servers: 2 }, { parallelism: "hybrid", stages: 2, replicas: 2, microbatches: 2, splitAt: [1] });
    const sd = await train(dp);
    const sh = await train(hp);
    assert.equal(sh.steps, sd.steps);
    assert.equal(sh.globalBatch, sd.globalBatch);
    const diff = maxAbsDiff(savedWeights(hp.out), savedWeights(dp.out));
    assert.ok(diff < 1e-4, `max |w_hybrid - w_data| = ${diff}`);
    assert.equal(sh.workers, 4);
    assert.equal(sh.servers, 4);
    assert.deepEqual(sh.workerStats.map((w) => [w.pipeline?.replica, w.pipeline?.stage]), [[0, 0], [0, 1], [1, 0], [1, 1]]);
  });

  it("hybrid with --comm allreduce (the replicas of each stage allreduce, no shards) matches sync data parallelism with 2 workers, evaluations included", async () => {
    const [dp, hp] = pair({ evalEvery: 3 }, { parallelism: "hybrid", stages: 2, replicas: 2, microbatches: 2, splitAt: [1], comm: "allreduce" });
    const sd = await train(dp);
    const sh = await train(hp);
    const diff = maxAbsDiff(savedWeights(hp.out), savedWeights(dp.out));
    assert.ok(diff < 1e-4, `max |w_hybrid_allreduce - w_data| = ${diff}`);
    assert.equal(sh.comm, "allreduce");
    assert.equal(sh.servers, 0);
    // the same exact-step evaluations, on the same weights
    assert.deepEqual(sh.evals.map((e) => e.globalStep), sd.evals.map((e) => e.globalStep));
    sh.evals.forEach((e, i) => assert.ok(Math.abs(e.testAccuracy - sd.evals[i]!.testAccuracy) < 0.01, `eval ${i}: ${e.testAccuracy} vs ${sd.evals[i]!.testAccuracy}`));
  });

  it("--adaptive moves a given split during the run (shards per unit) and still trains the weights of single-process sync", async () => {
    const [dp, ap] = pair({ dataset: "mnist", trainLimit: 600, testLimit: 100, maxSteps: 8 }, { parallelism: "model", stages: 2, microbatches: 2, splitAt: [2], adaptive: 0.5, adaptiveEvery: 3 });
    await train(dp);
    const sa = await train(ap);
    const diff = maxAbsDiff(savedWeights(ap.out), savedWeights(dp.out));
    assert.ok(diff < 1e-4, `max |w_adaptive - w_data| = ${diff}`);
    // the given split [2] puts dense1 and dense2 together; the planner moves dense2 to stage 1
    const replans = sa.pipeline?.replans ?? [];
    assert.ok(replans.length >= 1, "the split was re-planned");
    assert.equal(replans[0]!.step, 3);
    assert.deepEqual(replans[0]!.splitAt, [1]);
    assert.deepEqual(sa.splitAt, replans[replans.length - 1]!.splitAt);
    assert.equal(sa.servers, 3, "one shard per unit under --adaptive");
    assert.deepEqual(sa.workerStats.map((w) => [w.pipeline?.unitStart, w.pipeline?.unitEnd]), [[0, 1], [1, 3]]);
  });

  it("a pipeline that reaches --target-accuracy stops every stage of every replica at the same step (sync, and async with the stop marker)", async () => {
    for (const mode of ["sync", "async"] as const) {
      const cfg = smallConfig({ mode, parallelism: "hybrid", stages: 3, replicas: 2, workers: 6, microbatches: 2, splitAt: [1, 2], model: "mlp", epochs: 20, targetAccuracy: 0.6, evalEvery: 5 });
      const s = await train(cfg);
      assert.equal(s.stoppedEarly, true, mode);
      assert.ok(s.timeToTargetSeconds !== null);
      for (const r of [0, 1]) {
        const steps = s.workerStats.filter((w) => w.pipeline?.replica === r).map((w) => w.steps);
        assert.equal(new Set(steps).size, 1, `${mode}: replica ${r}'s stages took ${steps.join(", ")} steps`);
      }
      if (mode === "sync") assert.equal(s.staleness.max, 0);
    }
  });

  it("a stage that dies fails the run with an error that names it", async () => {
    const cfg = smallConfig({ mode: "sync", parallelism: "model", stages: 3, workers: 3, microbatches: 2, splitAt: [1, 2], model: "mlp", epochs: 500 });
    const run = train(cfg);
    const procs = await processesOf(cfg.out);
    await new Promise((r) => setTimeout(r, 1500));
    const victim = procs.find((p) => p.role === "worker" && p.rank === 1)!;
    process.kill(victim.pid, "SIGKILL");
    await assert.rejects(run, /worker 1\b/);
    const summary = JSON.parse(readFileSync(join(cfg.out, "summary.json"), "utf8")) as { status: string; error: string };
    assert.equal(summary.status, "failed");
    assert.match(summary.error, /worker 1\b/);
  });
});

describe("tensor parallelism, end to end (real processes, real sockets)", function () {
  this.timeout(240_000);

  for (const T of [2, 3]) {
    it(`mlp with its dense layers split over ${T} workers trains the weights of single-process sync`, async () => {
      const base: Partial<TrainConfig> = { mode: "sync", optimizer: "sgd", lr: 0.2, maxSteps: 6, batchSize: 12, model: "mlp", trainLimit: 600 };
      const dp = smallConfig({ ...base, workers: 1 });
      const tp = smallConfig({ ...base, parallelism: "tensor", workers: T, servers: 2 });
      const sd = await train(dp);
      const st = await train(tp);
      assert.equal(st.parallelism, "tensor");
      assert.equal(st.steps, sd.steps);
      assert.equal(st.samples, sd.samples);
      const diff = maxAbsDiff(savedWeights(tp.out), savedWeights(dp.out));
      assert.ok(diff < 1e-4, `max |w_tensor - w_data| = ${diff}`);
      assert.equal(st.workerStats.length, T);
    });
  }
});
