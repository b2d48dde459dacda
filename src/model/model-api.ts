import type { ModelName } from "../config/train-config.js";
import type { Task } from "../data/dataset.js";

/** One trainable tensor's place in the flat parameter vector. */
export interface ParamSpec {
  name: string;
  shape: number[];
  offset: number;
  size: number;
}

export interface BatchResult {
  /** mean loss over the batch */
  loss: number;
  /** correctly classified samples in the batch (0 for regression) */
  correct: number;
}

export interface EvalResult {
  loss: number;
  /** fraction in 0..1 (for regression: 0) */
  accuracy: number;
}

/**
 * A model whose weights live in one flat Float32 vector (the parameter server's key space).
 * Gradients are computed with explicit backward ops (not autodiff) where that is faster.
 */
export interface FlatModel {
  readonly name: ModelName;
  readonly task: Task;
  readonly inputShape: number[];
  readonly numOutputs: number;
  readonly params: readonly ParamSpec[];
  /** total number of parameters */
  readonly size: number;
  /** what computes gradients and outputs: tfjs ops, or the SIMD dense kernels (dense-simd.ts) */
  readonly kernels: "tfjs" | "simd-dense";
  /** deterministic initial weights (Glorot uniform / zeros for biases) */
  init(seed: number): Float32Array;
  /** load the flat weights into the compute backend */
  setWeights(flat: Float32Array): void;
  /**
   * Mean loss and gradient (mean over the batch) at the current weights.
   * x holds `batch` samples, y their labels; the gradient is written into `out` (length = size).
   */
  gradient(x: Float32Array, y: Float32Array, batch: number, out: Float32Array): BatchResult;
  /** loss and accuracy at the current weights over n samples */
  evaluate(x: Float32Array, y: Float32Array, n: number): EvalResult;
  /** save the current weights as a tf.LayersModel (model.json + weights.bin) into dir */
  save(dir: string): Promise<void>;
  dispose(): void;
}
