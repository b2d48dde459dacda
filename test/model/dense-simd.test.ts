import { strict as assert } from "node:assert";
import { loadDataset } from "../../src/data/load.js";
import type { Dataset } from "../../src/data/dataset.js";
import { selectBackend } from "../../src/model/backend.js";
import { createModel } from "../../src/model/zoo.js";
import { isResident, allocF32, freeF32 } from "../../src/util/simd.js";
import { Rng } from "../../src/util/rng.js";
import { maxAbs, maxAbsDiff } from "./helpers.js";

/**
 * The SIMD dense kernels (src/model/dense-simd.ts) against the tfjs ops they replace, one model
 * of each kind side by side on the same weights: gradients, losses, evaluation and predictions
 * within float32 rounding. gradient.test.ts checks them against finite differences and autodiff
 * too (the zoo's dense models use them by default on wasm and cpu).
 */
const RTOL = 2e-5;

type Model = ReturnType<typeof createModel>;

/**
 * The same model twice, one with the SIMD dense kernels and one through tfjs, both given the
 * weights `init(seed)` plus `jitter` times normal noise; both disposed after `fn`.
 */
function withPair(
  spec: { name: "mlp" | "logreg" | "linreg"; shape: number[]; k: number; task?: "classification" | "regression" },
  init: { seed: number; jitter?: number },
  fn: (simd: Model, ref: Model, w: Float32Array) => void,
): void {
  const task = spec.task ?? "classification";
  const simd = createModel(spec.name, spec.shape, spec.k, task);
  const ref = createModel(spec.name, spec.shape, spec.k, task, { kernels: "tfjs" });
  try {
    const w = simd.init(init.seed);
    const rng = new Rng(init.seed + 1);
    for (let i = 0; i < w.length && init.jitter; i++) w[i] = w[i]! + init.jitter * rng.normal();
    simd.setWeights(w);
    ref.setWeights(w);
    fn(simd, ref, w);
  } finally {
    simd.dispose();
    ref.dispose();
  }
}

function assertClose(a: Float32Array, b: Float32Array, what: string, params?: readonly { name: string; offset: number; size: number }[]): void {
  for (const p of params ?? [{ name: what, offset: 0, size: a.length }]) {
    const d = maxAbsDiff(a, b, p.offset, p.offset + p.size);
    const ref = maxAbs(b, p.offset, p.offset + p.size);
    assert.ok(d <= RTOL * ref + 1e-7, `${p.name}: max |simd - tfjs| = ${d}, max |tfjs| = ${ref}`);
  }
}

describe("model/dense-simd: SIMD dense kernels against tfjs", function () {
  this.timeout(120_000);
  let mnist: Dataset;

  before(async () => {
    mnist = await loadDataset("mnist", { seed: 1 });
  });

  for (const backend of ["wasm", "cpu"] as const) {
    describe(`on ${backend}`, () => {
      before(async () => {
        await selectBackend(backend);
      });

      it("mlp on MNIST batches (sparse pixels): gradient, loss and correct count match, for batch sizes 1..130", () => {
        withPair({ name: "mlp", shape: [28, 28, 1], k: 10 }, { seed: 3, jitter: 0.01 }, (simd, ref) => {
          assert.equal(simd.kernels, "simd-dense");
          assert.equal(ref.kernels, "tfjs");
          const g1 = new Float32Array(simd.size);
          const g2 = new Float32Array(simd.size);
          for (const batch of [1, 3, 64, 130]) {
            const start = 1000 + batch;
            const x = mnist.trainX.subarray(start * 784, (start + batch) * 784);
            const y = mnist.trainY.subarray(start, start + batch);
            const r1 = simd.gradient(x, y, batch, g1);
            const r2 = ref.gradient(x, y, batch, g2);
            assert.ok(Math.abs(r1.loss - r2.loss) <= 1e-5 * Math.abs(r2.loss), `batch ${batch}: loss ${r1.loss} vs ${r2.loss}`);
            assert.equal(r1.correct, r2.correct);
            assertClose(g1, g2, `batch ${batch}`, simd.params);
          }
        });
      });

      it("writes into a gradient array that lives in the kernels' memory, and into one that does not", () => {
        withPair({ name: "mlp", shape: [20], k: 7 }, { seed: 5 }, (simd) => {
          const out = allocF32(simd.size);
          assert.ok(isResident(out));
          const rng = new Rng(6);
          const x = Float32Array.from({ length: 9 * 20 }, () => (rng.next() < 0.5 ? 0 : rng.normal()));
          const y = Float32Array.from({ length: 9 }, () => rng.int(7));
          const plain = new Float32Array(simd.size);
          simd.gradient(x, y, 9, out);
          simd.gradient(x, y, 9, plain);
          assert.deepEqual(Array.from(out), Array.from(plain));
          assert.ok(maxAbs(plain) > 0);
          freeF32(out);
        });
      });

      it("evaluate() and predict() over 1000 MNIST test samples (chunks of 256) match tfjs", () => {
        withPair({ name: "mlp", shape: [28, 28, 1], k: 10 }, { seed: 8 }, (simd, ref) => {
          const n = 1000;
          const x = mnist.testX.subarray(0, n * 784);
          const y = mnist.testY.subarray(0, n);
          const e1 = simd.evaluate(x, y, n);
          const e2 = ref.evaluate(x, y, n);
          assert.ok(Math.abs(e1.loss - e2.loss) <= 1e-5 * e2.loss, `loss ${e1.loss} vs ${e2.loss}`);
          assert.equal(e1.accuracy, e2.accuracy);
          assertClose(simd.predict(x, n), ref.predict(x, n), "predict");
        });
      });

      it("logreg and linreg (odd widths: column tails of 1..3) match tfjs", () => {
        const rng = new Rng(9);
        for (const [name, d, k, task] of [
          ["logreg", 37, 5, "classification"],
          ["linreg", 70, 3, "regression"],
          ["logreg", 33, 35, "classification"],
        ] as const) {
          withPair({ name, shape: [d], k, task }, { seed: 2, jitter: 0.05 }, (simd, ref) => {
            const batch = 11;
            const x = Float32Array.from({ length: batch * d }, () => (rng.next() < 0.5 ? 0 : rng.normal()));
            const y = Float32Array.from({ length: batch * simd.ySize }, () => (task === "classification" ? rng.int(k) : rng.normal()));
            const g1 = new Float32Array(simd.size);
            const g2 = new Float32Array(simd.size);
            const r1 = simd.gradient(x, y, batch, g1);
            const r2 = ref.gradient(x, y, batch, g2);
            assert.ok(Math.abs(r1.loss - r2.loss) <= 1e-5 * Math.abs(r2.loss), `${name} ${d}->${k}: loss ${r1.loss} vs ${r2.loss}`);
            assertClose(g1, g2, `${name} ${d}->${k}`, simd.params);
            assert.deepEqual(simd.denseBatches, { simd: 1, tfjs: 0 });
            const e1 = simd.evaluate(x, y, batch);
            const e2 = ref.evaluate(x, y, batch);
            assert.ok(Math.abs(e1.loss - e2.loss) <= 1e-5 * Math.abs(e2.loss));
            assert.equal(e1.accuracy, e2.accuracy);
          });
        }
      });

      it("a batch of mostly non-zero inputs goes to tfjs (same gradient); the next sparse one comes back", () => {
        withPair({ name: "mlp", shape: [30], k: 4 }, { seed: 4 }, (simd, ref) => {
          const rng = new Rng(12);
          const y = Float32Array.from({ length: 6 }, () => rng.int(4));
          const g1 = new Float32Array(simd.size);
          const g2 = new Float32Array(simd.size);
          for (const [density, path] of [[0.9, "tfjs"], [0.3, "simd"], [0.95, "tfjs"]] as const) {
            const x = Float32Array.from({ length: 6 * 30 }, (_, i) => (i % 100 < density * 100 ? rng.normal() : 0));
            const before = simd.denseBatches;
            simd.gradient(x, y, 6, g1);
            ref.gradient(x, y, 6, g2);
            assertClose(g1, g2, `density ${density}`, simd.params);
            const after = simd.denseBatches;
            assert.equal(after[path], before[path] + 1, `density ${density} went to ${path}`);
          }
          assert.deepEqual(ref.denseBatches, { simd: 0, tfjs: 0 });
        });
      });

      it("setWeights copies: changing the caller's array afterwards changes nothing; save() and the tfjs paths see the weights", () => {
        withPair({ name: "mlp", shape: [16], k: 4 }, { seed: 1 }, (simd, ref, w) => {
          const rng = new Rng(2);
          const x = Float32Array.from({ length: 5 * 16 }, () => rng.next());
          const y = Float32Array.from([0, 1, 2, 3, 0]);
          const before = simd.evaluate(x, y, 5).loss;
          w.fill(0);
          assert.equal(simd.evaluate(x, y, 5).loss, before);
          // the tfjs weight tensors are made from the kernels' copy when something asks for them
          const tensors = simd.weightTensors();
          assert.equal(tensors.length, simd.params.length);
          const refTensors = ref.weightTensors();
          tensors.forEach((t, i) => assert.deepEqual(Array.from(t.dataSync()), Array.from(refTensors[i]!.dataSync())));
        });
      });
    });
  }

  it("the cnn and PS_TRAIN_DENSE_KERNELS=tfjs keep tfjs", async () => {
    await selectBackend("wasm");
    const cnn = createModel("cnn", [12, 12, 1], 3, "classification");
    cnn.setWeights(cnn.init(1));
    assert.equal(cnn.kernels, "tfjs");
    cnn.dispose();
    const saved = process.env["PS_TRAIN_DENSE_KERNELS"];
    process.env["PS_TRAIN_DENSE_KERNELS"] = "tfjs";
    try {
      const mlp = createModel("mlp", [12], 3, "classification");
      mlp.setWeights(mlp.init(1));
      assert.equal(mlp.kernels, "tfjs");
      mlp.dispose();
    } finally {
      if (saved === undefined) delete process.env["PS_TRAIN_DENSE_KERNELS"];
      else process.env["PS_TRAIN_DENSE_KERNELS"] = saved;
    }
  });
});
