/**
 * A plain-JS float64 implementation of the zoo's forward pass and losses, written
 * independently of tfjs, for finite-difference gradient checks (and as a check of the
 * forward semantics: 'same' padding, pooling, flatten order, loss definitions).
 */
import type { Task } from "../../src/data/dataset.js";
import type { ParamSpec } from "../../src/model/model-api.js";
import type { LayerSpec } from "../../src/model/spec.js";

interface T64 {
  data: Float64Array;
  /** per-sample shape */
  shape: number[];
}

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function dense(x: T64, batch: number, w: Float64Array, kOff: number, bOff: number, units: number, relu: boolean): T64 {
  const din = prod(x.shape);
  const out = new Float64Array(batch * units);
  for (let b = 0; b < batch; b++) {
    for (let o = 0; o < units; o++) {
      let s = w[bOff + o]!;
      for (let i = 0; i < din; i++) s += x.data[b * din + i]! * w[kOff + i * units + o]!;
      out[b * units + o] = relu && s < 0 ? 0 : s;
    }
  }
  return { data: out, shape: [units] };
}

function conv(x: T64, batch: number, w: Float64Array, kOff: number, bOff: number, f: number, k: number, same: boolean, relu: boolean): T64 {
  const [h, wd, c] = x.shape as [number, number, number];
  const oh = same ? h : h - k + 1;
  const ow = same ? wd : wd - k + 1;
  const pt = same ? Math.floor((k - 1) / 2) : 0;
  const out = new Float64Array(batch * oh * ow * f);
  for (let b = 0; b < batch; b++)
    for (let y = 0; y < oh; y++)
      for (let xx = 0; xx < ow; xx++)
        for (let co = 0; co < f; co++) {
          let s = w[bOff + co]!;
          for (let kh = 0; kh < k; kh++) {
            const r = y + kh - pt;
            if (r < 0 || r >= h) continue;
            for (let kw = 0; kw < k; kw++) {
              const q = xx + kw - pt;
              if (q < 0 || q >= wd) continue;
              for (let ci = 0; ci < c; ci++) {
                s += x.data[((b * h + r) * wd + q) * c + ci]! * w[kOff + ((kh * k + kw) * c + ci) * f + co]!;
              }
            }
          }
          out[((b * oh + y) * ow + xx) * f + co] = relu && s < 0 ? 0 : s;
        }
  return { data: out, shape: [oh, ow, f] };
}

function maxPool(x: T64, batch: number, p: number): T64 {
  const [h, wd, c] = x.shape as [number, number, number];
  const oh = Math.floor(h / p);
  const ow = Math.floor(wd / p);
  const out = new Float64Array(batch * oh * ow * c);
  for (let b = 0; b < batch; b++)
    for (let y = 0; y < oh; y++)
      for (let xx = 0; xx < ow; xx++)
        for (let ci = 0; ci < c; ci++) {
          let m = -Infinity;
          for (let i = 0; i < p; i++)
            for (let j = 0; j < p; j++) m = Math.max(m, x.data[((b * h + y * p + i) * wd + xx * p + j) * c + ci]!);
          out[((b * oh + y) * ow + xx) * c + ci] = m;
        }
  return { data: out, shape: [oh, ow, c] };
}

/** Model output [batch, K] in float64. */
export function forward64(
  layers: readonly LayerSpec[],
  inputShape: readonly number[],
  params: readonly ParamSpec[],
  w: Float64Array,
  x: Float64Array,
  batch: number,
): Float64Array {
  let h: T64 = { data: x, shape: inputShape.slice() };
  let p = 0;
  for (const l of layers) {
    if (l.kind === "flatten") {
      h = { data: h.data, shape: [prod(h.shape)] };
    } else if (l.kind === "dense") {
      h = dense(h, batch, w, params[p]!.offset, params[p + 1]!.offset, l.units, l.activation === "relu");
      p += 2;
    } else if (l.kind === "conv2d") {
      h = conv(h, batch, w, params[p]!.offset, params[p + 1]!.offset, l.filters, l.kernelSize, l.padding === "same", l.activation === "relu");
      p += 2;
    } else {
      h = maxPool(h, batch, l.poolSize);
    }
  }
  return h.data;
}

/** Mean softmax cross-entropy (y = class indices) or mean squared error, in float64. */
export function loss64(task: Task, z: Float64Array, y: Float32Array, batch: number, k: number): number {
  let s = 0;
  if (task === "classification") {
    for (let b = 0; b < batch; b++) {
      let m = -Infinity;
      for (let i = 0; i < k; i++) m = Math.max(m, z[b * k + i]!);
      let e = 0;
      for (let i = 0; i < k; i++) e += Math.exp(z[b * k + i]! - m);
      s += m + Math.log(e) - z[b * k + y[b]!]!;
    }
    return s / batch;
  }
  for (let i = 0; i < batch * k; i++) s += (z[i]! - y[i]!) ** 2;
  return s / (batch * k);
}
