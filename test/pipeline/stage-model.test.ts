import { strict as assert } from "node:assert";
import { selectBackend } from "../../src/model/backend.js";
import { createModel } from "../../src/model/zoo.js";
import { chainedGradient, microBounds } from "../../src/pipeline/chain.js";
import { evenSplit, pipelineUnitCount, pipelineUnits, serverShardCount, stageBounds } from "../../src/pipeline/units.js";
import { gangTasks } from "../../src/cluster/redis/job-record.js";
import { MODELS } from "../../src/config/train-config.js";
import { setup, type Case } from "../model/helpers.js";

function relDiff(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / Math.max(den, 1e-12);
}

describe("pipeline stages in one process", function () {
  this.timeout(60_000);
  before(async () => {
    await selectBackend("cpu");
  });

  it("the static unit count of every zoo model is the count of its compiled units", () => {
    for (const name of MODELS) {
      const model = name === "linreg" ? createModel(name, [28, 28, 1], 1, "regression") : createModel(name, [28, 28, 1], 10, "classification");
      assert.equal(pipelineUnits(model).length, pipelineUnitCount(name), name);
      model.dispose();
    }
  });

  it("units cover every parameter key once, in order", () => {
    const model = createModel("cnn", [28, 28, 1], 10, "classification");
    const units = pipelineUnits(model);
    assert.deepEqual(units.map((u) => u.name), ["conv1+pool1", "conv2+pool2", "flatten+dense1", "dense2", "dense3"]);
    assert.equal(units[0]!.keys.start, 0);
    for (let i = 1; i < units.length; i++) assert.equal(units[i]!.keys.start, units[i - 1]!.keys.end);
    assert.equal(units[units.length - 1]!.keys.end, model.size);
    assert.deepEqual(units[1]!.outShape, [5, 5, 16]);
    model.dispose();
  });

  it("server shards per stage (per unit under --adaptive), and the cluster gang of such a run", () => {
    assert.equal(serverShardCount({ servers: 2 }), 2);
    assert.equal(serverShardCount({ servers: 2, comm: "allreduce" }), 0);
    assert.equal(serverShardCount({ servers: 2, parallelism: "model", stages: 3, model: "cnn" }), 6);
    assert.equal(serverShardCount({ servers: 1, parallelism: "hybrid", stages: 2, model: "cnn", adaptive: 0.5 }), 5);
    const gang = gangTasks({ servers: 1, workers: 4, comm: "ps", parallelism: "hybrid", stages: 2, model: "mlp", adaptive: 0 });
    assert.equal(gang.filter((t) => t.role === "server").length, 2);
    assert.equal(gang.filter((t) => t.role === "worker").length, 4);
  });

  it("stage bounds and micro-batch bounds", () => {
    assert.deepEqual(stageBounds([2, 4], 5), [[0, 2], [2, 4], [4, 5]]);
    assert.throws(() => stageBounds([2, 2], 5));
    assert.throws(() => stageBounds([5], 5));
    assert.deepEqual(evenSplit(3, 5), [2, 3]);
    assert.deepEqual(microBounds(10, 4), [[0, 2], [2, 5], [5, 7], [7, 10]]);
    assert.deepEqual(microBounds(2, 4), [[0, 1], [1, 2]]);
  });

  const cases: { c: Case; splits: number[][] }[] = [
    { c: { name: "mlp", shape: [12], k: 3, task: "classification", batch: 8 }, splits: [[1], [2], [1, 2]] },
    { c: { name: "cnn", shape: [12, 12, 1], k: 3, task: "classification", batch: 6 }, splits: [[2], [1, 3], [2, 4], [1, 2, 3, 4]] },
  ];
  for (const { c, splits } of cases) {
    for (const split of splits) {
      for (const m of [1, 3]) {
        it(`${c.name}: ${split.length + 1} stages cut after ${split.join(",")}, ${m} micro-batch(es) = the whole model's gradient`, () => {
          const { model, w, x, y } = setup(c, 5);
          const want = new Float32Array(model.size);
          const ref = model.gradient(x, y, c.batch, want);
          const got = new Float32Array(model.size);
          const r = chainedGradient(model, split, m, w, x, y, c.batch, got);
          assert.ok(relDiff(got, want) < 1e-5, `relative gradient difference ${relDiff(got, want)}`);
          assert.ok(Math.abs(r.loss - ref.loss) < 1e-5 * Math.max(1, Math.abs(ref.loss)), `loss ${r.loss} vs ${ref.loss}`);
          assert.equal(r.correct, ref.correct);
          // not a vacuous comparison: the gradient has weight on every stage
          for (const u of pipelineUnits(model)) {
            let s = 0;
            for (let i = u.keys.start; i < u.keys.end; i++) s += Math.abs(got[i]!);
            assert.ok(s > 0, `unit ${u.name} got a zero gradient`);
          }
          model.dispose();
        });
      }
    }
  }

  it("leaks no tensors", async () => {
    const tf = await import("@tensorflow/tfjs");
    const { model, w, x, y } = setup({ name: "cnn", shape: [12, 12, 1], k: 3, task: "classification", batch: 4 }, 2);
    const g = new Float32Array(model.size);
    chainedGradient(model, [2], 2, w, x, y, 4, g);
    const before = tf.memory().numTensors;
    chainedGradient(model, [2], 2, w, x, y, 4, g);
    assert.equal(tf.memory().numTensors, before);
    model.dispose();
  });
});
