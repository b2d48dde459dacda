/**
 * Kernels that @tensorflow/tfjs-backend-wasm 4.22 does not ship but tfjs autodiff needs.
 *
 * Conv2DBackpropFilter (the filter gradient of conv2d) is missing, so `tf.grad` through
 * `tf.conv2d`, and tfjs-layers `fit()` of any Conv2D model, fail on wasm with
 * "Kernel 'Conv2DBackpropFilter' not registered for backend 'wasm'". We register one built
 * from ops the wasm backend does have, using the identity
 *
 *   dW[kh,kw,ci,co] = sum_{b,y,x} xpad[b, s*y+kh, s*x+kw, ci] * dy[b,y,x,co]
 *                   = conv2d(xpad^T [ci, H, W, b], dy^T [y, x, b, co], stride 1, dilation s)
 *
 * i.e. one ordinary (XNNPACK) convolution in which the batch plays the part of the input
 * channels. The same function is used by the hand-written CNN backward pass (conv.ts).
 */
import * as tf from "@tensorflow/tfjs";

type Pad4 = [[number, number], [number, number], [number, number], [number, number]];

/**
 * Gradient of conv2d (NHWC, dilation 1) with respect to its filter, as described above.
 * `pads` are the explicit [top, bottom], [left, right] paddings the forward conv used.
 */
export function conv2dFilterGrad(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  kernel: [number, number],
  strides: [number, number],
  pads: [[number, number], [number, number]],
): tf.Tensor4D {
  return tf.tidy(() => {
    const [, h, w] = x.shape;
    const [, oh, ow] = dy.shape;
    const [kh, kw] = kernel;
    const [sh, sw] = strides;
    const top = pads[0][0];
    const left = pads[1][0];
    // Rows the filter gradient reads: top + h + bottom must be kh + sh*(oh-1).
    let bottom = kh + sh * (oh - 1) - top - h;
    let right = kw + sw * (ow - 1) - left - w;
    let xin: tf.Tensor4D = x;
    if (bottom < 0 || right < 0) {
      // Rows/columns past the last window do not contribute: crop them.
      xin = tf.slice(x, [0, 0, 0, 0], [-1, h + Math.min(bottom, 0), w + Math.min(right, 0), -1]);
      bottom = Math.max(bottom, 0);
      right = Math.max(right, 0);
    }
    const xt = tf.transpose(xin, [3, 1, 2, 0]); // [ci, h, w, b]
    const dyt = tf.transpose(dy, [1, 2, 0, 3]); // [oh, ow, b, co]
    const pad: Pad4 = [
      [0, 0],
      [top, bottom],
      [left, right],
      [0, 0],
    ];
    const g = tf.conv2d(xt, dyt, 1, pad, "NHWC", [sh, sw]); // [ci, kh, kw, co]
    return tf.transpose(g, [1, 2, 0, 3]);
  });
}

function asTensor(t: tf.TensorInfo | undefined): tf.Tensor {
  if (t === undefined) throw new Error("missing kernel input");
  if (t instanceof tf.Tensor) return t;
  return tf.engine().makeTensorFromTensorInfo(t);
}

function pair(v: number | [number, number]): [number, number] {
  return typeof v === "number" ? [v, v] : v;
}

const conv2dBackpropFilterWasm: tf.KernelFunc = ({ inputs, attrs }) => {
  const a = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  return tf.tidy(() => {
    let x = asTensor(inputs["x"]) as tf.Tensor4D;
    let dy = asTensor(inputs["dy"]) as tf.Tensor4D;
    if (a.dataFormat === "NCHW") {
      x = tf.transpose(x, [0, 2, 3, 1]);
      dy = tf.transpose(dy, [0, 2, 3, 1]);
    }
    const fs = a.filterShape;
    const strides = pair(a.strides);
    const info = tf.backend_util.computeConv2DInfo(
      x.shape,
      fs,
      strides,
      1,
      a.pad,
      a.dimRoundingMode,
      false,
      "channelsLast",
    );
    const p = info.padInfo;
    return conv2dFilterGrad(x, dy, [fs[0], fs[1]], strides, [
      [p.top, p.bottom],
      [p.left, p.right],
    ]);
  });
};

let registered = false;

/** Register the missing wasm gradient kernels (idempotent; skips any already present). */
export function registerWasmGradientKernels(): void {
  if (registered) return;
  registered = true;
  if (tf.getKernel("Conv2DBackpropFilter", "wasm") === undefined) {
    tf.registerKernel({ kernelName: "Conv2DBackpropFilter", backendName: "wasm", kernelFunc: conv2dBackpropFilterWasm });
  }
}
