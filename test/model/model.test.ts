import { strict as assert } from "node:assert";
import * as tf from "@tensorflow/tfjs";
import type { ModelName } from "../../src/config/train-config.js";
import type { Task } from "../../src/data/dataset.js";
import { selectBackend } from "../../src/model/backend.js";
import { createModel } from "../../src/model/zoo.js";
import { ErrorCode, PsError } from "../../src/util/errors.js";
import { Rng } from "../../src/util/rng.js";
import { CASES, caseLabel, maxAbs, maxAbsDiff, setup } from "./helpers.js";

describe("model zoo", function () {
  this.timeout(60_000);

  before(async () => {
    await selectBackend("cpu");
  });

  describe("parameter layout", () => {
    it("mlp (LeNet-300-100) on MNIST: names, shapes, contiguous offsets", () => {
      const m = createModel("mlp", [28, 28, 1], 10, "classification");
      assert.deepEqual(
        m.params.map((p) => [p.name, p.shape, p.offset, p.size]),
        [
          ["dense1/kernel", [784, 300], 0, 235200],
          ["dense1/bias", [300], 235200, 300],
          ["dense2/kernel", [300, 100], 235500, 30000],
          ["dense2/bias", [100], 265500, 100],
          ["dense3/kernel", [100, 10], 265600, 1000],
          ["dense3/bias", [10], 266600, 10],
        ],
      );
      assert.equal(m.size, 266610);
      assert.deepEqual(m.layers.map((l) => l.name), ["flatten", "dense1", "dense2", "dense3"]);
    });

    it("cnn (LeNet-5) on MNIST", () => {
      const m = createModel("cnn", [28, 28, 1], 10, "classification");
      assert.deepEqual(
        m.params.map((p) => [p.name, p.shape]),
        [
          ["conv1/kernel", [5, 5, 1, 6]],
          ["conv1/bias", [6]],
          ["conv2/kernel", [5, 5, 6, 16]],
          ["conv2/bias", [16]],
          ["dense1/kernel", [400, 120]],
          ["dense1/bias", [120]],
          ["dense2/kernel", [120, 84]],
          ["dense2/bias", [84]],
          ["dense3/kernel", [84, 10]],
          ["dense3/bias", [10]],
        ],
      );
      assert.equal(m.size, 61706);
    });

    it("logreg, linreg; every model's offsets tile the vector", () => {
      assert.equal(createModel("logreg", [28, 28, 1], 10, "classification").size, 7850);
      assert.equal(createModel("linreg", [20], 1, "regression").size, 21);
      for (const c of CASES) {
        const m = createModel(c.name, c.shape, c.k, c.task);
        let off = 0;
        for (const p of m.params) {
          assert.equal(p.offset, off);
          assert.equal(p.size, p.shape.reduce((a, b) => a * b, 1));
          off += p.size;
        }
        assert.equal(off, m.size);
      }
    });
  });

  describe("init", () => {
    it("is deterministic in the seed, Glorot-uniform kernels, zero biases", () => {
      const m = createModel("mlp", [28, 28, 1], 10, "classification");
      const before = tf.memory().numTensors;
      const a = m.init(42);
      assert.equal(tf.memory().numTensors, before, "init runs in JS");
      assert.deepEqual(m.init(42), a);
      const b = m.init(43);
      assert.ok(maxAbsDiff(a, b) > 0.01);
      for (const p of m.params) {
        const v = a.subarray(p.offset, p.offset + p.size);
        if (p.name.endsWith("/bias")) {
          assert.ok(v.every((x) => x === 0), p.name);
          continue;
        }
        const [fin, fout] = p.shape as [number, number];
        const limit = Math.sqrt(6 / (fin + fout));
        assert.ok(maxAbs(v) <= limit, `${p.name} within +-${limit}`);
        let s = 0;
        let s2 = 0;
        for (const x of v) {
          s += x;
          s2 += x * x;
        }
        const mean = s / v.length;
        const variance = s2 / v.length;
        assert.ok(Math.abs(mean) < (4 * limit) / Math.sqrt(3 * v.length), `${p.name} mean ${mean}`);
        assert.ok(Math.abs(variance / (limit * limit / 3) - 1) < 0.1, `${p.name} variance ${variance}`);
      }
    });

    it("conv fans are kh*kw*channels; a layer's init does not depend on the layers after it", () => {
      const m10 = createModel("cnn", [28, 28, 1], 10, "classification");
      const m3 = createModel("cnn", [28, 28, 1], 3, "classification");
      const a = m10.init(7);
      const b = m3.init(7);
      const conv2 = m10.params[2]!;
      const limit = Math.sqrt(6 / (25 * 6 + 25 * 16));
      assert.ok(maxAbs(a, conv2.offset, conv2.offset + conv2.size) <= limit);
      assert.ok(maxAbs(a, conv2.offset, conv2.offset + conv2.size) > 0.9 * limit);
      const shared = m10.params[7]!.offset + m10.params[7]!.size; // up to dense2
      assert.deepEqual(a.subarray(0, shared), b.subarray(0, shared));
    });
  });

  describe("shape errors", () => {
    const bad: [ModelName, number[], number, Task, string][] = [
      ["cnn", [784], 10, "classification", "[784]"],
      ["cnn", [8, 8, 1], 10, "classification", "[8, 8, 1]"],
      ["cnn", [28, 28], 10, "classification", "[28, 28]"],
      ["mlp", [20], 1, "regression", "[20]"],
      ["logreg", [20], 1, "regression", "[20]"],
      ["cnn", [28, 28, 1], 1, "regression", "[28, 28, 1]"],
      ["linreg", [28, 28, 1], 10, "classification", "[28, 28, 1]"],
      ["logreg", [5], 1, "classification", "[5]"],
      ["mlp", [0], 3, "classification", "[0]"],
    ];
    for (const [name, shape, k, task, text] of bad) {
      it(`${name} on ${task} ${text} -> ${k} throws PS_ERR_MODEL_SHAPE`, () => {
        assert.throws(
          () => createModel(name, shape, k, task),
          (err: unknown) => {
            assert.ok(err instanceof PsError);
            assert.equal(err.code, ErrorCode.MODEL_SHAPE);
            assert.equal(err.exitCode, 2);
            assert.ok(err.message.includes(`model ${name}`), err.message);
            assert.ok(err.message.includes(text), err.message);
            assert.ok(!err.message.includes("\n"));
            return true;
          },
        );
      });
    }
  });

  describe("gradient / evaluate / setWeights", () => {
    it("the gradient is the mean over the batch", () => {
      for (const c of CASES) {
        const big = { ...c, batch: 2 * c.batch };
        const { model, x, y } = setup(big);
        const g = new Float32Array(model.size);
        const g1 = new Float32Array(model.size);
        const g2 = new Float32Array(model.size);
        const r = model.gradient(x, y, big.batch, g);
        const r1 = model.gradient(x, y, c.batch, g1);
        const r2 = model.gradient(x.subarray(c.batch * model.xSize), y.subarray(c.batch * model.ySize), c.batch, g2);
        assert.ok(Math.abs(r.loss - (r1.loss + r2.loss) / 2) < 1e-5 * Math.max(1, r.loss), caseLabel(c));
        assert.equal(r.correct, r1.correct + r2.correct);
        const avg = g1.map((v, i) => (v + g2[i]!) / 2);
        assert.ok(maxAbsDiff(g, avg) <= 1e-5 * maxAbs(g), caseLabel(c));
        model.dispose();
      }
    });

    it("gradient() reports the same loss and accuracy as evaluate(); x and y may be longer than the batch", () => {
      for (const c of CASES) {
        const { model, x, y } = setup({ ...c, batch: c.batch + 3 });
        const g = new Float32Array(model.size);
        const r = model.gradient(x, y, c.batch, g);
        const e = model.evaluate(x, y, c.batch);
        assert.ok(Math.abs(r.loss - e.loss) < 1e-5 * Math.max(1, e.loss), `${caseLabel(c)}: ${r.loss} vs ${e.loss}`);
        if (c.task === "classification") assert.equal(e.accuracy, r.correct / c.batch);
        else assert.equal(e.accuracy, 0);
        model.dispose();
      }
    });

    it("evaluate() over several chunks equals the loss and accuracy computed from predict()", () => {
      const model = createModel("logreg", [5], 3, "classification");
      const rng = new Rng(3);
      const n = 2345;
      const w = model.init(1);
      w.set([0.3, -0.2, 0.1], model.params[1]!.offset);
      model.setWeights(w);
      const x = Float32Array.from({ length: n * 5 }, () => rng.normal());
      const y = Float32Array.from({ length: n }, () => rng.int(3));
      const p = model.predict(x, n);
      let loss = 0;
      let correct = 0;
      for (let i = 0; i < n; i++) {
        loss -= Math.log(p[i * 3 + y[i]!]!);
        const best = [0, 1, 2].reduce((a, b) => (p[i * 3 + b]! > p[i * 3 + a]! ? b : a), 0);
        if (best === y[i]) correct++;
      }
      const e = model.evaluate(x, y, n);
      assert.ok(Math.abs(e.loss - loss / n) < 1e-5, `${e.loss} vs ${loss / n}`);
      assert.equal(e.accuracy, correct / n);
      model.dispose();
    });

    it("setWeights() copies: changing the vector afterwards does not change the model (cpu, wasm)", async () => {
      for (const backend of ["cpu", "wasm"] as const) {
        await selectBackend(backend);
        const { model, w, x, y } = setup(CASES[3]!);
        const g1 = new Float32Array(model.size);
        const g2 = new Float32Array(model.size);
        model.gradient(x, y, 4, g1);
        w.fill(0);
        model.gradient(x, y, 4, g2);
        assert.deepEqual(g2, g1, backend);
        model.dispose();
      }
      await selectBackend("cpu");
    });

    it("rejects misuse with clear errors", () => {
      const model = createModel("logreg", [4], 3, "classification");
      const g = new Float32Array(model.size);
      const x = new Float32Array(8);
      assert.throws(() => model.gradient(x, new Float32Array([0, 1]), 2, g), /setWeights/);
      assert.throws(() => model.setWeights(new Float32Array(3)), /got 3 values, the model has 15/);
      model.setWeights(model.init(1));
      assert.throws(() => model.gradient(x, new Float32Array([0, 1]), 2, new Float32Array(3)), /out has length 3/);
      assert.throws(() => model.gradient(x, new Float32Array([0, 1]), 3, g), /x holds 8 values/);
      assert.throws(
        () => model.gradient(x, new Float32Array([0, 3]), 2, g),
        (err: unknown) => err instanceof PsError && err.code === ErrorCode.BAD_DATASET && /label 3 of sample 1/.test(err.message),
      );
      model.dispose();
      assert.throws(() => model.evaluate(x, new Float32Array([0, 1]), 2), /disposed/);
    });
  });
});
