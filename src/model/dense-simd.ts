/**
 * Forward and backward passes of a stack of dense layers (logreg, linreg, the MLP) in the
 * WebAssembly SIMD kernels of src/util/simd.wat, without tfjs.
 *
 * Why: a step of the MNIST MLP on tfjs-backend-wasm spends most of its time in dense matrix
 * products that multiply zeros. About 80% of MNIST's pixels are 0, and after a ReLU many hidden
 * activations are too. Here every layer input is turned into lists of its non-zeros, per sample
 * and per input column, and only those rows of the weights (forward, input gradient) or of the
 * output gradient (weight gradient) are summed. The arithmetic is the same as the dense
 * products', in another order: the results agree with tfjs within float32 rounding
 * (test/model/dense-simd.test.ts), and the finite-difference gradient checks hold.
 *
 * On dense inputs tfjs's matrix products (XNNPACK) are faster: `gradient` declines a batch whose
 * inputs are more than DENSE_INPUT_MAX non-zero, and the model computes that one through tfjs.
 *
 * Weights, activations and gradients live in the kernels' memory; the flat gradient is written
 * straight into the caller's array when that lives there too (a worker's does), else copied out.
 * Layers: every hidden layer a ReLU, the last linear (what the zoo builds).
 */
import { allocF32, denseKernels, freeF32, isResident, type DenseKernels } from "../util/simd.js";

/** One dense layer: y = act(x W + b), W [inCols, outCols] at kernelOffset in the flat weights. */
export interface DenseLayerPlan {
  inCols: number;
  outCols: number;
  kernelOffset: number;
  biasOffset: number;
  relu: boolean;
}

/** Per-layer buffers for up to `rows` samples (offsets into the kernels' memory). */
interface LayerBuffers {
  /** the input's non-zeros, per sample: column indices (int32), values, counts (int32) */
  idx: Float32Array;
  val: Float32Array;
  cnt: Float32Array;
  /** the same non-zeros by input column (int32 column starts, int32 rows, values) */
  colPtr: Float32Array;
  rIdx: Float32Array;
  cVal: Float32Array;
  /** output [rows, outCols] and the loss's gradient with respect to it (before the activation's) */
  y: Float32Array;
  dz: Float32Array;
}

/** Rows the buffers hold at first (evaluation runs in chunks of this many). */
export const DENSE_SIMD_ROWS = 256;

/**
 * The largest fraction of non-zero inputs for which `gradient` runs here. A step of the MLP on
 * wasm here vs in tfjs (bench-step, batch 64 / 128): MNIST pixels (19% non-zero) 2.0 / 4.1 ms vs
 * 5.2 / 9.6 ms; 50% non-zero 2.9 / 5.2 vs 5.0 / 7.0; 65% 3.4 / 6.1 vs 4.1 / 6.6; all non-zero
 * 5.0 / 9.3 vs 4.7 / 7.6.
 */
export const DENSE_INPUT_MAX = 0.7;

/** What a loss writes: the gradient of the mean loss with respect to the logits. */
export type LossInto = (out: Float32Array, rows: number, dz: Float32Array) => { loss: number; correct: number };

export class DenseSimd {
  private readonly w: Float32Array;
  private readonly g: Float32Array;
  private x: Float32Array;
  private bufs: LayerBuffers[];
  private rows = 0;
  private disposed = false;
  /** batches `gradient` computed, and batches it declined as too dense */
  ran = 0;
  declined = 0;

  private constructor(
    private readonly k: DenseKernels,
    readonly layers: readonly DenseLayerPlan[],
    readonly size: number,
    w: Float32Array,
    g: Float32Array,
  ) {
    this.w = w;
    this.g = g;
    this.x = new Float32Array(0);
    this.bufs = [];
  }

  /**
   * Kernels for these layers, or null when they cannot run here: SIMD off, a hidden layer that
   * is not a ReLU or a linear last layer missing, or no room in the kernels' memory.
   */
  static create(layers: readonly DenseLayerPlan[], size: number): DenseSimd | null {
    const k = denseKernels();
    if (!k || layers.length === 0) return null;
    if (!layers.every((l, i) => l.relu === i < layers.length - 1)) return null;
    for (let i = 1; i < layers.length; i++) if (layers[i]!.inCols !== layers[i - 1]!.outCols) return null;
    const w = residentF32(size);
    const g = residentF32(size);
    if (!w || !g) {
      if (w) freeF32(w);
      if (g) freeF32(g);
      return null;
    }
    const d = new DenseSimd(k, layers, size, w, g);
    if (!d.ensureRows(DENSE_SIMD_ROWS)) {
      d.dispose();
      return null;
    }
    return d;
  }

  /** Copy in the flat weights (the caller may change `flat` afterwards). */
  setWeights(flat: Float32Array): void {
    this.w.set(flat);
  }

  /** The weights last set (owned by this object: read, do not keep). */
  weights(): Float32Array {
    return this.w;
  }

  /**
   * Gradient of the mean loss over `rows` samples of x into `out` (length size); `loss` turns the
   * last layer's output into its gradient. Returns what `loss` returned, or null (and nothing
   * written) when more than DENSE_INPUT_MAX of the inputs are non-zero: tfjs does those faster.
   */
  gradient(x: Float32Array, rows: number, loss: LossInto, out: Float32Array): { loss: number; correct: number } | null {
    if (!this.ensureRows(rows)) throw new Error(`dense kernels: no room for ${rows} samples`);
    if (this.load(x, rows) > DENSE_INPUT_MAX * rows * this.layers[0]!.inCols) {
      this.declined++;
      return null;
    }
    this.ran++;
    const last = this.forward(rows);
    const top = this.bufs[this.bufs.length - 1]!;
    const r = loss(last, rows, top.dz);
    const g = out.length === this.size && isResident(out) ? out : this.g;
    const k = this.k;
    for (let l = this.layers.length - 1; l >= 0; l--) {
      const L = this.layers[l]!;
      const b = this.bufs[l]!;
      k.byColumn(b.idx.byteOffset, b.val.byteOffset, b.cnt.byteOffset, rows, L.inCols, b.colPtr.byteOffset, b.rIdx.byteOffset, b.cVal.byteOffset);
      k.denseDw(b.colPtr.byteOffset, b.rIdx.byteOffset, b.cVal.byteOffset, L.inCols, b.dz.byteOffset, L.outCols, g.byteOffset + 4 * L.kernelOffset);
      k.colSum(b.dz.byteOffset, rows, L.outCols, g.byteOffset + 4 * L.biasOffset);
      if (l > 0) {
        // through the ReLU of the layer below: its output's non-zeros are this layer's input's
        k.denseDx(b.idx.byteOffset, b.cnt.byteOffset, rows, L.inCols, this.w.byteOffset + 4 * L.kernelOffset, b.dz.byteOffset, L.outCols, this.bufs[l - 1]!.dz.byteOffset);
      }
    }
    if (g !== out) out.set(g);
    return r;
  }

  /**
   * The last layer's output for n samples of x, [n, outCols], computed in chunks and passed to
   * `each(out, start, rows)`, where out is a view that the next chunk overwrites.
   */
  outputs(x: Float32Array, n: number, each: (out: Float32Array, start: number, rows: number) => void): void {
    if (this.disposed) throw new Error("dense kernels: disposed");
    const inCols = this.layers[0]!.inCols;
    for (let s = 0; s < n; s += this.rows) {
      const m = Math.min(this.rows, n - s);
      this.load(x.subarray(s * inCols, (s + m) * inCols), m);
      each(this.forward(m), s, m);
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    freeF32(this.w);
    freeF32(this.g);
    this.freeRows();
  }

  /** Copies in `rows` samples of x and lists their non-zeros; returns how many there are. */
  private load(x: Float32Array, rows: number): number {
    const first = this.layers[0]!;
    if (x.length < rows * first.inCols) throw new Error(`dense kernels: x holds ${x.length} values, ${rows} samples need ${rows * first.inCols}`);
    this.x.set(x.subarray(0, rows * first.inCols));
    const b = this.bufs[0]!;
    return this.k.nzRows(this.x.byteOffset, rows, first.inCols, b.idx.byteOffset, b.val.byteOffset, b.cnt.byteOffset);
  }

  /** Runs the layers on the `rows` samples load() took; returns the last output's view [rows, outCols]. */
  private forward(rows: number): Float32Array {
    const k = this.k;
    for (let l = 0; l < this.layers.length; l++) {
      const L = this.layers[l]!;
      const b = this.bufs[l]!;
      if (l > 0) k.nzRows(this.bufs[l - 1]!.y.byteOffset, rows, L.inCols, b.idx.byteOffset, b.val.byteOffset, b.cnt.byteOffset);
      k.denseFwd(b.idx.byteOffset, b.val.byteOffset, b.cnt.byteOffset, rows, L.inCols, this.w.byteOffset + 4 * L.kernelOffset, this.w.byteOffset + 4 * L.biasOffset, b.y.byteOffset, L.outCols, L.relu ? 1 : 0);
    }
    const top = this.layers[this.layers.length - 1]!;
    return this.bufs[this.bufs.length - 1]!.y.subarray(0, rows * top.outCols);
  }

  private ensureRows(rows: number): boolean {
    if (this.disposed) throw new Error("dense kernels: disposed");
    if (rows <= this.rows) return true;
    this.freeRows();
    const made: Float32Array[] = [];
    const take = (n: number): Float32Array | null => {
      const a = residentF32(n);
      if (a) made.push(a);
      return a;
    };
    const x = take(rows * this.layers[0]!.inCols);
    const bufs: LayerBuffers[] = [];
    for (const L of this.layers) {
      const b = {
        idx: take(rows * L.inCols),
        val: take(rows * L.inCols),
        cnt: take(rows),
        colPtr: take(L.inCols + 1),
        rIdx: take(rows * L.inCols),
        cVal: take(rows * L.inCols),
        y: take(rows * L.outCols),
        dz: take(rows * L.outCols),
      };
      if (Object.values(b).some((a) => a === null)) break;
      bufs.push(b as LayerBuffers);
    }
    if (!x || bufs.length !== this.layers.length) {
      made.forEach(freeF32);
      return false;
    }
    this.x = x;
    this.bufs = bufs;
    this.rows = rows;
    return true;
  }

  private freeRows(): void {
    if (this.rows === 0) return;
    freeF32(this.x);
    for (const b of this.bufs) Object.values(b).forEach(freeF32);
    this.x = new Float32Array(0);
    this.bufs = [];
    this.rows = 0;
  }
}

/** n float32 in the kernels' memory (at least 64, what allocF32 places there), or null. */
function residentF32(n: number): Float32Array | null {
  const a = allocF32(Math.max(n, 64));
  if (isResident(a)) return a.subarray(0, n);
  return null;
}
