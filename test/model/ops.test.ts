import { strict as assert } from "node:assert";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../../src/model/backend.js";
import { ConvReluPoolOp } from "../../src/model/conv.js";
import { interleave4, maxPool4, maxPool4Backward } from "../../src/model/pool.js";
import { conv2dFilterGrad } from "../../src/model/wasm-kernels.js";
import { Rng } from "../../src/util/rng.js";
import { maxAbs, maxAbsDiff } from "./helpers.js";

type Pad = "same" | "valid" | [[number, number], [number, number], [number, number], [number, number]];
type Shape4 = [number, number, number, number];

const randn = (rng: Rng, n: number) => Float32Array.from({ length: n }, () => rng.normal());
const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** z[b, 2y+i, 2x+j, c] for one phase (i, j), in JS */
function phase(z: Float32Array, [b, h, w, c]: Shape4, i: number, j: number): tf.Tensor {
  const p = Math.floor(h / 2);
  const q = Math.floor(w / 2);
  const out = new Float32Array(b * p * q * c);
  for (let n = 0; n < b; n++)
    for (let y = 0; y < p; y++)
      for (let x = 0; x < q; x++)
        for (let k = 0; k < c; k++) out[((n * p + y) * q + x) * c + k] = z[((n * h + 2 * y + i) * w + 2 * x + j) * c + k]!;
  return tf.tensor(out, [b, p, q, c]);
}

describe("model ops", function () {
  this.timeout(60_000);

  // tie-heavy pooling input: values in {-1, 0, 1}, so many windows have several maxima,
  // some all negative; the reference is tf.maxPool's gradient on the cpu backend
  const poolShape: Shape4 = [2, 6, 8, 3];
  const rng = new Rng(21);
  const poolZ = Float32Array.from({ length: size(poolShape) }, () => rng.int(3) - 1);
  const poolDq = Float32Array.from({ length: 2 * 3 * 4 * 3 }, () => 1 + rng.int(9));
  let refPooled: Float32Array;
  let refGrad: Float32Array;

  // Conv2DBackpropFilter configurations: [x shape, kernel, strides, pad]
  const convCfgs: [Shape4, number, [number, number], Pad][] = [
    [[2, 9, 9, 3], 3, [1, 1], "same"],
    [[2, 10, 11, 2], 5, [2, 2], "valid"],
    [[1, 8, 7, 2], 4, [2, 2], "same"],
    [[2, 7, 7, 1], 3, [1, 2], [[0, 0], [1, 2], [0, 1], [0, 0]]],
    [[2, 11, 10, 2], 3, [3, 3], "valid"],
  ];
  const convRef: Float32Array[] = [];
  const convData: { x: Float32Array; w: Float32Array; dy: Float32Array; dyShape: Shape4 }[] = [];

  before(async () => {
    await selectBackend("cpu");
    convCfgs.forEach(([xs, k, st, pad], n) => {
      const r = new Rng(100 + n);
      const x = randn(r, size(xs));
      const w = randn(r, k * k * xs[3] * 4);
      const y = tf.tidy(() => tf.conv2d(tf.zeros(xs) as tf.Tensor4D, tf.zeros([k, k, xs[3], 4]) as tf.Tensor4D, st, pad));
      const dyShape = y.shape;
      y.dispose();
      convData.push({ x, w, dy: randn(r, size(dyShape)), dyShape });
    });
    const z = tf.tensor(poolZ, poolShape) as tf.Tensor4D;
    const dq = tf.tensor(poolDq, [2, 3, 4, 3]) as tf.Tensor4D;
    refPooled = tf.maxPool(z, 2, 2, "valid").dataSync() as Float32Array;
    refGrad = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(t as tf.Tensor4D, 2, 2, "valid"), dq)))(z).dataSync() as Float32Array;
    convCfgs.forEach(([xs, k, st, pad], n) => {
      const d = convData[n]!;
      const x = tf.tensor(d.x, xs) as tf.Tensor4D;
      const dy = tf.tensor(d.dy, d.dyShape);
      const w = tf.tensor(d.w, [k, k, xs[3], 4]);
      convRef.push(tf.grad((f: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(x, f as tf.Tensor4D, st, pad), dy)))(w).dataSync() as Float32Array);
    });
    tf.disposeVariables();
  });

  for (const backend of ["cpu", "wasm"] as const) {
    describe(backend, () => {
      before(async () => {
        await selectBackend(backend);
      });

      it("maxPool4 gives the max and routes ties to the first element in row-major order, like tf.maxPool on cpu", () => {
        tf.tidy(() => {
          const z = [phase(poolZ, poolShape, 0, 0), phase(poolZ, poolShape, 0, 1), phase(poolZ, poolShape, 1, 0), phase(poolZ, poolShape, 1, 1)] as const;
          const { q, trace } = maxPool4(z);
          assert.deepEqual(Array.from(q.dataSync()), Array.from(refPooled));
          const g = maxPool4Backward(tf.tensor(poolDq, [2, 3, 4, 3]), trace);
          assert.deepEqual(Array.from(interleave4(g).dataSync()), Array.from(refGrad));
        });
      });

      convCfgs.forEach(([xs, k, st, pad], n) => {
        it(`conv2d filter gradient (registered Conv2DBackpropFilter on wasm) x [${xs}] ${k}x${k} strides [${st}] ${typeof pad === "string" ? pad : "explicit"}`, () => {
          const d = convData[n]!;
          const got = tf.tidy(() => {
            const x = tf.tensor(d.x, xs) as tf.Tensor4D;
            const dy = tf.tensor(d.dy, d.dyShape);
            const w = tf.tensor(d.w, [k, k, xs[3], 4]);
            return tf.grad((f: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(x, f as tf.Tensor4D, st, pad), dy)))(w).dataSync();
          });
          const ref = convRef[n]!;
          assert.ok(maxAbsDiff(got, ref) <= 1e-5 * maxAbs(ref), `max diff ${maxAbsDiff(got, ref)}`);
        });
      });

      it("conv2dFilterGrad with explicit pads equals the cpu kernel", () => {
        const [xs, k, st, pad] = convCfgs[3]!;
        const d = convData[3]!;
        const p = pad as [[number, number], [number, number], [number, number], [number, number]];
        const got = tf.tidy(() =>
          conv2dFilterGrad(tf.tensor(d.x, xs) as tf.Tensor4D, tf.tensor(d.dy, d.dyShape) as tf.Tensor4D, [k, k], st, [p[1], p[2]]).dataSync(),
        );
        assert.ok(maxAbsDiff(got, convRef[3]!) <= 1e-5 * maxAbs(convRef[3]!));
      });

      // [h, w, c], filters, k, padding: 'same' (per-phase padding), 'valid' (shifted
      // kernels), odd conv outputs (unpooled last row/column)
      const opCfgs: [[number, number, number], number, number, "same" | "valid"][] = [
        [[12, 12, 1], 4, 5, "same"],
        [[13, 15, 2], 3, 5, "valid"],
        [[9, 10, 3], 2, 3, "same"],
        [[8, 8, 2], 3, 3, "valid"],
        [[11, 11, 1], 2, 5, "same"],
      ];
      for (const [shape, f, k, padding] of opCfgs) {
        it(`ConvReluPoolOp [${shape}] ${f} filters ${k}x${k} ${padding}: forward, input and weight gradients equal autodiff`, () => {
          const r = new Rng(shape[0] * 7 + k);
          const batch = 3;
          const op = new ConvReluPoolOp(shape, f, k, padding);
          tf.tidy(() => {
            const x = tf.tensor(randn(r, batch * size(shape)), [batch, ...shape]);
            const w = tf.tensor(randn(r, k * k * shape[2] * f), [k, k, shape[2], f]);
            const b = tf.tensor(randn(r, f), [f]);
            const ref = (xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
              tf.maxPool(tf.relu(tf.add(tf.conv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, 1, padding), bb)) as tf.Tensor4D, 2, 2, "valid");
            const yRef = ref(x, w, b);
            const { y, trace } = op.forward(x, [w, b]);
            assert.deepEqual(y.shape, yRef.shape);
            const scale = maxAbs(yRef.dataSync());
            assert.ok(maxAbsDiff(y.dataSync(), yRef.dataSync()) <= 1e-5 * scale, "training forward");
            assert.ok(maxAbsDiff(op.apply(x, [w, b]).dataSync(), yRef.dataSync()) <= 1e-5 * scale, "inference forward");
            const dy = tf.tensor(randn(r, yRef.size), yRef.shape);
            const want = tf.grads((xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(ref(xx, ww, bb), dy)))([x, w, b]);
            for (const needDx of [true, false]) {
              const got = trace.backward(dy, needDx);
              const pairs: [string, tf.Tensor | null, tf.Tensor][] = [
                ["dW", got.grads[0]!, want[1]!],
                ["db", got.grads[1]!, want[2]!],
              ];
              if (needDx) pairs.push(["dx", got.dx, want[0]!]);
              else assert.equal(got.dx, null);
              for (const [name, g, a] of pairs) {
                assert.ok(g !== null);
                assert.deepEqual(g.shape, a.shape, name);
                const diff = maxAbsDiff(g.dataSync(), a.dataSync());
                assert.ok(diff <= 1e-4 * maxAbs(a.dataSync()), `${name} (needDx ${needDx}): max diff ${diff}`);
              }
            }
          });
        });
      }
    });
  }
});
