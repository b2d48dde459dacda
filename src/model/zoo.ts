/**
 * The model zoo. Every model is a Keras-style sequential stack (spec.ts); its weights are
 * one flat Float32 vector, layer by layer, each layer's kernel then its bias, each tensor
 * row-major in the tfjs layout (dense kernel [in, out], conv kernel [kh, kw, in, out]):
 *
 *   logreg  [flatten,] dense(K)                                softmax cross-entropy
 *           params: dense/kernel [D,K], dense/bias [K]
 *   linreg  [flatten,] dense(K)                                mean squared error
 *           params: dense/kernel [D,K], dense/bias [K]
 *   mlp     LeNet-300-100: [flatten,] dense1(300, relu), dense2(100, relu), dense3(K)
 *           params: dense1/kernel [D,300], dense1/bias, dense2/kernel [300,100], dense2/bias,
 *                   dense3/kernel [100,K], dense3/bias               (D=784: 266,610 for K=10)
 *   cnn     LeNet-5-like, image input [h, w, c] with h, w >= 12:
 *           conv1(6, 5x5, same, relu), pool1(2x2), conv2(16, 5x5, valid, relu), pool2(2x2),
 *           flatten, dense1(120, relu), dense2(84, relu), dense3(K)
 *           params: conv1/kernel [5,5,c,6], conv1/bias [6], conv2/kernel [5,5,6,16],
 *                   conv2/bias [16], dense1/kernel [F,120], dense1/bias, dense2/kernel
 *                   [120,84], dense2/bias, dense3/kernel [84,K], dense3/bias
 *                   (28x28x1: F = 5*5*16 = 400, 61,706 parameters for K=10)
 *
 * D is the flattened input size and K = numOutputs; [flatten,] is there for inputs of rank
 * >= 2 only (it has no parameters). model.params lists names, shapes and
 * offsets; the saved tf.LayersModel has the same layer names and weight order.
 */
import type { ModelName } from "../config/train-config.js";
import type { Task } from "../data/dataset.js";
import { ErrorCode, PsError } from "../util/errors.js";
import type { FlatModel } from "./model-api.js";
import { SequentialFlatModel, type ModelOptions } from "./sequential.js";
import { planLayers, type LayerSpec } from "./spec.js";

const shapeText = (s: readonly number[]) => `[${s.join(", ")}]`;

function shapeError(name: ModelName, inputShape: readonly number[], numOutputs: number, task: Task, why: string): PsError {
  const what = task === "classification" ? `${numOutputs} classes` : `${numOutputs} outputs`;
  return new PsError(
    ErrorCode.MODEL_SHAPE,
    `model ${name} does not fit the dataset (samples ${shapeText(inputShape)}, ${task}, ${what}): ${why}`,
  );
}

/** The layer list of a zoo model; throws PsError(MODEL_SHAPE) if it does not fit the data. */
export function modelLayers(name: ModelName, inputShape: readonly number[], numOutputs: number, task: Task): LayerSpec[] {
  const fail = (why: string) => shapeError(name, inputShape, numOutputs, task, why);
  if (inputShape.length === 0 || !inputShape.every((d) => Number.isInteger(d) && d > 0)) {
    throw fail("the sample shape must be a non-empty list of positive integers");
  }
  if (!Number.isInteger(numOutputs) || numOutputs < 1) throw fail("numOutputs must be a positive integer");
  const k = numOutputs;
  // Keras' Flatten rejects inputs that are already flat ([batch, d]): only for rank >= 2
  const flatten: LayerSpec[] = inputShape.length > 1 ? [{ kind: "flatten", name: "flatten" }] : [];
  if (name === "linreg") {
    if (task !== "regression") throw fail("linreg is a regression model; use logreg, mlp or cnn for classification");
    return [...flatten, { kind: "dense", name: "dense", units: k, activation: "linear" }];
  }
  if (task !== "classification") throw fail(`${name} is a classifier; use linreg for regression`);
  if (k < 2) throw fail("a classifier needs at least 2 classes");
  switch (name) {
    case "logreg":
      return [...flatten, { kind: "dense", name: "dense", units: k, activation: "linear" }];
    case "mlp":
      return [
        ...flatten,
        { kind: "dense", name: "dense1", units: 300, activation: "relu" },
        { kind: "dense", name: "dense2", units: 100, activation: "relu" },
        { kind: "dense", name: "dense3", units: k, activation: "linear" },
      ];
    case "cnn":
      if (inputShape.length !== 3) throw fail("cnn needs image samples [h, w, c]");
      return [
        { kind: "conv2d", name: "conv1", filters: 6, kernelSize: 5, padding: "same", activation: "relu" },
        { kind: "maxpool2d", name: "pool1", poolSize: 2 },
        { kind: "conv2d", name: "conv2", filters: 16, kernelSize: 5, padding: "valid", activation: "relu" },
        { kind: "maxpool2d", name: "pool2", poolSize: 2 },
        { kind: "flatten", name: "flatten" },
        { kind: "dense", name: "dense1", units: 120, activation: "relu" },
        { kind: "dense", name: "dense2", units: 84, activation: "relu" },
        { kind: "dense", name: "dense3", units: k, activation: "linear" },
      ];
  }
}

/** Build a zoo model. Throws PsError(MODEL_SHAPE) if the model does not fit the dataset. */
export function createModel(name: ModelName, inputShape: number[], numOutputs: number, task: Task, options: ModelOptions = {}): SequentialFlatModel & FlatModel {
  const layers = modelLayers(name, inputShape, numOutputs, task);
  const plan = planLayers(layers, inputShape);
  if (typeof plan === "string") throw shapeError(name, inputShape, numOutputs, task, plan);
  return new SequentialFlatModel(name, task, inputShape.slice(), numOutputs, layers, plan.shapes, plan.params, plan.size, options);
}
