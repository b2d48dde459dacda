import { strict as assert } from "node:assert";
import { loadDataset } from "../../src/data/load.js";
import { MNIST_TEST_COUNT, MNIST_TRAIN_COUNT } from "../../src/data/mnist.js";

describe("data/mnist", () => {
  it("loads 60000/10000 samples of 28x28x1 in [0, 1] with labels 0..9", async () => {
    const ds = await loadDataset("mnist", { seed: 7 });
    assert.equal(ds.name, "mnist");
    assert.equal(ds.task, "classification");
    assert.deepEqual(ds.inputShape, [28, 28, 1]);
    assert.equal(ds.numOutputs, 10);
    assert.equal(ds.trainCount, MNIST_TRAIN_COUNT);
    assert.equal(ds.testCount, MNIST_TEST_COUNT);
    assert.equal(ds.trainX.length, 60000 * 784);
    assert.equal(ds.testX.length, 10000 * 784);
    assert.equal(ds.trainY.length, 60000);
    assert.equal(ds.testY.length, 10000);
    for (const x of [ds.trainX, ds.testX]) {
      let min = Infinity;
      let max = -Infinity;
      let sum = 0;
      for (const v of x) {
        if (v < min) min = v;
        if (v > max) max = v;
        sum += v;
      }
      assert.equal(min, 0);
      assert.equal(max, 1);
      const mean = sum / x.length;
      assert.ok(mean > 0.1 && mean < 0.15, `mean pixel ${mean} (MNIST's is about 0.13)`);
    }
    for (const y of [ds.trainY, ds.testY]) {
      const hist = new Array<number>(10).fill(0);
      for (const v of y) {
        assert.ok(Number.isInteger(v) && v >= 0 && v <= 9, `label ${v}`);
        hist[v] = (hist[v] as number) + 1;
      }
      for (const h of hist) assert.ok(h > y.length * 0.08, `every digit is common: ${hist.join(",")}`);
    }
    // the well-known first training labels of MNIST
    assert.deepEqual(Array.from(ds.trainY.subarray(0, 8)), [5, 0, 4, 1, 9, 2, 1, 3]);
    assert.deepEqual(Array.from(ds.testY.subarray(0, 4)), [7, 2, 1, 0]);
  });

  it("limits convert only the first N samples", async () => {
    const full = await loadDataset("mnist", { seed: 1, trainLimit: 0, testLimit: 0 });
    const ds = await loadDataset("mnist", { seed: 1, trainLimit: 100, testLimit: 10 });
    assert.equal(ds.trainCount, 100);
    assert.equal(ds.testCount, 10);
    assert.equal(ds.trainX.length, 100 * 784);
    assert.equal(ds.numOutputs, 10);
    assert.deepEqual(ds.trainX, full.trainX.subarray(0, 100 * 784));
    assert.deepEqual(ds.testY, full.testY.subarray(0, 10));
  });
});
