import { strict as assert } from "node:assert";
import { Allreducer } from "../../src/allreduce/allreducer.js";
import { selectBackend } from "../../src/model/backend.js";
import { ColumnParallelMlp, columnBlocks } from "../../src/tensor/column-dense.js";
import { makeGroups } from "../helpers/groups.js";
import { setup } from "../model/helpers.js";

describe("tensor parallelism: an MLP's dense layers split by output units over real ZeroMQ sockets", function () {
  this.timeout(60_000);
  before(async () => {
    await selectBackend("cpu");
  });

  it("column blocks cover the units once", () => {
    assert.deepEqual(columnBlocks(10, 3), [[0, 3], [3, 6], [6, 10]]);
    assert.deepEqual(columnBlocks(4, 4), [[0, 1], [1, 2], [2, 3], [3, 4]]);
  });

  for (const T of [2, 3]) {
    it(`${T} workers: the blocks sum to the whole model's gradient, each worker writes only its columns`, async () => {
      const c = { name: "mlp" as const, shape: [4, 4, 1], k: 5, task: "classification" as const, batch: 6 };
      const { model, w, x, y } = setup(c, 9);
      const want = new Float32Array(model.size);
      const ref = model.gradient(x, y, c.batch, want);
      const { groups, close } = await makeGroups(T);
      try {
        const workers = groups.map((g, j) => ({ tp: new ColumnParallelMlp(model, j, T), ar: new Allreducer(g, {}), out: new Float32Array(model.size) }));
        for (const wk of workers) wk.tp.setWeights(w);
        const res = await Promise.all(workers.map((wk) => wk.tp.gradient(x, y, c.batch, wk.out, wk.ar)));
        const sum = new Float32Array(model.size);
        for (const wk of workers) for (let i = 0; i < sum.length; i++) sum[i]! += wk.out[i]!;
        let diff = 0;
        let scale = 0;
        for (let i = 0; i < sum.length; i++) {
          diff = Math.max(diff, Math.abs(sum[i]! - want[i]!));
          scale = Math.max(scale, Math.abs(want[i]!));
        }
        assert.ok(diff / scale < 1e-5, `relative difference ${diff / scale}`);
        for (const r of res) {
          assert.ok(Math.abs(r.loss - ref.loss) < 1e-5, `loss ${r.loss} vs ${ref.loss}`);
          assert.equal(r.correct, ref.correct);
        }
        // every worker owns a non-empty, disjoint set of keys
        const owner = new Int32Array(model.size).fill(-1);
        workers.forEach((wk, j) => {
          let mine = 0;
          wk.out.forEach((v, i) => {
            if (v !== 0) {
              assert.equal(owner[i], -1, `key ${i} written by workers ${owner[i]} and ${j}`);
              owner[i] = j;
              mine++;
            }
          });
          assert.ok(mine > 0, `worker ${j} computed nothing`);
        });
        for (const wk of workers) wk.tp.dispose();
      } finally {
        close();
        model.dispose();
      }
    });
  }
});
