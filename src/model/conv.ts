/**
 * Conv2D (k x k, stride 1, 'same' or 'valid', + bias, relu) followed by 2x2/2 max pooling,
 * as one op with an explicit backward pass. Equivalent to the Keras layers
 * Conv2D(activation: relu) -> MaxPooling2D(2), including which element of a tied window gets
 * the gradient (the first in row-major order).
 *
 * Layout of the computation (chosen by measurement on tfjs-backend-wasm, batch 128, MNIST
 * LeNet-5; see scripts/bench-step.ts):
 *
 * forward  The conv output is produced as four stride-2 "phase" convolutions
 *          z_ij[b,y,x,:] = z[b, 2y+i, 2x+j, :], so that the pool is an elementwise
 *          tournament over z00..z11 (pool.ts) instead of tf.maxPool + its gradient kernel.
 *          'same' convs reach the phase offsets with per-phase explicit padding; 'valid'
 *          convs with the kernel zero-padded to (k+1)x(k+1) and shifted by (i, j).
 *          Pooling before relu (relu(max z) = max relu(z)) puts relu on the small tensor.
 * backward filter gradient by the "batch as channels" convolution (wasm-kernels.ts), either
 *          per phase with dilation 2 (first layer: no input gradient needed) or once on the
 *          re-interleaved gradient; input gradient as a 'full' convolution with the flipped
 *          kernel (conv2dTranspose, i.e. Conv2DBackpropInput, is ~4x slower on wasm).
 */
import * as tf from "@tensorflow/tfjs";
import { conv2dFilterGrad } from "./wasm-kernels.js";
import { interleave4, maxPool4, maxPool4Backward } from "./pool.js";
import type { Op, Trace } from "./op.js";

type Pad4 = [[number, number], [number, number], [number, number], [number, number]];
type Quad<T> = [T, T, T, T];

const PHASES: Quad<[number, number]> = [
  [0, 0],
  [0, 1],
  [1, 0],
  [1, 1],
];

interface Phase {
  i: number;
  j: number;
  pad: Pad4;
}

export class ConvReluPoolOp implements Op {
  readonly numParams = 2;
  /** conv output (before pooling) */
  readonly oh: number;
  readonly ow: number;
  /** pooled output */
  readonly ph: number;
  readonly pw: number;
  private readonly padTop: number;
  private readonly padLeft: number;
  private readonly padBottom: number;
  private readonly padRight: number;
  /** 'pad': phases by explicit padding, kernel k x k; 'shift': kernel padded to (k+1)^2 */
  private readonly mode: "pad" | "shift";
  private readonly phases: Quad<Phase>;

  constructor(
    readonly inShape: readonly [number, number, number],
    readonly filters: number,
    readonly k: number,
    readonly padding: "same" | "valid",
  ) {
    const [h, w] = inShape;
    this.oh = padding === "same" ? h : h - k + 1;
    this.ow = padding === "same" ? w : w - k + 1;
    this.ph = Math.floor(this.oh / 2);
    this.pw = Math.floor(this.ow / 2);
    if (this.ph < 1 || this.pw < 1) throw new Error(`conv+pool: input ${h}x${w} is too small`);
    // stride-1 'same' padding as TF computes it: total k-1, the smaller half on top/left
    this.padTop = padding === "same" ? Math.floor((k - 1) / 2) : 0;
    this.padLeft = this.padTop;
    this.padBottom = this.oh - h - this.padTop + k - 1;
    this.padRight = this.ow - w - this.padLeft + k - 1;
    const rowsNeeded = (p: number, kk: number) => 2 * (p - 1) + kk; // rows read by p stride-2 windows
    const padPhase = (i: number, j: number): Phase => {
      const top = this.padTop - i;
      const left = this.padLeft - j;
      return { i, j, pad: [[0, 0], [top, rowsNeeded(this.ph, k) - top - h], [left, rowsNeeded(this.pw, k) - left - w], [0, 0]] };
    };
    const shiftPhase = (i: number, j: number): Phase => {
      const bottom = Math.max(0, rowsNeeded(this.ph, k + 1) - this.padTop - h);
      const right = Math.max(0, rowsNeeded(this.pw, k + 1) - this.padLeft - w);
      return { i, j, pad: [[0, 0], [this.padTop, bottom], [this.padLeft, right], [0, 0]] };
    };
    const byPad = PHASES.map(([i, j]) => padPhase(i, j)) as Quad<Phase>;
    const padOk = byPad.every((p) => p.pad[1].every((v) => v >= 0) && p.pad[2].every((v) => v >= 0));
    this.mode = padOk ? "pad" : "shift";
    this.phases = padOk ? byPad : (PHASES.map(([i, j]) => shiftPhase(i, j)) as Quad<Phase>);
    // every phase must produce exactly ph x pw outputs
    const kk = this.mode === "pad" ? k : k + 1;
    for (const p of this.phases) {
      const outH = Math.floor((p.pad[1][0] + h + p.pad[1][1] - kk) / 2) + 1;
      const outW = Math.floor((p.pad[2][0] + w + p.pad[2][1] - kk) / 2) + 1;
      if (outH !== this.ph || outW !== this.pw) {
        throw new Error(`conv+pool: phase (${p.i},${p.j}) gives ${outH}x${outW}, expected ${this.ph}x${this.pw}`);
      }
    }
  }

  apply(x: tf.Tensor, w: readonly tf.Tensor[]): tf.Tensor {
    const [kernel, bias] = w as [tf.Tensor4D, tf.Tensor1D];
    const z = tf.fused.conv2d({ x: x as tf.Tensor4D, filter: kernel, strides: 1, pad: this.padding, bias, activation: "relu" });
    return tf.maxPool(z, 2, 2, "valid");
  }

  private phaseKernel(kernel: tf.Tensor4D, p: Phase): tf.Tensor4D {
    if (this.mode === "pad") return kernel;
    return tf.pad(kernel, [
      [p.i, 1 - p.i],
      [p.j, 1 - p.j],
      [0, 0],
      [0, 0],
    ]);
  }

  forward(x: tf.Tensor, w: readonly tf.Tensor[]): { y: tf.Tensor; trace: Trace } {
    const x4 = x as tf.Tensor4D;
    const [kernel, bias] = w as [tf.Tensor4D, tf.Tensor1D];
    const z = this.phases.map((p) =>
      tf.fused.conv2d({ x: x4, filter: this.phaseKernel(kernel, p), strides: 2, pad: p.pad, bias }),
    ) as Quad<tf.Tensor>;
    const { q, trace: pool } = maxPool4(z);
    const y = tf.relu(q);
    return {
      y,
      trace: {
        backward: (dy, needDx) => {
          const dq = tf.mul(dy, tf.step(q));
          const g = maxPool4Backward(dq, pool);
          const db = tf.sum(tf.addN(g), [0, 1, 2]);
          if (this.mode === "pad" && !needDx) {
            // per-phase filter gradient: conv of x^T with the phase gradient dilated by 2
            const xt = tf.transpose(x4, [3, 1, 2, 0]); // [c, h, w, b]
            const parts = this.phases.map((p, n) =>
              tf.conv2d(xt, tf.transpose(g[n]!, [1, 2, 0, 3]) as tf.Tensor4D, 1, p.pad, "NHWC", 2),
            );
            const dW = tf.transpose(tf.addN(parts), [1, 2, 0, 3]);
            return { dx: null, grads: [dW, db] };
          }
          let dz = interleave4(g);
          if (2 * this.ph < this.oh || 2 * this.pw < this.ow) {
            // the last row/column of an odd-sized conv output is not pooled: zero gradient
            dz = tf.pad(dz, [
              [0, 0],
              [0, this.oh - 2 * this.ph],
              [0, this.ow - 2 * this.pw],
              [0, 0],
            ]);
          }
          const k = this.k;
          const dW = conv2dFilterGrad(x4, dz, [k, k], [1, 1], [
            [this.padTop, this.padBottom],
            [this.padLeft, this.padRight],
          ]);
          let dx: tf.Tensor | null = null;
          if (needDx) {
            // dx = 'full' correlation of dz with the kernel flipped in space, in/out swapped
            const flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D;
            dx = tf.conv2d(dz, flipped, 1, [
              [0, 0],
              [k - 1 - this.padTop, k - 1 - this.padBottom],
              [k - 1 - this.padLeft, k - 1 - this.padRight],
              [0, 0],
            ]);
          }
          return { dx, grads: [dW, db] };
        },
      },
    };
  }
}
