/**
 * 2x2 / stride 2 max pooling over four "phase" tensors z00, z01, z10, z11, where
 * z_ij[b, y, x, c] = z[b, 2y+i, 2x+j, c] (the conv op computes them directly as four
 * stride-2 convolutions, see conv.ts).
 *
 * Why not tf.maxPool's gradient: on tfjs-backend-wasm 4.22 its MaxPoolGrad kernel costs
 * ~11 ms per 128x28x28x6 tensor, sends the gradient of every window whose maximum is
 * negative to the window's first element (wrong) and gives ties to the last element (the
 * cpu backend: to the first); `tf.maximum` is slow there too, and slices and 6-D transposes
 * are slower still. A tournament of three pairwise selections uses only fast elementwise
 * kernels (~1.5 ms forward + backward for the same tensor).
 *
 * Ties go to the first element in row-major window order (z00, z01, z10, z11), exactly like
 * tf.maxPool's gradient on the cpu backend: every comparison keeps the left operand unless
 * the right one is strictly greater, and left groups precede right groups.
 */
import * as tf from "@tensorflow/tfjs";

/** Exact select: a where s = 0, b where s = 1 (s is 0/1); a - a*s and b*s are exact. */
function select(a: tf.Tensor, b: tf.Tensor, s: tf.Tensor): tf.Tensor {
  return tf.add(tf.sub(a, tf.mul(a, s)), tf.mul(b, s));
}

export interface PoolTrace {
  /** s = 1 where the right operand of a comparison won */
  s01: tf.Tensor;
  s23: tf.Tensor;
  sFinal: tf.Tensor;
}

/** Max over the four phases; returns the pooled tensor and the comparison outcomes. */
export function maxPool4(z: readonly [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]): { q: tf.Tensor; trace: PoolTrace } {
  const [z00, z01, z10, z11] = z;
  // step(d) = 1 iff d > 0; for floats b - a > 0 iff b > a (no flush-to-zero in wasm/JS)
  const s01 = tf.step(tf.sub(z01, z00));
  const m0 = select(z00, z01, s01);
  const s23 = tf.step(tf.sub(z11, z10));
  const m1 = select(z10, z11, s23);
  const sFinal = tf.step(tf.sub(m1, m0));
  return { q: select(m0, m1, sFinal), trace: { s01, s23, sFinal } };
}

/** Route the pooled gradient back to the winning phase of each window. */
export function maxPool4Backward(dq: tf.Tensor, t: PoolTrace): [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor] {
  const d1 = tf.mul(dq, t.sFinal);
  const d0 = tf.sub(dq, d1);
  const g01 = tf.mul(d0, t.s01);
  const g00 = tf.sub(d0, g01);
  const g11 = tf.mul(d1, t.s23);
  const g10 = tf.sub(d1, g11);
  return [g00, g01, g10, g11];
}

/**
 * Inverse of the phase split: out[b, 2y+i, 2x+j, c] = g_ij[b, y, x, c], shape [b, 2p, 2q, c].
 * Built from stacks and 3-D transposes, which are fast on wasm (6-D transposes, slices and
 * depthToSpace are not).
 */
export function interleave4(g: readonly [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]): tf.Tensor4D {
  const [b, p, q, c] = g[0].shape as [number, number, number, number];
  const m = b * p * q;
  const rows = [0, 1].map((i) => {
    const pair = tf.stack([tf.reshape(g[2 * i]!, [m, c]), tf.reshape(g[2 * i + 1]!, [m, c])]); // [2(j), m, c]
    return tf.reshape(tf.transpose(pair, [1, 0, 2]), [b * p, 2 * q * c]); // [b*p, (x, j, c)]
  });
  const both = tf.stack(rows); // [2(i), b*p, 2q*c]
  return tf.reshape(tf.transpose(both, [1, 0, 2]), [b, 2 * p, 2 * q, c]);
}
