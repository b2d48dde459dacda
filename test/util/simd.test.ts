import { strict as assert } from "node:assert";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { compileSimdWat } from "../../scripts/build-simd.js";
import { createOptimizer } from "../../src/ps/optimizer.js";
import type { OptimizerConfig } from "../../src/config/train-config.js";
import { allFinite } from "../../src/transport/frames.js";
import { addInto, divideBy } from "../../src/util/f32-kernels.js";
import { allocF32, freeF32, isResident, resident, simdEnabled, simdHeapBytes } from "../../src/util/simd.js";
import { SIMD_WASM_BASE64 } from "../../src/util/simd-module.js";
import { Rng } from "../../src/util/rng.js";

const root = new URL("../../../", import.meta.url);

function random(n: number, seed: number): Float32Array {
  const r = new Rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r.next() - 0.5) * 4;
  return a;
}

function bitsEqual(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: lengths`);
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) assert.fail(`${what}: element ${i} of ${a.length} differs: ${a[i]} vs ${b[i]}`);
}

/** A copy of `a` in the kernels' memory (SIMD) and one in a plain array (JavaScript loops). */
function pair(a: Float32Array): [Float32Array, Float32Array] {
  const w = allocF32(a.length);
  w.set(a);
  return [w, Float32Array.from(a)];
}

const LENGTHS = [0, 1, 3, 63, 64, 65, 66, 67, 1001, 4096, 100_003];

const baseOpt: OptimizerConfig = {
  optimizer: "sgd",
  lr: 0.05,
  momentum: 0.9,
  beta1: 0.9,
  beta2: 0.999,
  epsilon: 1e-8,
  weightDecay: 0,
  lrSchedule: "constant",
  lrStepSize: 0,
  lrGamma: 0.1,
  warmupSteps: 0,
  totalSteps: 0,
  asyncLrScale: "none",
};

describe("SIMD kernels (WebAssembly)", function () {
  before(function () {
    if (!simdEnabled()) this.skip();
  });

  it("the embedded module is src/util/simd.wat compiled (npm run build:simd)", async function () {
    const bytes = await compileSimdWat(fileURLToPath(new URL("src/util/simd.wat", root)));
    assert.equal(Buffer.from(bytes).toString("base64"), SIMD_WASM_BASE64, "src/util/simd-module.ts is stale: run npm run build:simd");
  });

  it("sum and division equal the JavaScript loops bit for bit, at every length", function () {
    for (const n of LENGTHS) {
      const [d1, d2] = pair(random(n, n + 1));
      const src = random(n, n + 2);
      addInto(d1, src); // src lives outside: the JavaScript loop
      addInto(d2, src);
      bitsEqual(d1, d2, `add n=${n}`);
      const [s1] = pair(src);
      addInto(d1, s1);
      addInto(d2, src);
      bitsEqual(d1, d2, `add resident n=${n}`);
      for (const d of [3, 7, 1 / 3]) {
        divideBy(d1, d);
        divideBy(d2, d);
        bitsEqual(d1, d2, `div ${d} n=${n}`);
      }
      assert.equal(isResident(d1), n >= 64, `n=${n}: resident`);
      for (const a of [d1, s1]) freeF32(a);
    }
  });

  it("the finite check finds a NaN or an Infinity at any position", function () {
    for (const n of [64, 65, 67, 1000, 1003]) {
      const [a] = pair(random(n, 5));
      assert.equal(allFinite(a), true);
      for (const pos of [0, 1, n >> 1, n - 4, n - 2, n - 1]) {
        for (const bad of [NaN, Infinity, -Infinity]) {
          const keep = a[pos]!;
          a[pos] = bad;
          assert.equal(allFinite(a), false, `n=${n}: ${bad} at ${pos}`);
          a[pos] = keep;
        }
      }
      assert.equal(allFinite(a), true);
      freeF32(a);
    }
  });

  for (const optimizer of ["sgd", "momentum", "adam"] as const) {
    for (const weightDecay of [0, 1e-3]) {
      it(`${optimizer}${weightDecay ? " with weight decay" : ""}: 25 updates equal the JavaScript loops bit for bit (state included)`, function () {
        for (const n of [63, 64, 65, 1001, 100_003]) {
          const cfg = { ...baseOpt, optimizer, weightDecay } as OptimizerConfig;
          const [w1, w2] = pair(random(n, 11));
          assert.ok(isResident(w1) === n >= 64 && !isResident(w2));
          const simd = createOptimizer(cfg, n);
          // the reference: w2 is a plain array, so the same optimizer runs its JavaScript loops
          const plain = createOptimizer(cfg, n);
          for (let step = 0; step < 25; step++) {
            const g = random(n, 100 + step);
            simd.apply(w1, g, 0.5, 0.01);
            plain.apply(w2, g, 0.5, 0.01);
          }
          bitsEqual(w1, w2, `${optimizer} weights n=${n}`);
          const a = simd.state().tensors;
          const b = plain.state().tensors;
          for (const k of Object.keys(a)) bitsEqual(a[k]!, b[k]!, `${optimizer} state ${k} n=${n}`);
          simd.dispose();
          plain.dispose();
          freeF32(w1);
        }
      });
    }
  }

  it("allocF32 hands out zeroed, aligned arrays; freed blocks are reused and merged; arrays survive growth", function () {
    const before = simdHeapBytes();
    const a = allocF32(1000);
    const b = allocF32(1000);
    a.fill(1);
    b.fill(2);
    assert.equal(a.byteOffset % 64, 0);
    freeF32(a);
    const c = allocF32(500);
    assert.equal(c.byteOffset, a.byteOffset, "the freed block is reused");
    assert.ok(c.every((x) => x === 0), "zeroed");
    // a large allocation grows the memory: arrays from before keep their values and stay resident
    const big = allocF32(8 * 1024 * 1024);
    assert.ok(isResident(b) && isResident(big));
    assert.ok(b.every((x) => x === 2));
    big[big.length - 1] = 5;
    freeF32(b);
    freeF32(c);
    freeF32(big);
    assert.equal(simdHeapBytes().used, before.used, "every block given back");
    // merged: one allocation as large as the three fits where they were, without growing
    const grown = simdHeapBytes().grown;
    const again = allocF32(8 * 1024 * 1024 + 1000);
    assert.equal(simdHeapBytes().grown, grown);
    freeF32(again);
  });

  it("resident() copies an outside array into scratch memory, and returns a resident one as it is", function () {
    const a = random(5000, 3);
    const r = resident(a)!;
    assert.ok(isResident(r));
    bitsEqual(r, a, "copy");
    const [w] = pair(a);
    assert.equal(resident(w), w);
    freeF32(w);
  });
});

describe("SIMD off (PS_TRAIN_SIMD=0)", function () {
  it("arrays are plain and the loops run in JavaScript", function () {
    const url = new URL("dist/src/util/simd.js", root).href;
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", `const s = await import(${JSON.stringify(url)}); console.log(JSON.stringify([s.simdEnabled(), s.isResident(s.allocF32(1000))]))`], {
      env: { ...process.env, PS_TRAIN_SIMD: "0" },
      encoding: "utf8",
    });
    assert.deepEqual(JSON.parse(out.trim()), [false, false]);
  });
});
