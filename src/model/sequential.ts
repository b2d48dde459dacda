/**
 * FlatModel over a LayerSpec list: weights live in one flat Float32 vector (see spec.ts for
 * the order), the compute graph is a list of fused ops with explicit backward passes.
 */
import * as tf from "@tensorflow/tfjs";
import type { ModelName } from "../config/train-config.js";
import { sampleSize, type Task } from "../data/dataset.js";
import { ConvReluPoolOp } from "./conv.js";
import { DenseOp, FlattenOp } from "./dense.js";
import { DenseSimd, type DenseLayerPlan } from "./dense-simd.js";
import { glorotInit } from "./init.js";
import { classLabels, lossAndGrad, lossSums, lossSumsInto, softmaxInto } from "./loss.js";
import type { BatchResult, EvalResult, FlatModel, ParamSpec } from "./model-api.js";
import type { Op, Trace } from "./op.js";
import { buildLayersModel, fileSaveHandler } from "./save.js";
import type { LayerSpec, ParamInfo } from "./spec.js";
import { readInto, tensorFrom } from "./transfer.js";

/** Samples per forward pass in evaluate()/predict(), to bound memory. */
export const EVAL_CHUNK = 1000;

export interface CompiledOp {
  op: Op;
  /** index of its first parameter tensor */
  firstParam: number;
  /** the LayerSpec layers [firstLayer, endLayer) it computes */
  firstLayer: number;
  endLayer: number;
}

/** The compute graph of a layer list: fused ops in order (a pipeline stage runs a slice of it). */
export function compile(layers: readonly LayerSpec[], shapes: readonly number[][]): CompiledOp[] {
  const ops: CompiledOp[] = [];
  let param = 0;
  for (let i = 0; i < layers.length; i++) {
    const l = layers[i]!;
    const inShape = shapes[i]!;
    let op: Op;
    const firstLayer = i;
    const next = layers[i + 1];
    if (l.kind === "flatten") {
      op = new FlattenOp(inShape);
    } else if (l.kind === "dense") {
      op = new DenseOp(l.activation);
    } else if (l.kind === "conv2d" && l.activation === "relu" && next?.kind === "maxpool2d" && next.poolSize === 2) {
      op = new ConvReluPoolOp(inShape as [number, number, number], l.filters, l.kernelSize, l.padding);
      i++;
    } else {
      throw new Error(`no compute op for layer ${l.name} (${l.kind}) followed by ${next?.kind ?? "nothing"}`);
    }
    ops.push({ op, firstParam: param, firstLayer, endLayer: i + 1 });
    param += op.numParams;
  }
  return ops;
}

/**
 * How a model computes: `tfjs` ops on the selected backend, or `simd-dense`, the WebAssembly SIMD
 * kernels of dense-simd.ts, for stacks of dense layers (logreg, linreg, mlp) when the backend is
 * wasm or cpu (tfjs-node's and the GPU's own kernels are left to them).
 */
export type ComputeKernels = FlatModel["kernels"];

export interface ModelOptions {
  /** `auto` (default): simd-dense where it applies; `tfjs`: always tfjs */
  kernels?: "auto" | "tfjs";
}

/**
 * Whether PS_TRAIN_DENSE_KERNELS allows the SIMD dense kernels ("tfjs" or "0" turns them off,
 * for side-by-side measurements; PS_TRAIN_SIMD=0 turns off every SIMD kernel).
 */
export function denseKernelsFromEnv(): "auto" | "tfjs" {
  const v = (process.env["PS_TRAIN_DENSE_KERNELS"] ?? "").trim();
  return v === "tfjs" || v === "0" ? "tfjs" : "auto";
}

/** The dense layers of a compiled op list, or null when it holds anything else. */
function densePlan(ops: readonly CompiledOp[], info: readonly ParamInfo[]): DenseLayerPlan[] | null {
  const plan: DenseLayerPlan[] = [];
  for (const { op, firstParam } of ops) {
    if (op instanceof FlattenOp) continue;
    if (!(op instanceof DenseOp) || (op.activation !== "relu" && op.activation !== "linear")) return null;
    const kernel = info[firstParam]!;
    const bias = info[firstParam + 1]!;
    plan.push({ inCols: kernel.shape[0]!, outCols: kernel.shape[1]!, kernelOffset: kernel.offset, biasOffset: bias.offset, relu: op.activation === "relu" });
  }
  return plan.length > 0 ? plan : null;
}

export class SequentialFlatModel implements FlatModel {
  readonly params: readonly ParamSpec[];
  readonly size: number;
  /** per-sample input size and target size */
  readonly xSize: number;
  readonly ySize: number;
  private readonly info: readonly ParamInfo[];
  /** the compute graph, in order (pipeline stages run slices of it) */
  readonly ops: readonly CompiledOp[];
  /** per-sample input shape of every layer, then the output shape */
  readonly shapes: readonly number[][];
  /** index of the first op that owns parameters: backward stops there */
  private readonly firstParamOp: number;
  private weights: tf.Tensor[] | null = null;
  private disposed = false;
  /** the SIMD dense kernels: undefined until dense() decides (at the first setWeights), null when not used */
  private simd: DenseSimd | null | undefined = undefined;
  /** set by setWeights; with `simd` the tfjs weight tensors are made only when asked for */
  private hasWeights = false;
  private readonly plan: DenseLayerPlan[] | null;

  constructor(
    readonly name: ModelName,
    readonly task: Task,
    readonly inputShape: number[],
    readonly numOutputs: number,
    /** the Keras-equivalent layer list (see spec.ts) */
    readonly layers: readonly LayerSpec[],
    shapes: readonly number[][],
    params: readonly ParamInfo[],
    size: number,
    options: ModelOptions = {},
  ) {
    this.info = params;
    this.params = params.map((p) => ({ name: p.name, shape: p.shape.slice(), offset: p.offset, size: p.size }));
    this.size = size;
    this.xSize = sampleSize(inputShape);
    this.ySize = task === "classification" ? 1 : numOutputs;
    this.ops = compile(layers, shapes);
    this.shapes = shapes.map((sh) => sh.slice());
    this.firstParamOp = this.ops.findIndex((o) => o.op.numParams > 0);
    this.plan = (options.kernels ?? denseKernelsFromEnv()) === "auto" ? densePlan(this.ops, params) : null;
  }

  /** What computes this model's gradients and outputs (decided once, on the backend selected then). */
  get kernels(): ComputeKernels {
    return this.dense() ? "simd-dense" : "tfjs";
  }

  /** Training batches the SIMD dense kernels computed, and those they left to tfjs as too dense. */
  get denseBatches(): { simd: number; tfjs: number } {
    return { simd: this.simd?.ran ?? 0, tfjs: this.simd?.declined ?? 0 };
  }

  private dense(): DenseSimd | null {
    if (this.simd === undefined) {
      const backend = tf.getBackend();
      this.simd = this.plan && (backend === "wasm" || backend === "cpu") ? DenseSimd.create(this.plan, this.size) : null;
    }
    return this.simd;
  }

  init(seed: number): Float32Array {
    return glorotInit(this.info, this.size, seed);
  }

  setWeights(flat: Float32Array): void {
    this.checkAlive();
    if (flat.length !== this.size) throw new Error(`${this.name}.setWeights: got ${flat.length} values, the model has ${this.size}`);
    this.hasWeights = true;
    if (this.dense()) {
      this.simd!.setWeights(flat);
      this.weights?.forEach((t) => t.dispose());
      this.weights = null;
      return;
    }
    const old = this.weights;
    this.weights = this.upload(flat);
    old?.forEach((t) => t.dispose());
  }

  /**
   * tfjs tensors of the flat weights, one per parameter: tensorFrom copies, so the caller may
   * update `flat` in place; tf.keep: they survive a caller's tf.tidy.
   */
  private upload(flat: Float32Array): tf.Tensor[] {
    return this.params.map((p) => tf.keep(tensorFrom(flat.subarray(p.offset, p.offset + p.size), p.shape)));
  }

  /** The current weight tensors (owned by the model; do not dispose). */
  weightTensors(): readonly tf.Tensor[] {
    return this.ready();
  }

  gradient(x: Float32Array, y: Float32Array, batch: number, out: Float32Array): BatchResult {
    this.checkAlive();
    if (!this.hasWeights) throw new Error(`${this.name}: call setWeights() before using the model`);
    this.checkBatch(x, y, batch);
    if (out.length !== this.size) throw new Error(`${this.name}.gradient: out has length ${out.length}, expected ${this.size}`);
    const labels = this.task === "classification" ? classLabels(y, batch, this.numOutputs) : null;
    if (this.simd) {
      const k = this.numOutputs;
      const perLoss = this.task === "classification" ? batch : batch * k;
      const r = this.simd.gradient(x, batch, (z, rows, dz) => {
        const sums = lossSumsInto(this.task, z, labels ?? y, rows, k, dz);
        return { loss: sums.lossSum / perLoss, correct: sums.correct };
      }, out);
      if (r) return r;
      // mostly non-zero inputs: tfjs's dense products are faster (dense-simd.ts)
    }
    const w = this.ready();
    const results = tf.tidy(() => {
      const xt = tf.tensor(x.subarray(0, batch * this.xSize), [batch, ...this.inputShape]);
      const yt = labels ? tf.tensor1d(labels, "int32") : tf.tensor2d(y.subarray(0, batch * this.numOutputs), [batch, this.numOutputs]);
      const traces: Trace[] = [];
      let h: tf.Tensor = xt;
      for (const { op, firstParam } of this.ops) {
        const r = op.forward(h, w.slice(firstParam, firstParam + op.numParams));
        traces.push(r.trace);
        h = r.y;
      }
      const { loss, correct, dz } = lossAndGrad(this.task, h as tf.Tensor2D, yt);
      const grads: tf.Tensor[] = new Array<tf.Tensor>(w.length);
      let d: tf.Tensor | null = dz;
      for (let i = this.ops.length - 1; i >= this.firstParamOp && d !== null; i--) {
        const { firstParam } = this.ops[i]!;
        const r = traces[i]!.backward(d, i > this.firstParamOp);
        r.grads.forEach((g, k) => (grads[firstParam + k] = g));
        d = r.dx;
      }
      return [...grads, tf.stack([loss, correct])];
    });
    // Straight into `out`, one tensor at a time (on wasm: copies from the wasm heap, no
    // concat and no intermediate arrays; see transfer.ts)
    const tail = new Float32Array(2);
    try {
      this.params.forEach((p, i) => readInto(results[i]!, out, 0, p.size, p.offset));
      readInto(results[results.length - 1]!, tail);
    } finally {
      results.forEach((t) => t.dispose());
    }
    return { loss: tail[0]!, correct: tail[1]! };
  }

  evaluate(x: Float32Array, y: Float32Array, n: number): EvalResult {
    this.checkBatch(x, y, n, true);
    if (n === 0) return { loss: Number.NaN, accuracy: Number.NaN };
    let lossSum = 0;
    let correct = 0;
    if (this.simd && this.hasWeights) {
      const k = this.numOutputs;
      const labels = this.task === "classification" ? classLabels(y, n, k) : null;
      this.simd.outputs(x, n, (z, s, m) => {
        const r = lossSumsInto(this.task, z, labels ? labels.subarray(s, s + m) : y.subarray(s * k, (s + m) * k), m, k, null);
        lossSum += r.lossSum;
        correct += r.correct;
      });
      return this.task === "classification" ? { loss: lossSum / n, accuracy: correct / n } : { loss: lossSum / (n * k), accuracy: 0 };
    }
    const w = this.ready();
    for (let s = 0; s < n; s += EVAL_CHUNK) {
      const m = Math.min(EVAL_CHUNK, n - s);
      const xs = x.subarray(s * this.xSize, (s + m) * this.xSize);
      const ys = y.subarray(s * this.ySize, (s + m) * this.ySize);
      const labels = this.task === "classification" ? classLabels(ys, m, this.numOutputs) : null;
      const sums = tf.tidy(() => {
        const z = this.forward(w, xs, m);
        const yt = labels ? tf.tensor1d(labels, "int32") : tf.tensor2d(ys, [m, this.numOutputs]);
        const r = lossSums(this.task, z, yt);
        return tf.stack([r.lossSum, r.correct]);
      });
      const v = sums.dataSync();
      sums.dispose();
      lossSum += v[0]!;
      correct += v[1]!;
    }
    if (this.task === "classification") return { loss: lossSum / n, accuracy: correct / n };
    return { loss: lossSum / (n * this.numOutputs), accuracy: 0 };
  }

  /**
   * Model output for n samples, [n, numOutputs] row-major: class probabilities (softmax)
   * for a classifier, predictions for a regressor; what the saved tf.LayersModel predicts.
   */
  predict(x: Float32Array, n: number): Float32Array {
    const out = new Float32Array(n * this.numOutputs);
    if (this.simd && this.hasWeights) {
      const k = this.numOutputs;
      this.simd.outputs(x, n, (z, s, m) => {
        out.set(z, s * k);
        if (this.task === "classification") softmaxInto(out.subarray(s * k, (s + m) * k), m, k);
      });
      return out;
    }
    const w = this.ready();
    for (let s = 0; s < n; s += EVAL_CHUNK) {
      const m = Math.min(EVAL_CHUNK, n - s);
      const p = tf.tidy(() => {
        const z = this.forward(w, x.subarray(s * this.xSize, (s + m) * this.xSize), m);
        return this.task === "classification" ? tf.softmax(z) : z;
      });
      out.set(p.dataSync(), s * this.numOutputs);
      p.dispose();
    }
    return out;
  }

  async save(dir: string): Promise<void> {
    const w = this.ready();
    const model = buildLayersModel(this.layers, this.inputShape, this.task);
    try {
      model.setWeights(w.slice());
      await model.save(fileSaveHandler(dir));
    } finally {
      model.dispose();
    }
  }

  dispose(): void {
    this.weights?.forEach((t) => t.dispose());
    this.weights = null;
    this.simd?.dispose();
    this.simd = null;
    this.disposed = true;
  }

  /** logits / predictions [m, numOutputs] for m samples (inference path); call inside tidy */
  private forward(w: readonly tf.Tensor[], x: Float32Array, m: number): tf.Tensor2D {
    let h: tf.Tensor = tf.tensor(x, [m, ...this.inputShape]);
    for (const { op, firstParam } of this.ops) h = op.apply(h, w.slice(firstParam, firstParam + op.numParams));
    return h as tf.Tensor2D;
  }

  private checkAlive(): void {
    if (this.disposed) throw new Error(`${this.name}: model was disposed`);
  }

  private ready(): tf.Tensor[] {
    this.checkAlive();
    if (!this.hasWeights) throw new Error(`${this.name}: call setWeights() before using the model`);
    if (this.weights === null && this.simd) {
      // the kernels hold the weights: tfjs tensors only for what runs in tfjs (save, pipelines)
      this.weights = this.upload(this.simd.weights());
    }
    return this.weights!;
  }

  private checkBatch(x: Float32Array, y: Float32Array, n: number, allowEmpty = false): void {
    if (!Number.isInteger(n) || n < (allowEmpty ? 0 : 1)) throw new Error(`${this.name}: bad sample count ${n}`);
    if (x.length < n * this.xSize) throw new Error(`${this.name}: x holds ${x.length} values, ${n} samples need ${n * this.xSize}`);
    if (y.length < n * this.ySize) throw new Error(`${this.name}: y holds ${y.length} values, ${n} samples need ${n * this.ySize}`);
  }
}
