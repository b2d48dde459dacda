import { strict as assert } from "node:assert";
import { ShardBatcher } from "../../src/data/batcher.js";

/** n samples of 3 floats: sample i is [i, i + 0.25, i + 0.5]; its label is i % 7. */
function data(n: number) {
  const trainX = new Float32Array(n * 3);
  const trainY = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    trainX[i * 3] = i;
    trainX[i * 3 + 1] = i + 0.25;
    trainX[i * 3 + 2] = i + 0.5;
    trainY[i] = i % 7;
  }
  return { trainX, trainY, trainCount: n };
}

function range(from: number, to: number): Uint32Array {
  return Uint32Array.from({ length: to - from }, (_, i) => from + i);
}

describe("data/batcher", () => {
  it("reuses its buffers, copies the right samples and covers the shard each epoch", () => {
    const d = data(100);
    const shard = range(20, 60); // 40 samples
    const b = new ShardBatcher(d, shard, 8, 1);
    assert.equal(b.stepsPerEpoch, 5);
    let xBuf: Float32Array | null = null;
    let yBuf: Float32Array | null = null;
    const orders: number[][] = [];
    for (let epoch = 0; epoch < 3; epoch++) {
      const seen: number[] = [];
      for (let s = 0; s < b.stepsPerEpoch; s++) {
        const batch = b.nextBatch();
        assert.equal(batch.epoch, epoch);
        assert.equal(batch.stepInEpoch, s);
        assert.equal(batch.size, 8);
        assert.equal(batch.x.length, 24);
        assert.equal(batch.y.length, 8);
        if (xBuf === null) {
          xBuf = batch.x;
          yBuf = batch.y;
        }
        assert.equal(batch.x, xBuf, "x buffer reused");
        assert.equal(batch.y, yBuf, "y buffer reused");
        for (let j = 0; j < batch.size; j++) {
          const i = batch.x[j * 3] as number;
          assert.equal(batch.x[j * 3 + 1], i + 0.25);
          assert.equal(batch.x[j * 3 + 2], i + 0.5);
          assert.equal(batch.y[j], i % 7);
          seen.push(i);
        }
      }
      assert.deepEqual([...seen].sort((a, c) => a - c), Array.from(shard), `epoch ${epoch} covers the shard`);
      orders.push(seen);
    }
    assert.notDeepEqual(orders[0], orders[1], "reshuffled each epoch");
    assert.notDeepEqual(orders[1], orders[2], "reshuffled each epoch");
    const next = b.nextBatch();
    assert.equal(next.epoch, 3);
    assert.equal(next.stepInEpoch, 0);
  });

  it("drops the last partial batch; the order depends only on seed and epoch", () => {
    const d = data(50);
    const shard = range(0, 23);
    const a = new ShardBatcher(d, shard, 5, 9);
    assert.equal(a.stepsPerEpoch, 4);
    const firstEpoch = new Set<number>();
    for (let s = 0; s < 4; s++) {
      const batch = a.nextBatch();
      for (let j = 0; j < batch.size; j++) firstEpoch.add(batch.x[j * 3] as number);
    }
    assert.equal(firstEpoch.size, 20, "20 distinct samples, 3 dropped");
    for (const v of firstEpoch) assert.ok(v < 23);
    // a batcher started at epoch 1 yields what the first one yields in its second epoch
    const b = new ShardBatcher(d, shard, 5, 9, 1);
    for (let s = 0; s < 4; s++) {
      const x1 = Array.from(a.nextBatch().x);
      const x2 = Array.from(b.nextBatch().x);
      assert.deepEqual(x1, x2);
    }
    const c = new ShardBatcher(d, shard, 5, 10);
    const d0 = new ShardBatcher(d, shard, 5, 9);
    assert.notDeepEqual(Array.from(c.nextBatch().x), Array.from(d0.nextBatch().x));
  });

  it("a shard smaller than the batch gives one whole-shard batch per epoch", () => {
    const b = new ShardBatcher(data(10), Uint32Array.from([3, 7, 9]), 32, 1);
    assert.equal(b.stepsPerEpoch, 1);
    assert.equal(b.batchSize, 3);
    for (let e = 0; e < 3; e++) {
      const batch = b.nextBatch();
      assert.equal(batch.size, 3);
      assert.equal(batch.epoch, e);
      assert.deepEqual(Array.from(batch.y).sort(), [0, 2, 3]);
    }
  });

  it("copies multi-output regression targets", () => {
    const trainX = Float32Array.from([1, 2, 3, 4]);
    const trainY = Float32Array.from([10, 11, 20, 21, 30, 31, 40, 41]);
    const b = new ShardBatcher({ trainX, trainY, trainCount: 4 }, range(0, 4), 4, 1);
    assert.equal(b.ySize, 2);
    const batch = b.nextBatch();
    for (let j = 0; j < 4; j++) {
      const x = batch.x[j] as number;
      assert.equal(batch.y[2 * j], x * 10);
      assert.equal(batch.y[2 * j + 1], x * 10 + 1);
    }
  });

  it("an empty shard has no steps; bad arguments are rejected", () => {
    const b = new ShardBatcher(data(10), new Uint32Array(0), 4, 1);
    assert.equal(b.stepsPerEpoch, 0);
    assert.throws(() => b.nextBatch(), /empty/);
    assert.throws(() => new ShardBatcher(data(10), Uint32Array.from([10]), 4, 1), /out of range/);
    assert.throws(() => new ShardBatcher(data(10), range(0, 5), 0, 1), /batch size/);
  });
});
