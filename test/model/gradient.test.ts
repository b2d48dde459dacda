import type { ParamSpec } from "../../src/model/model-api.js";
import { strict as assert } from "node:assert";
import * as tf from "@tensorflow/tfjs";
import { autodiffGradient } from "../../src/model/autodiff.js";
import { selectBackend } from "../../src/model/backend.js";
import { Rng } from "../../src/util/rng.js";
import { createModel } from "../../src/model/zoo.js";
import { type Case, CASES, caseLabel, maxAbs, maxAbsDiff, setup, SPARSE_CASES } from "./helpers.js";
import { forward64, loss64 } from "./reference64.js";

/**
 * Finite differences: central differences of the float64 reference loss (reference64.ts) at
 * the model's float32 weights, against the model's float32 gradient on the cpu backend.
 * |g - fd| <= FD_RTOL |fd| + FD_ATOL max|g|. A parameter whose difference quotient changes
 * between two step sizes sits on a relu/max kink and is skipped (at most 10% may be).
 */
const FD_EPS = [1e-5, 1e-6];
const FD_RTOL = 1e-4;
const FD_ATOL = 1e-6;
const FD_PARAMS = 30;

/** Manual vs tfjs autodiff (tf.grads), per parameter tensor: max|g - a| <= 1e-4 max|a|. */
const AD_RTOL = 1e-4;

/** ~n parameter indices: 2 from every tensor (so every bias), the rest at random. */
function pickParams(params: readonly { offset: number; size: number }[], n: number, rng: Rng): number[] {
  const picked = new Set<number>();
  for (const p of params) for (let i = 0; i < Math.min(2, p.size); i++) picked.add(p.offset + rng.int(p.size));
  const total = params.reduce((a, p) => a + p.size, 0);
  while (picked.size < Math.min(n, total)) picked.add(rng.int(total));
  return [...picked].sort((a, b) => a - b);
}

describe("model gradients", function () {
  this.timeout(120_000);

  describe("against central finite differences in float64 (cpu backend)", () => {
    before(async () => {
      await selectBackend("cpu");
    });

    for (const c of [...CASES, ...SPARSE_CASES]) {
      it(caseLabel(c), () => {
        const { model, w, x, y } = setup(c);
        try {
          const g = new Float32Array(model.size);
          const res = model.gradient(x, y, c.batch, g);
          assert.equal(model.denseBatches.simd, c.zeros ? 1 : 0, "which kernels computed");
          const w64 = Float64Array.from(w);
          const x64 = Float64Array.from(x);
          const L = (wv: Float64Array) => loss64(c.task, forward64(model.layers, c.shape, model.params, wv, x64, c.batch), y, c.batch, c.k);
          const l0 = L(w64);
          assert.ok(Math.abs(res.loss - l0) <= 1e-5 * Math.max(1, Math.abs(l0)), `loss ${res.loss} vs float64 ${l0}`);
          const scale = maxAbs(g);
          const idx = pickParams(model.params, FD_PARAMS, new Rng(99));
          let skipped = 0;
          let worst = 0;
          for (const i of idx) {
            const fds = FD_EPS.map((eps) => {
              const wp = w64.slice();
              const wm = w64.slice();
              wp[i] = wp[i]! + eps;
              wm[i] = wm[i]! - eps;
              return (L(wp) - L(wm)) / (2 * eps);
            });
            const [fd, fd2] = fds as [number, number];
            if (Math.abs(fd - fd2) > 1e-4 * Math.abs(fd) + 1e-7 * scale) {
              skipped++;
              continue;
            }
            const err = Math.abs(g[i]! - fd);
            const tol = FD_RTOL * Math.abs(fd) + FD_ATOL * scale;
            const name = model.params.find((p) => i >= p.offset && i < p.offset + p.size)!.name;
            assert.ok(err <= tol, `${name} [${i}]: gradient ${g[i]} vs finite difference ${fd} (err ${err}, tol ${tol})`);
            worst = Math.max(worst, err / tol);
          }
          assert.ok(skipped <= idx.length / 10, `${skipped} of ${idx.length} parameters sit on kinks`);
          assert.ok(worst < 1);
        } finally {
          model.dispose();
        }
      });
    }
  });

  for (const backend of ["cpu", "wasm"] as const) {
    describe(`equal tfjs autodiff within ${AD_RTOL} (${backend})`, () => {
      before(async () => {
        await selectBackend(backend);
      });

      const cases: Case[] = [...CASES, ...SPARSE_CASES, { name: "cnn", shape: [28, 28, 1], k: 10, task: "classification", batch: 4 }];
      for (const c of cases) {
        it(caseLabel(c), () => {
          const { model, w, x, y } = setup(c);
          try {
            const g = new Float32Array(model.size);
            const res = model.gradient(x, y, c.batch, g);
            assert.equal(model.denseBatches.simd, c.zeros ? 1 : 0, "which kernels computed");
            const ad = autodiffGradient(model, w, x, y, c.batch);
            assert.ok(Math.abs(res.loss - ad.loss) <= 1e-5 * Math.max(1, Math.abs(ad.loss)), `loss ${res.loss} vs ${ad.loss}`);
            assertMatchesAutodiff(model.params, g, ad.grad);
          } finally {
            model.dispose();
          }
        });
      }

      // Tied windows over a constant background: which element gets the gradient does not
      // change the parameter gradients here (pool.test.ts checks the routing itself).
      it("cnn on images with a constant background (tied pooling windows)", () => {
        const model = createModel("cnn", [16, 16, 1], 3, "classification");
        const rng = new Rng(5);
        const w = model.init(3);
        for (const p of model.params) if (p.name.endsWith("/bias")) w.fill(0.1, p.offset, p.offset + p.size);
        const batch = 3;
        const x = new Float32Array(batch * 256); // zero background ...
        for (let b = 0; b < batch; b++)
          for (let r = 5; r < 11; r++) for (let q = 4; q < 12; q++) x[b * 256 + r * 16 + q] = rng.next(); // ... and a random patch
        const y = Float32Array.from([0, 1, 2]);
        model.setWeights(w);
        try {
          const g = new Float32Array(model.size);
          model.gradient(x, y, batch, g);
          const ad = autodiffGradient(model, w, x, y, batch);
          assertMatchesAutodiff(model.params, g, ad.grad);
        } finally {
          model.dispose();
        }
      });

      it("gradient() and evaluate() leak no tensors", () => {
        for (const c of [...CASES, ...SPARSE_CASES]) {
          const { model, x, y } = setup(c);
          const g = new Float32Array(model.size);
          model.gradient(x, y, c.batch, g);
          model.evaluate(x, y, c.batch);
          const before = tf.memory().numTensors;
          for (let i = 0; i < 3; i++) {
            model.gradient(x, y, c.batch, g);
            model.evaluate(x, y, c.batch);
            model.predict(x, c.batch);
          }
          assert.equal(tf.memory().numTensors, before, caseLabel(c));
          // the SIMD dense kernels keep the weights in their own memory: tensors only once tfjs computed
          const held = model.kernels === "tfjs" || model.denseBatches.tfjs > 0 ? model.params.length : 0;
          model.dispose();
          assert.equal(tf.memory().numTensors, before - held, `${caseLabel(c)}: dispose() frees the weights`);
        }
      });
    });
  }
});

/** Per parameter tensor: max |manual - autodiff| within AD_RTOL of the tensor's largest autodiff value. */
function assertMatchesAutodiff(params: readonly ParamSpec[], g: Float32Array, ad: Float32Array): void {
  for (const p of params) {
    const diff = maxAbsDiff(g, ad, p.offset, p.offset + p.size);
    const ref = maxAbs(ad, p.offset, p.offset + p.size);
    assert.ok(diff <= AD_RTOL * ref + 1e-9, `${p.name}: max |manual - autodiff| = ${diff}, max |autodiff| = ${ref}`);
  }
}
