import { strict as assert } from "node:assert";
import { loadDataset } from "../../src/data/load.js";
import type { SyntheticClassificationDataset, SyntheticLinearDataset } from "../../src/data/synthetic.js";
import {
  makeSyntheticClassification,
  makeSyntheticLinear,
  syntheticLinearTruth,
  syntheticTeacher,
  teacherPredict,
} from "../../src/data/synthetic.js";

function sameArrays(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

describe("data/synthetic", () => {
  it("synthetic: shape, counts and determinism by seed", async () => {
    const a = (await loadDataset("synthetic", { seed: 42 })) as SyntheticClassificationDataset;
    const b = (await loadDataset("synthetic", { seed: 42 })) as SyntheticClassificationDataset;
    const c = (await loadDataset("synthetic", { seed: 43 })) as SyntheticClassificationDataset;
    assert.equal(a.task, "classification");
    assert.deepEqual(a.inputShape, [32]);
    assert.equal(a.numOutputs, 4);
    assert.equal(a.trainCount, 8192);
    assert.equal(a.testCount, 2048);
    assert.equal(a.trainX.length, 8192 * 32);
    assert.equal(a.testY.length, 2048);
    assert.ok(sameArrays(a.trainX, b.trainX) && sameArrays(a.trainY, b.trainY));
    assert.ok(sameArrays(a.testX, b.testX) && sameArrays(a.testY, b.testY));
    assert.ok(!sameArrays(a.trainX, c.trainX));
    assert.ok(!sameArrays(a.trainY, c.trainY));
    assert.ok(!sameArrays(a.trainX.subarray(0, 32), a.testX.subarray(0, 32)), "train and test are different draws");
    assert.deepEqual(a.teacher, syntheticTeacher(42));
  });

  it("synthetic: the teacher is 100% accurate (separable) and the classes are balanced enough", () => {
    const ds = makeSyntheticClassification({ seed: 5 });
    for (const [x, y, n] of [
      [ds.trainX, ds.trainY, ds.trainCount],
      [ds.testX, ds.testY, ds.testCount],
    ] as const) {
      const hist = [0, 0, 0, 0];
      for (let i = 0; i < n; i++) {
        assert.equal(teacherPredict(ds.teacher, x, i * 32), y[i]);
        hist[y[i] as number]! += 1;
      }
      for (const h of hist) assert.ok(h > n * 0.05, `class histogram ${hist.join(",")}`);
    }
    // x ~ N(0, 1)
    let s = 0;
    let s2 = 0;
    for (const v of ds.trainX) {
      s += v;
      s2 += v * v;
    }
    const mean = s / ds.trainX.length;
    const varc = s2 / ds.trainX.length - mean * mean;
    assert.ok(Math.abs(mean) < 0.02 && Math.abs(varc - 1) < 0.03, `mean ${mean} var ${varc}`);
  });

  it("synthetic-linear: y = x.w* + b* + N(0, 0.01^2), determined by the seed", async () => {
    const ds = (await loadDataset("synthetic-linear", { seed: 9 })) as SyntheticLinearDataset;
    const again = makeSyntheticLinear({ seed: 9 });
    const other = makeSyntheticLinear({ seed: 10 });
    assert.equal(ds.task, "regression");
    assert.deepEqual(ds.inputShape, [32]);
    assert.equal(ds.numOutputs, 1);
    assert.equal(ds.trainY.length, ds.trainCount);
    assert.ok(sameArrays(ds.trainX, again.trainX) && sameArrays(ds.trainY, again.trainY));
    assert.ok(!sameArrays(ds.trainY, other.trainY));
    const truth = syntheticLinearTruth(9);
    assert.deepEqual(ds.truth, truth);
    let sse = 0;
    for (let i = 0; i < ds.trainCount; i++) {
      let p = truth.b;
      for (let f = 0; f < 32; f++) p += (ds.trainX[i * 32 + f] as number) * (truth.w[f] as number);
      sse += (p - (ds.trainY[i] as number)) ** 2;
    }
    const rmse = Math.sqrt(sse / ds.trainCount);
    assert.ok(rmse > 0.008 && rmse < 0.012, `residual rmse ${rmse} should be the noise sigma 0.01`);
  });

  it("limits keep the first samples of the same data", async () => {
    const full = await loadDataset("synthetic", { seed: 3 });
    const cut = await loadDataset("synthetic", { seed: 3, trainLimit: 100, testLimit: 50 });
    assert.equal(cut.trainCount, 100);
    assert.equal(cut.testCount, 50);
    assert.ok(sameArrays(cut.trainX, full.trainX.subarray(0, 3200)));
    assert.ok(sameArrays(cut.testY, full.testY.subarray(0, 50)));
    const lin = await loadDataset("synthetic-linear", { seed: 3, trainLimit: 10 });
    assert.equal(lin.trainY.length, 10);
    await assert.rejects(loadDataset("synthetic", { seed: 3, trainLimit: -1 }), /--train-limit/);
  });
});
