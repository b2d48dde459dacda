/**
 * Losses with their gradients with respect to the network output.
 *
 * classification: mean over the batch of softmax cross-entropy on the logits,
 *   L = -(1/B) sum_b log softmax(z_b)[y_b],   dL/dz = (softmax(z) - onehot(y)) / B
 *   (tf.losses.softmaxCrossEntropy and Keras categoricalCrossentropy(fromLogits) agree)
 * regression: mean squared error over all B x K outputs (Keras/tf.losses.meanSquaredError),
 *   L = (1/(B K)) sum (p - y)^2,              dL/dp = 2 (p - y) / (B K)
 */
import * as tf from "@tensorflow/tfjs";
import type { Task } from "../data/dataset.js";
import { ErrorCode, PsError } from "../util/errors.js";

/** Labels as class indices (int32), checked to be integers in [0, numClasses). */
export function classLabels(y: Float32Array, n: number, numClasses: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = y[i]!;
    if (!(v >= 0 && v < numClasses && Number.isInteger(v))) {
      throw new PsError(ErrorCode.BAD_DATASET, `label ${v} of sample ${i} is not a class index in 0..${numClasses - 1}`);
    }
    out[i] = v;
  }
  return out;
}

export interface LossOut {
  /** scalar: mean loss */
  loss: tf.Scalar;
  /** scalar: number of correct predictions (0 for regression) */
  correct: tf.Scalar;
  /** gradient of the mean loss with respect to the output */
  dz: tf.Tensor;
}

export interface LossSums {
  /** scalar: summed (not averaged) loss; for regression the sum of squared errors */
  lossSum: tf.Scalar;
  correct: tf.Scalar;
}

/** y: Int32 class indices [B] (classification) or float targets [B, K] (regression). */
export function lossAndGrad(task: Task, z: tf.Tensor2D, y: tf.Tensor): LossOut {
  const [b, k] = z.shape;
  if (task === "classification") {
    const onehot = tf.oneHot(y as tf.Tensor1D, k);
    const logp = tf.logSoftmax(z);
    const loss = tf.div(tf.neg(tf.sum(tf.mul(onehot, logp))), b) as tf.Scalar;
    const dz = tf.div(tf.sub(tf.exp(logp), onehot), b);
    return { loss, correct: countCorrect(z, y as tf.Tensor1D), dz };
  }
  const diff = tf.sub(z, y);
  const loss = tf.div(tf.sum(tf.square(diff)), b * k) as tf.Scalar;
  const dz = tf.mul(diff, 2 / (b * k));
  return { loss, correct: tf.scalar(0), dz };
}

export function lossSums(task: Task, z: tf.Tensor2D, y: tf.Tensor): LossSums {
  if (task === "classification") {
    const onehot = tf.oneHot(y as tf.Tensor1D, z.shape[1]);
    const lossSum = tf.neg(tf.sum(tf.mul(onehot, tf.logSoftmax(z)))) as tf.Scalar;
    return { lossSum, correct: countCorrect(z, y as tf.Tensor1D) };
  }
  return { lossSum: tf.sum(tf.square(tf.sub(z, y))) as tf.Scalar, correct: tf.scalar(0) };
}

function countCorrect(z: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  return tf.sum(tf.cast(tf.equal(tf.argMax(z, 1), labels), "float32")) as tf.Scalar;
}

/**
 * The same losses on plain arrays (for the dense SIMD kernels, dense-simd.ts), in float64:
 * summed loss and correct count over `rows` outputs z [rows, k]; when dz is given, the gradient
 * of the mean loss over those rows is written into it [rows, k].
 * Classification takes class indices, regression targets [rows, k]. argmax: the first maximum.
 */
export function lossSumsInto(
  task: Task,
  z: Float32Array,
  y: Int32Array | Float32Array,
  rows: number,
  k: number,
  dz: Float32Array | null,
): { lossSum: number; correct: number } {
  let lossSum = 0;
  let correct = 0;
  if (task === "classification") {
    for (let r = 0; r < rows; r++) {
      const o = r * k;
      const { max, arg, logSum } = rowLogSumExp(z, o, k);
      const label = y[r]!;
      lossSum -= z[o + label]! - max - logSum;
      if (arg === label) correct++;
      if (dz) {
        for (let j = 0; j < k; j++) dz[o + j] = (Math.exp(z[o + j]! - max - logSum) - (j === label ? 1 : 0)) / rows;
      }
    }
    return { lossSum, correct };
  }
  const scale = 2 / (rows * k);
  for (let i = 0; i < rows * k; i++) {
    const d = z[i]! - y[i]!;
    lossSum += d * d;
    if (dz) dz[i] = d * scale;
  }
  return { lossSum, correct };
}

/** Softmax of each of `rows` rows of k values, in place. */
export function softmaxInto(z: Float32Array, rows: number, k: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * k;
    const { max, logSum } = rowLogSumExp(z, o, k);
    for (let j = 0; j < k; j++) z[o + j] = Math.exp(z[o + j]! - max - logSum);
  }
}

/** Of the row z[o .. o+k): its first maximum and where, and log sum exp(z - max), in float64. */
function rowLogSumExp(z: Float32Array, o: number, k: number): { max: number; arg: number; logSum: number } {
  let max = z[o]!;
  let arg = 0;
  for (let j = 1; j < k; j++) {
    if (z[o + j]! > max) {
      max = z[o + j]!;
      arg = j;
    }
  }
  let sum = 0;
  for (let j = 0; j < k; j++) sum += Math.exp(z[o + j]! - max);
  return { max, arg, logSum: Math.log(sum) };
}
