import { strict as assert } from "node:assert";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../../src/model/backend.js";
import { loadSavedModel } from "../../src/model/save.js";
import { type Case, CASES, caseLabel, maxAbs, maxAbsDiff, setup } from "./helpers.js";

describe("model save / load", function () {
  this.timeout(60_000);
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "ps-train-model-"));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const cases: Case[] = [...CASES, { name: "mlp", shape: [28, 28, 1], k: 10, task: "classification", batch: 7 }, { name: "cnn", shape: [28, 28, 1], k: 10, task: "classification", batch: 5 }];

  for (const backend of ["cpu", "wasm"] as const) {
    describe(backend, () => {
      before(async () => {
        await selectBackend(backend);
      });

      cases.forEach((c, n) => {
        it(`${caseLabel(c)}: model.json + weights.bin load back with the same predictions`, async () => {
          const { model, w, x } = setup(c, 5 + n);
          const out = join(dir, `${backend}-${n}`);
          try {
            await model.save(out);
            const json = JSON.parse(readFileSync(join(out, "model.json"), "utf8")) as tf.io.ModelJSON;
            assert.equal(json.format, "layers-model");
            assert.equal(json.weightsManifest.length, 1);
            assert.deepEqual(json.weightsManifest[0]!.paths, ["weights.bin"]);
            const specs = json.weightsManifest[0]!.weights;
            assert.deepEqual(
              specs.map((s) => [s.name, s.shape, s.dtype]),
              model.params.map((p) => [p.name, p.shape, "float32"]),
            );
            // weights.bin is the flat parameter vector
            const bin = readFileSync(join(out, "weights.bin"));
            assert.deepEqual(new Float32Array(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength)), w);

            const before = tf.memory().numTensors;
            const loaded = await loadSavedModel(out);
            try {
              assert.deepEqual(
                loaded.layers.map((l) => l.name),
                model.layers.map((l) => l.name),
              );
              const pred = tf.tidy(() => (loaded.predict(tf.tensor(x, [c.batch, ...c.shape])) as tf.Tensor).dataSync());
              const mine = model.predict(x, c.batch);
              assert.equal(pred.length, c.batch * c.k);
              const diff = maxAbsDiff(pred, mine);
              assert.ok(diff <= 1e-5 * Math.max(1, maxAbs(mine)), `max |loaded - model| = ${diff}`);
              if (c.task === "classification") {
                // probabilities
                for (let b = 0; b < c.batch; b++) {
                  let s = 0;
                  for (let i = 0; i < c.k; i++) s += pred[b * c.k + i]!;
                  assert.ok(Math.abs(s - 1) < 1e-5);
                }
              }
            } finally {
              loaded.dispose();
            }
            assert.equal(tf.memory().numTensors, before, "the loaded model disposes cleanly");
          } finally {
            model.dispose();
          }
        });
      });

      it("save() leaks no tensors and overwrites an earlier save", async () => {
        const c = CASES[4]!;
        const { model, w } = setup(c);
        const out = join(dir, `${backend}-again`);
        try {
          await model.save(out);
          const before = tf.memory().numTensors;
          w.fill(0.25);
          model.setWeights(w);
          await model.save(out);
          await model.save(out);
          assert.equal(tf.memory().numTensors, before);
          const bin = readFileSync(join(out, "weights.bin"));
          assert.ok(new Float32Array(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength)).every((v) => v === 0.25));
          const json = JSON.parse(readFileSync(join(out, "model.json"), "utf8")) as tf.io.ModelJSON;
          assert.deepEqual(
            json.weightsManifest[0]!.weights.map((s) => s.name),
            model.params.map((p) => p.name),
            "weight names stay unsuffixed when a process saves several models",
          );
        } finally {
          model.dispose();
        }
      });
    });
  }
});
