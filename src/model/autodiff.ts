/**
 * Reference formulation of the zoo's models for tfjs autodiff: the LayerSpec list run with
 * plain, unfused tfjs ops in Keras order (conv -> +bias -> relu -> maxPool, matMul -> +bias
 * -> act) and tfjs's own losses. Used to check the hand-written gradients and as the
 * "tfjs-autodiff" baseline of scripts/bench-step.ts. Not used in training.
 *
 * On wasm, autodiff through conv2d needs the Conv2DBackpropFilter kernel registered by
 * selectBackend('wasm') (wasm-kernels.ts).
 */
import * as tf from "@tensorflow/tfjs";
import type { Task } from "../data/dataset.js";
import type { LayerSpec } from "./spec.js";

/** Logits (classification) or predictions (regression), [batch, numOutputs]. */
export function referenceOutput(layers: readonly LayerSpec[], w: readonly tf.Tensor[], x: tf.Tensor): tf.Tensor2D {
  let h = x;
  let p = 0;
  const act = (t: tf.Tensor, a: string) => (a === "relu" ? tf.relu(t) : t);
  for (const l of layers) {
    switch (l.kind) {
      case "flatten":
        h = tf.reshape(h, [h.shape[0] ?? -1, -1]);
        break;
      case "dense":
        h = act(tf.add(tf.matMul(h as tf.Tensor2D, w[p] as tf.Tensor2D), w[p + 1]!), l.activation);
        p += 2;
        break;
      case "conv2d":
        h = act(tf.add(tf.conv2d(h as tf.Tensor4D, w[p] as tf.Tensor4D, 1, l.padding), w[p + 1]!), l.activation);
        p += 2;
        break;
      case "maxpool2d":
        h = tf.maxPool(h as tf.Tensor4D, l.poolSize, l.poolSize, "valid");
        break;
    }
  }
  return h as tf.Tensor2D;
}

/**
 * Mean loss: tf.losses.softmaxCrossEntropy on one-hot labels (classification; y holds class
 * indices) or tf.losses.meanSquaredError (regression; y is [batch, numOutputs]).
 */
export function referenceLoss(
  model: { layers: readonly LayerSpec[]; task: Task; numOutputs: number },
  w: readonly tf.Tensor[],
  x: tf.Tensor,
  y: tf.Tensor,
): tf.Scalar {
  const z = referenceOutput(model.layers, w, x);
  if (model.task === "classification") {
    return tf.losses.softmaxCrossEntropy(tf.oneHot(tf.cast(y, "int32") as tf.Tensor1D, model.numOutputs), z) as tf.Scalar;
  }
  return tf.losses.meanSquaredError(y, z) as tf.Scalar;
}

/**
 * Loss and gradient by tf.grads at the flat weights `flat` (a convenience for tests):
 * returns the gradient as one flat vector in the model's parameter order.
 */
export function autodiffGradient(
  model: {
    layers: readonly LayerSpec[];
    task: Task;
    numOutputs: number;
    inputShape: readonly number[];
    params: readonly { shape: number[]; offset: number; size: number }[];
    size: number;
  },
  flat: Float32Array,
  x: Float32Array,
  y: Float32Array,
  batch: number,
): { loss: number; grad: Float32Array } {
  return tf.tidy(() => {
    const ws = model.params.map((p) => tf.tensor(flat.slice(p.offset, p.offset + p.size), p.shape));
    const xt = tf.tensor(x.slice(0, batch * sizeOf(model.inputShape)), [batch, ...model.inputShape]);
    const yt =
      model.task === "classification"
        ? tf.tensor1d(y.slice(0, batch))
        : tf.tensor2d(y.slice(0, batch * model.numOutputs), [batch, model.numOutputs]);
    const { value, grads } = tf.valueAndGrads((...w: tf.Tensor[]) => referenceLoss(model, w, xt, yt))(ws);
    const grad = new Float32Array(model.size);
    model.params.forEach((p, i) => grad.set(grads[i]!.dataSync(), p.offset));
    return { loss: value.dataSync()[0]!, grad };
  });
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
