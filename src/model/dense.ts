/**
 * Fully connected layer y = act(x W + b), W: [in, out], with an explicit backward pass.
 *
 * The backward pass transposes first and then calls a plain matMul: on tfjs-backend-wasm,
 * matMul(a, b, transposeA/transposeB) (what tfjs autodiff emits) is 7-15x slower than
 * tf.transpose followed by matMul (see /work/shared/peers/README.md and bench-step).
 */
import * as tf from "@tensorflow/tfjs";
import type { Activation } from "./spec.js";
import type { Op, Trace } from "./op.js";

export class DenseOp implements Op {
  readonly numParams = 2;

  constructor(readonly activation: Activation) {}

  apply(x: tf.Tensor, w: readonly tf.Tensor[]): tf.Tensor {
    const [kernel, bias] = w as [tf.Tensor2D, tf.Tensor1D];
    return tf.fused.matMul({ a: x as tf.Tensor2D, b: kernel, bias, activation: this.activation });
  }

  forward(x: tf.Tensor, w: readonly tf.Tensor[]): { y: tf.Tensor; trace: Trace } {
    const x2 = x as tf.Tensor2D;
    const kernel = w[0] as tf.Tensor2D;
    const y = this.apply(x2, w) as tf.Tensor2D;
    const relu = this.activation === "relu";
    return {
      y,
      trace: {
        backward(dy, needDx) {
          // relu'(z) = step(z) and z > 0 exactly where y = relu(z) > 0
          const dz = relu ? tf.mul(dy, tf.step(y)) : dy;
          const dW = tf.matMul(tf.transpose(x2), dz as tf.Tensor2D);
          const db = tf.sum(dz, 0);
          const dx = needDx ? tf.matMul(dz as tf.Tensor2D, tf.transpose(kernel)) : null;
          return { dx, grads: [dW, db] };
        },
      },
    };
  }
}

/** Flatten [b, ...shape] to [b, prod(shape)]. */
export class FlattenOp implements Op {
  readonly numParams = 0;

  constructor(readonly inShape: readonly number[]) {}

  apply(x: tf.Tensor): tf.Tensor {
    return tf.reshape(x, [x.shape[0] ?? -1, -1]);
  }

  forward(x: tf.Tensor): { y: tf.Tensor; trace: Trace } {
    const batch = x.shape[0] ?? -1;
    const inShape = this.inShape;
    return {
      y: this.apply(x),
      trace: {
        backward(dy, needDx) {
          return { dx: needDx ? tf.reshape(dy, [batch, ...inShape]) : null, grads: [] };
        },
      },
    };
  }
}
