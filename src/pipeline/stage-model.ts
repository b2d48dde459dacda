/**
 * One pipeline stage's slice of a SequentialFlatModel: the same fused ops with the same explicit
 * backward passes, run on a contiguous run of units, so that stage 0 .. K-1 chained compute what
 * the whole model computes (test/pipeline checks the gradients against model.gradient).
 *
 * forward() keeps its traces for backward(): call both between beginStep() and endStep(), which
 * own every tensor the step creates (a step spans awaits on the network, so tf.tidy cannot).
 */
import * as tf from "@tensorflow/tfjs";
import { sampleSize } from "../data/dataset.js";
import { classLabels, lossAndGrad } from "../model/loss.js";
import type { Trace } from "../model/op.js";
import type { SequentialFlatModel } from "../model/sequential.js";
import { readInto, tensorFrom } from "../model/transfer.js";
import type { KeyRange } from "../ps/key-range.js";
import type { PipelineUnit } from "./units.js";

export interface MicroTrace {
  traces: Trace[];
  n: number;
}

export class StageModel {
  /** this stage's keys in the flat parameter vector */
  readonly keys: KeyRange;
  readonly isFirst: boolean;
  readonly isLast: boolean;
  /** per-sample input and output shapes */
  readonly inShape: number[];
  readonly outShape: number[];
  readonly inSize: number;
  readonly outSize: number;
  private readonly opStart: number;
  private readonly opEnd: number;
  private readonly paramStart: number;
  private weights: tf.Tensor[] = [];
  private inScope = false;

  constructor(
    readonly model: SequentialFlatModel,
    units: readonly PipelineUnit[],
    readonly unitStart: number,
    readonly unitEnd: number,
  ) {
    const first = units[unitStart];
    const last = units[unitEnd - 1];
    if (!first || !last || unitEnd <= unitStart) throw new RangeError(`stage [${unitStart}, ${unitEnd}) is not a run of the model's ${units.length} units`);
    this.isFirst = unitStart === 0;
    this.isLast = unitEnd === units.length;
    this.opStart = first.opStart;
    this.opEnd = last.opEnd;
    this.paramStart = first.paramStart;
    this.keys = { start: first.keys.start, end: last.keys.end };
    this.inShape = unitStart === 0 ? model.inputShape.slice() : units[unitStart - 1]!.outShape.slice();
    this.outShape = last.outShape.slice();
    this.inSize = sampleSize(this.inShape);
    this.outSize = sampleSize(this.outShape);
  }

  /** Load this stage's weights from a full-length flat vector (only its own keys are read). */
  setWeights(flat: Float32Array): void {
    const old = this.weights;
    const ws: tf.Tensor[] = [];
    for (let o = this.opStart; o < this.opEnd; o++) {
      const { firstParam, op } = this.model.ops[o]!;
      for (let p = firstParam; p < firstParam + op.numParams; p++) {
        const spec = this.model.params[p]!;
        ws.push(tf.keep(tensorFrom(flat.subarray(spec.offset, spec.offset + spec.size), spec.shape)));
      }
    }
    this.weights = ws;
    old.forEach((t) => t.dispose());
  }

  beginStep(): void {
    if (this.inScope) throw new Error("StageModel: beginStep() twice");
    tf.engine().startScope();
    this.inScope = true;
  }

  /** Dispose every tensor of the step (traces included). */
  endStep(): void {
    if (!this.inScope) return;
    this.inScope = false;
    tf.engine().endScope();
  }

  /** Training forward of n samples; returns the output (to send on, or the logits) and the traces. */
  forward(x: Float32Array, n: number): { y: tf.Tensor; trace: MicroTrace } {
    if (!this.inScope) throw new Error("StageModel: forward() outside beginStep()/endStep()");
    if (x.length !== n * this.inSize) throw new RangeError(`stage input holds ${x.length} values, ${n} samples need ${n * this.inSize}`);
    let h: tf.Tensor = tensorFrom(x, [n, ...this.inShape]);
    const traces: Trace[] = [];
    let w = 0;
    for (let o = this.opStart; o < this.opEnd; o++) {
      const { op } = this.model.ops[o]!;
      const r = op.forward(h, this.weights.slice(w, w + op.numParams));
      w += op.numParams;
      traces.push(r.trace);
      h = r.y;
    }
    return { y: h, trace: { traces, n } };
  }

  /**
   * The last stage: loss of a micro-batch of n samples and the gradient of the whole batch's mean
   * loss with respect to the logits (the micro-batch's mean-loss gradient times n / batch).
   */
  loss(z: tf.Tensor, y: Float32Array, n: number, batch: number): { loss: number; correct: number; dz: tf.Tensor } {
    const m = this.model;
    const labels = m.task === "classification" ? classLabels(y, n, m.numOutputs) : null;
    const yt = labels ? tf.tensor1d(labels, "int32") : tf.tensor2d(y.subarray(0, n * m.numOutputs), [n, m.numOutputs]);
    const r = lossAndGrad(m.task, z as tf.Tensor2D, yt);
    const dz = n === batch ? r.dz : tf.mul(r.dz, n / batch);
    const v = tf.stack([r.loss, r.correct]).dataSync();
    return { loss: v[0]!, correct: v[1]!, dz };
  }

  /**
   * Backward through the stage: adds this micro-batch's parameter gradients into `grad` (a
   * full-length flat vector; only this stage's keys are touched) and returns the gradient of the
   * stage's input (null on the first stage, which needs none).
   */
  backward(trace: MicroTrace, dy: tf.Tensor, grad: Float32Array, scratch: Float32Array): Float32Array | null {
    let d: tf.Tensor | null = dy;
    const firstParamOp = this.model.ops.findIndex((o) => o.op.numParams > 0);
    for (let o = this.opEnd - 1; o >= this.opStart && d !== null; o--) {
      const { firstParam } = this.model.ops[o]!;
      const needDx = !(this.isFirst && o <= firstParamOp);
      const r = trace.traces[o - this.opStart]!.backward(d, needDx);
      r.grads.forEach((g, k) => {
        const spec = this.model.params[firstParam + k]!;
        readInto(g, scratch, 0, spec.size);
        const dst = grad.subarray(spec.offset, spec.offset + spec.size);
        for (let i = 0; i < spec.size; i++) dst[i]! += scratch[i]!;
      });
      d = r.dx;
    }
    if (this.isFirst || d === null) return null;
    const out = new Float32Array(trace.n * this.inSize);
    readInto(d, out);
    return out;
  }

  /** Copy an output tensor to a Float32Array (what goes on the wire). */
  read(t: tf.Tensor): Float32Array {
    const out = new Float32Array(t.size);
    readInto(t, out);
    return out;
  }

  dispose(): void {
    this.endStep();
    this.weights.forEach((t) => t.dispose());
    this.weights = [];
  }

  get paramCount(): number {
    return this.keys.end - this.keys.start;
  }

  get firstParam(): number {
    return this.paramStart;
  }
}
