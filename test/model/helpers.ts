import type { ModelName } from "../../src/config/train-config.js";
import type { Task } from "../../src/data/dataset.js";
import { createModel } from "../../src/model/zoo.js";
import { Rng } from "../../src/util/rng.js";

export interface Case {
  name: ModelName;
  shape: number[];
  k: number;
  task: Task;
  batch: number;
  /** fraction of zero inputs (setup) */
  zeros?: number;
}

/** Small instances of every model (and the odd-sized / 'valid'-first conv paths). */
export const CASES: Case[] = [
  { name: "logreg", shape: [6, 6, 1], k: 4, task: "classification", batch: 5 },
  { name: "linreg", shape: [9], k: 2, task: "regression", batch: 6 },
  { name: "linreg", shape: [3, 2, 2], k: 1, task: "regression", batch: 4 },
  { name: "mlp", shape: [12], k: 3, task: "classification", batch: 4 },
  { name: "cnn", shape: [12, 12, 1], k: 3, task: "classification", batch: 3 },
  { name: "cnn", shape: [13, 15, 2], k: 3, task: "classification", batch: 2 },
];

export const caseLabel = (c: Case) => `${c.name} [${c.shape.join(",")}] -> ${c.k} (batch ${c.batch})${c.zeros ? `, ${c.zeros * 100}% zero inputs` : ""}`;

/** The dense models' cases again with 60% zero inputs: the SIMD dense kernels compute those. */
export const SPARSE_CASES: Case[] = CASES.filter((c) => c.name !== "cnn").map((c) => ({ ...c, zeros: 0.6 }));

/**
 * A model with perturbed initial weights (biases non-zero too), uniform [0, 1) inputs and
 * random labels / normal targets. Deterministic in `seed`. With `zeros` > 0 that fraction of the
 * inputs (at random) is 0: the dense models then run in the SIMD dense kernels, which leave
 * mostly non-zero inputs to tfjs (src/model/dense-simd.ts).
 */
export function setup(c: Case, seed = 11) {
  const zeros = c.zeros ?? 0;
  const model = createModel(c.name, c.shape, c.k, c.task);
  const rng = new Rng(seed);
  const w = model.init(seed);
  for (let i = 0; i < w.length; i++) w[i] = w[i]! + 0.05 * rng.normal();
  const x = Float32Array.from({ length: c.batch * model.xSize }, () => (zeros > 0 && rng.next() < zeros ? 0 : rng.next()));
  const y = Float32Array.from({ length: c.batch * model.ySize }, () => (c.task === "classification" ? rng.int(c.k) : rng.normal()));
  model.setWeights(w);
  return { model, w, x, y };
}

export function maxAbs(a: ArrayLike<number>, from = 0, to = a.length): number {
  let m = 0;
  for (let i = from; i < to; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>, from = 0, to = a.length): number {
  let m = 0;
  for (let i = from; i < to; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
