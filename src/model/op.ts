import type * as tf from "@tensorflow/tfjs";

/** What a training forward pass keeps for its backward pass. */
export interface Trace {
  /**
   * Gradients of this op's parameters (in its parameter order) and, when `needDx`, of its
   * input, given the gradient `dy` of its output. Everything is per batch (summed over
   * samples: the loss's gradient already carries the 1/batch of the mean).
   */
  backward(dy: tf.Tensor, needDx: boolean): { dx: tf.Tensor | null; grads: tf.Tensor[] };
}

/**
 * One step of the compute graph: one or more Keras layers fused (conv + relu + maxpool is
 * one op). Weights are passed in, in the op's parameter order.
 */
export interface Op {
  /** number of parameter tensors this op owns */
  readonly numParams: number;
  /** inference forward */
  apply(x: tf.Tensor, w: readonly tf.Tensor[]): tf.Tensor;
  /** training forward: output plus what its backward needs */
  forward(x: tf.Tensor, w: readonly tf.Tensor[]): { y: tf.Tensor; trace: Trace };
}
