/**
 * The element-wise float32 kernels of the hot paths, JavaScript loops against WebAssembly SIMD
 * (src/util/simd.ts), side by side in one process: summing gradients and the NaN/Infinity check
 * on 8 MiB (a shard's half of a 16 MiB round), SGD on 8 MiB, Adam and momentum on the MNIST MLP's
 * 266,610 values. The same functions the shards and workers call; only where the arrays live
 * differs (a plain Float32Array: the JavaScript loop; allocF32: SIMD). Median of `--reps` calls,
 * rounds alternating. One JSON line per (kernel, impl).
 *
 * Run: node dist/scripts/bench-kernels.js [--reps 80] [--rounds 3]
 */
import type { OptimizerConfig } from "../src/config/train-config.js";
import { DEFAULTS } from "../src/config/train-config.js";
import { createOptimizer } from "../src/ps/optimizer.js";
import { allFinite } from "../src/transport/frames.js";
import { addInto } from "../src/util/f32-kernels.js";
import { allocF32, simdEnabled } from "../src/util/simd.js";
import { argValue, quantiles } from "./bench-util.js";

const reps = Number(argValue("--reps", "80"));
const rounds = Number(argValue("--rounds", "3"));
const MLP = 266_610;
const HALF_ROUND = 2 * 1024 * 1024;

function filled(n: number, simd: boolean): Float32Array {
  const a = simd ? allocF32(n) : new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(i) * 0.01;
  return a;
}

function time(f: () => void): number[] {
  const ts: number[] = [];
  for (let k = 0; k < reps; k++) {
    const t0 = performance.now();
    f();
    ts.push((performance.now() - t0) / 1000);
  }
  return ts;
}

if (!simdEnabled()) process.stderr.write("bench-kernels: SIMD is off (PS_TRAIN_SIMD=0 or no WebAssembly SIMD here): both columns are JavaScript\n");
const opt = (optimizer: OptimizerConfig["optimizer"]): OptimizerConfig => ({ ...DEFAULTS, optimizer });
const cases: { kernel: string; values: number; make: (simd: boolean) => () => void }[] = [
  { kernel: "sum", values: HALF_ROUND, make: (s) => { const a = filled(HALF_ROUND, s), b = filled(HALF_ROUND, s); return () => addInto(a, b); } },
  { kernel: "finite-check", values: HALF_ROUND, make: (s) => { const a = filled(HALF_ROUND, s); return () => void allFinite(a); } },
  { kernel: "sgd", values: HALF_ROUND, make: (s) => { const w = filled(HALF_ROUND, s), g = filled(HALF_ROUND, s), o = createOptimizer(opt("sgd"), HALF_ROUND); return () => o.apply(w, g, 0.5, 1e-6); } },
  { kernel: "momentum", values: MLP, make: (s) => { const w = filled(MLP, s), g = filled(MLP, s), o = createOptimizer(opt("momentum"), MLP); return () => o.apply(w, g, 0.5, 1e-6); } },
  { kernel: "adam", values: MLP, make: (s) => { const w = filled(MLP, s), g = filled(MLP, s), o = createOptimizer(opt("adam"), MLP); return () => o.apply(w, g, 0.5, 1e-6); } },
];
const fns = cases.map((c) => ({ c, js: c.make(false), simd: c.make(true) }));
const got = new Map<string, number[]>();
for (let r = 0; r < rounds; r++) {
  for (const { c, js, simd } of fns) {
    for (const [impl, f] of [["js", js], ["simd", simd]] as const) {
      const k = `${c.kernel}/${impl}`;
      got.set(k, [...(got.get(k) ?? []), ...time(f)]);
    }
  }
}
for (const { c } of fns) {
  const js = quantiles(got.get(`${c.kernel}/js`)!);
  for (const impl of ["js", "simd"] as const) {
    const q = quantiles(got.get(`${c.kernel}/${impl}`)!);
    process.stdout.write(JSON.stringify({ bench: "kernel", kernel: c.kernel, impl, values: c.values, medianSeconds: q.median, minSeconds: q.min, maxSeconds: q.max, speedup: js.median / q.median }) + "\n");
  }
}
