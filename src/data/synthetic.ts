/**
 * Synthetic tasks with a known optimum, fully determined by the seed.
 *
 * `synthetic`: multinomial logistic regression. A teacher W* (d x k, row-major: W[f * k + c]) and
 *   b* (k) are drawn from N(0, 1); x ~ N(0, I_d); label = argmax_c (x W* + b*)_c. The classes are
 *   linearly separable by construction, so the teacher (and hence an optimal linear model) has
 *   100% accuracy on train and test.
 * `synthetic-linear`: linear regression y = x . w* + b* + N(0, sigma^2), sigma = 0.01, with
 *   w* ~ N(0, 1/d) (so y has about unit variance) and b* ~ N(0, 1).
 *
 * The teacher/truth, the training set and the test set each come from their own derived seed,
 * so changing the number of samples does not change the teacher.
 */
import type { Dataset } from "./dataset.js";
import { Rng, deriveSeed } from "../util/rng.js";

export const SYNTHETIC_FEATURES = 32;
export const SYNTHETIC_CLASSES = 4;
export const SYNTHETIC_TRAIN_COUNT = 8192;
export const SYNTHETIC_TEST_COUNT = 2048;
export const SYNTHETIC_LINEAR_NOISE = 0.01;

/** salts for deriveSeed, one per stream */
const SALT_CLS = 0x5c1a55;
const SALT_LIN = 0x11ea7;
const STREAM_TEACHER = 0;
const STREAM_TRAIN = 1;
const STREAM_TEST = 2;

export interface SyntheticOptions {
  seed: number;
  trainCount?: number;
  testCount?: number;
  features?: number;
}

export interface SyntheticClassificationOptions extends SyntheticOptions {
  classes?: number;
}

export interface Teacher {
  features: number;
  classes: number;
  /** row-major [features][classes] */
  W: Float64Array;
  b: Float64Array;
}

export interface LinearTruth {
  features: number;
  w: Float64Array;
  b: number;
  noise: number;
}

export interface SyntheticClassificationDataset extends Dataset {
  teacher: Teacher;
}

export interface SyntheticLinearDataset extends Dataset {
  truth: LinearTruth;
}

/** The teacher of `synthetic` for this seed. */
export function syntheticTeacher(seed: number, features = SYNTHETIC_FEATURES, classes = SYNTHETIC_CLASSES): Teacher {
  const rng = new Rng(deriveSeed(seed, SALT_CLS, STREAM_TEACHER));
  const W = new Float64Array(features * classes);
  for (let i = 0; i < W.length; i++) W[i] = rng.normal();
  const b = new Float64Array(classes);
  for (let c = 0; c < classes; c++) b[c] = rng.normal();
  return { features, classes, W, b };
}

/** Class the teacher assigns to sample `x` (features values starting at `offset`). */
export function teacherPredict(t: Teacher, x: ArrayLike<number>, offset = 0): number {
  let best = 0;
  let bestScore = -Infinity;
  for (let c = 0; c < t.classes; c++) {
    let s = t.b[c] as number;
    for (let f = 0; f < t.features; f++) s += (x[offset + f] as number) * (t.W[f * t.classes + c] as number);
    if (s > bestScore) {
      bestScore = s;
      best = c;
    }
  }
  return best;
}

/** The true weights of `synthetic-linear` for this seed. */
export function syntheticLinearTruth(seed: number, features = SYNTHETIC_FEATURES): LinearTruth {
  const rng = new Rng(deriveSeed(seed, SALT_LIN, STREAM_TEACHER));
  const w = new Float64Array(features);
  const scale = 1 / Math.sqrt(features);
  for (let i = 0; i < features; i++) w[i] = rng.normal() * scale;
  const b = rng.normal();
  return { features, w, b, noise: SYNTHETIC_LINEAR_NOISE };
}

function normalMatrix(rng: Rng, n: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = rng.normal();
  return x;
}

function checkCount(what: string, n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`synthetic: ${what} must be a positive integer, got ${n}`);
}

export function makeSyntheticClassification(opts: SyntheticClassificationOptions): SyntheticClassificationDataset {
  const d = opts.features ?? SYNTHETIC_FEATURES;
  const k = opts.classes ?? SYNTHETIC_CLASSES;
  const nTrain = opts.trainCount ?? SYNTHETIC_TRAIN_COUNT;
  const nTest = opts.testCount ?? SYNTHETIC_TEST_COUNT;
  checkCount("features", d);
  checkCount("trainCount", nTrain);
  checkCount("testCount", nTest);
  if (!Number.isInteger(k) || k < 2) throw new RangeError(`synthetic: classes must be an integer >= 2, got ${k}`);
  const teacher = syntheticTeacher(opts.seed, d, k);
  const split = (stream: number, n: number): [Float32Array, Float32Array] => {
    const x = normalMatrix(new Rng(deriveSeed(opts.seed, SALT_CLS, stream)), n * d);
    const y = new Float32Array(n);
    for (let i = 0; i < n; i++) y[i] = teacherPredict(teacher, x, i * d);
    return [x, y];
  };
  const [trainX, trainY] = split(STREAM_TRAIN, nTrain);
  const [testX, testY] = split(STREAM_TEST, nTest);
  return {
    name: "synthetic",
    task: "classification",
    inputShape: [d],
    numOutputs: k,
    trainX,
    trainY,
    trainCount: nTrain,
    testX,
    testY,
    testCount: nTest,
    teacher,
  };
}

export function makeSyntheticLinear(opts: SyntheticOptions): SyntheticLinearDataset {
  const d = opts.features ?? SYNTHETIC_FEATURES;
  const nTrain = opts.trainCount ?? SYNTHETIC_TRAIN_COUNT;
  const nTest = opts.testCount ?? SYNTHETIC_TEST_COUNT;
  checkCount("features", d);
  checkCount("trainCount", nTrain);
  checkCount("testCount", nTest);
  const truth = syntheticLinearTruth(opts.seed, d);
  const split = (stream: number, n: number): [Float32Array, Float32Array] => {
    const rng = new Rng(deriveSeed(opts.seed, SALT_LIN, stream));
    const x = normalMatrix(rng, n * d);
    const y = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let s = truth.b;
      for (let f = 0; f < d; f++) s += (x[i * d + f] as number) * (truth.w[f] as number);
      y[i] = s + truth.noise * rng.normal();
    }
    return [x, y];
  };
  const [trainX, trainY] = split(STREAM_TRAIN, nTrain);
  const [testX, testY] = split(STREAM_TEST, nTest);
  return {
    name: "synthetic-linear",
    task: "regression",
    inputShape: [d],
    numOutputs: 1,
    trainX,
    trainY,
    trainCount: nTrain,
    testX,
    testY,
    testCount: nTest,
    truth,
  };
}
