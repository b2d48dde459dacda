import { strict as assert } from "node:assert";
import { createRequire } from "node:module";
import * as tf from "@tensorflow/tfjs";
import { selectBackend, selectedBackend } from "../../src/model/backend.js";
import { ErrorCode, PsError } from "../../src/util/errors.js";

function installed(pkg: string): boolean {
  try {
    createRequire(import.meta.url).resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

describe("backend selection", function () {
  this.timeout(60_000);

  it("cpu and wasm can be chosen explicitly and are recorded", async () => {
    for (const name of ["cpu", "wasm"] as const) {
      const r = await selectBackend(name);
      assert.equal(r.backend, name);
      assert.equal(tf.getBackend(), name);
      assert.ok(r.detail.startsWith(name), r.detail);
      assert.deepEqual(selectedBackend(), r);
    }
  });

  it("wasm gets the Conv2DBackpropFilter kernel it lacks, so autodiff through conv2d works", async () => {
    await selectBackend("wasm");
    assert.ok(tf.getKernel("Conv2DBackpropFilter", "wasm") !== undefined);
    const g = tf.tidy(() => {
      const x = tf.ones([1, 4, 4, 1]) as tf.Tensor4D;
      return tf.grad((f: tf.Tensor) => tf.sum(tf.conv2d(x, f as tf.Tensor4D, 1, "valid")))(tf.ones([3, 3, 1, 1])).dataSync();
    });
    assert.deepEqual(Array.from(g), new Array<number>(9).fill(4));
  });

  for (const name of ["node", "node-gpu"] as const) {
    const pkg = name === "node" ? "@tensorflow/tfjs-node" : "@tensorflow/tfjs-node-gpu";
    it(`${name}: PS_ERR_BACKEND in one line when ${pkg} is missing`, async function () {
      if (installed(pkg)) this.skip();
      await assert.rejects(selectBackend(name), (err: unknown) => {
        assert.ok(err instanceof PsError);
        assert.equal(err.code, ErrorCode.BACKEND);
        assert.ok(err.message.includes(`backend ${name} is not available`), err.message);
        assert.ok(err.message.includes(`${pkg} is not installed`), err.message);
        assert.ok(!err.message.includes("\n"));
        return true;
      });
    });
  }

  it("auto takes the best one that loads (node-gpu > node > wasm > cpu) and says what it skipped", async () => {
    const r = await selectBackend("auto");
    if (!installed("@tensorflow/tfjs-node-gpu") && !installed("@tensorflow/tfjs-node")) {
      assert.equal(r.backend, "wasm");
      assert.ok(r.detail.includes("skipped node-gpu: @tensorflow/tfjs-node-gpu is not installed"), r.detail);
      assert.ok(r.detail.includes("node: @tensorflow/tfjs-node is not installed"), r.detail);
    }
    assert.equal(selectedBackend()?.backend, r.backend);
  });
});
