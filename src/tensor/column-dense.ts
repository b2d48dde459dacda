/**
 * Horizontal (intra-layer) partitioning of an MLP: every dense layer's output units are split
 * into T contiguous column blocks, one per worker ("partitioning the feature space"). Worker j
 * holds W[:, c0:c1] and b[c0:c1] of every layer and, per layer:
 *
 *   forward   a_j = act(h W_j + b_j)          its columns of the layer's output
 *             h'  = all-gather_j a_j           every worker gets the whole output
 *   backward  dz_j = dh'[:, c0:c1] * act'(z_j)
 *             dW_j = h^T dz_j,  db_j = sum_b dz_j    (its own gradient block: no communication)
 *             dh   = allreduce-sum_j dz_j W_j^T      (every block contributes to the input gradient)
 *
 * The loss is computed by every worker on the gathered logits (the same numbers everywhere). The
 * all-gather is an allreduce of a buffer that is zero outside the worker's columns: simple, and
 * exact (x + 0 = x), at T times the bytes of a true all-gather.
 */
import * as tf from "@tensorflow/tfjs";
import { lossAndGrad, classLabels } from "../model/loss.js";
import type { SequentialFlatModel } from "../model/sequential.js";

/** The collective a tensor-parallel group needs (Allreducer.allreduce over a PeerGroup). */
export interface SumCollective {
  allreduce(buf: Float32Array, op?: "sum"): Promise<void>;
}

interface DenseLayer {
  name: string;
  inSize: number;
  units: number;
  relu: boolean;
  /** offsets of its kernel [in, units] and bias [units] in the flat vector */
  kernelOffset: number;
  biasOffset: number;
  /** this worker's columns [c0, c1) */
  c0: number;
  c1: number;
}

/** Run fn and dispose every tensor it created (tf.tidy for results that are not tensors). */
function scoped<T>(fn: () => T): T {
  tf.engine().startScope();
  try {
    return fn();
  } finally {
    tf.engine().endScope();
  }
}

/** Column blocks [c0, c1) of `units` over `parts` workers, sizes differing by at most one. */
export function columnBlocks(units: number, parts: number): [number, number][] {
  return Array.from({ length: parts }, (_, j) => [Math.floor((j * units) / parts), Math.floor(((j + 1) * units) / parts)]);
}

export class ColumnParallelMlp {
  readonly layers: DenseLayer[];
  private kernels: tf.Tensor2D[] = [];
  private biases: tf.Tensor1D[] = [];

  constructor(
    readonly model: SequentialFlatModel,
    readonly rank: number,
    readonly parts: number,
  ) {
    if (model.task !== "classification") throw new Error("tensor parallelism: classification models only");
    const dense = model.layers.filter((l) => l.kind === "dense");
    if (dense.length === 0 || model.layers.some((l) => l.kind !== "dense" && l.kind !== "flatten")) {
      throw new Error(`tensor parallelism splits dense layers: model ${model.name} has other layers`);
    }
    this.layers = dense.map((l) => {
      if (l.kind !== "dense") throw new Error("unreachable");
      const kernel = model.params.find((p) => p.name === `${l.name}/kernel`)!;
      const bias = model.params.find((p) => p.name === `${l.name}/bias`)!;
      if (l.units < parts) throw new Error(`layer ${l.name} has ${l.units} units, fewer than ${parts} workers`);
      const [c0, c1] = columnBlocks(l.units, parts)[rank]!;
      return { name: l.name, inSize: kernel.shape[0]!, units: l.units, relu: l.activation === "relu", kernelOffset: kernel.offset, biasOffset: bias.offset, c0, c1 };
    });
  }

  /** Take this worker's column blocks out of the full flat weights. */
  setWeights(flat: Float32Array): void {
    this.dispose();
    for (const L of this.layers) {
      const w = L.c1 - L.c0;
      const k = new Float32Array(L.inSize * w);
      for (let r = 0; r < L.inSize; r++) k.set(flat.subarray(L.kernelOffset + r * L.units + L.c0, L.kernelOffset + r * L.units + L.c1), r * w);
      this.kernels.push(tf.keep(tf.tensor2d(k, [L.inSize, w])));
      this.biases.push(tf.keep(tf.tensor1d(flat.slice(L.biasOffset + L.c0, L.biasOffset + L.c1))));
    }
  }

  /**
   * Loss of the batch and this worker's block of the gradient of the mean loss, written into
   * `out` (full length; zero outside its columns). The blocks of all workers sum to the whole
   * model's gradient.
   */
  async gradient(x: Float32Array, y: Float32Array, batch: number, out: Float32Array, group: SumCollective): Promise<{ loss: number; correct: number }> {
    out.fill(0);
    const hs: Float32Array[] = [x.subarray(0, batch * this.model.xSize)];
    const zs: tf.Tensor2D[] = [];
    try {
      // forward, layer by layer, gathering each layer's whole output
      for (let l = 0; l < this.layers.length; l++) {
        const L = this.layers[l]!;
        const z = tf.tidy(() => tf.add(tf.matMul(tf.tensor2d(hs[l]!, [batch, L.inSize]), this.kernels[l]!), this.biases[l]!) as tf.Tensor2D);
        zs.push(z);
        const a = tf.tidy(() => (L.relu ? tf.relu(z) : z.clone()));
        const block = a.dataSync() as Float32Array;
        a.dispose();
        const full = new Float32Array(batch * L.units);
        const w = L.c1 - L.c0;
        for (let b = 0; b < batch; b++) full.set(block.subarray(b * w, (b + 1) * w), b * L.units + L.c0);
        await group.allreduce(full, "sum");
        hs.push(full);
      }
      const K = this.layers[this.layers.length - 1]!.units;
      const labels = classLabels(y, batch, K);
      const res = scoped(() => {
        const r = lossAndGrad("classification", tf.tensor2d(hs[hs.length - 1]!, [batch, K]), tf.tensor1d(labels, "int32"));
        return { dz: r.dz.dataSync() as Float32Array, loss: r.loss.dataSync()[0]!, correct: r.correct.dataSync()[0]! };
      });
      // backward
      let dh = res.dz;
      for (let l = this.layers.length - 1; l >= 0; l--) {
        const L = this.layers[l]!;
        const w = L.c1 - L.c0;
        const mine = new Float32Array(batch * w);
        for (let b = 0; b < batch; b++) mine.set(dh.subarray(b * L.units + L.c0, b * L.units + L.c1), b * w);
        const r = scoped(() => {
          let dz: tf.Tensor2D = tf.tensor2d(mine, [batch, w]);
          if (L.relu) dz = tf.mul(dz, tf.step(zs[l]!)) as tf.Tensor2D;
          const h = tf.tensor2d(hs[l]!, [batch, L.inSize]);
          const dW = tf.matMul(tf.transpose(h), dz).dataSync() as Float32Array;
          const db = tf.sum(dz, 0).dataSync() as Float32Array;
          const dx = l > 0 ? (tf.matMul(dz, tf.transpose(this.kernels[l]!)).dataSync() as Float32Array) : null;
          return { dW, db, dx };
        });
        for (let i = 0; i < L.inSize; i++) out.set(r.dW.subarray(i * w, (i + 1) * w), L.kernelOffset + i * L.units + L.c0);
        out.set(r.db, L.biasOffset + L.c0);
        if (r.dx) {
          await group.allreduce(r.dx, "sum");
          dh = r.dx;
        }
      }
      return { loss: res.loss, correct: res.correct };
    } finally {
      zs.forEach((z) => z.dispose());
    }
  }

  dispose(): void {
    this.kernels.forEach((t) => t.dispose());
    this.biases.forEach((t) => t.dispose());
    this.kernels = [];
    this.biases = [];
  }
}
