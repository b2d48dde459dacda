/**
 * Keras-equivalent description of a model: the layer list that the fast compute graph
 * (graph.ts), the saved tf.LayersModel (save.ts) and the autodiff reference (autodiff.ts)
 * are all built from. Shapes are per sample (no batch dimension); images are NHWC.
 *
 * The last layer produces logits (classification) or predictions (regression); the saved
 * model of a classifier adds `softmax` to that layer, so it predicts probabilities.
 */
import { sampleSize } from "../data/dataset.js";
import type { ParamSpec } from "./model-api.js";

export type Activation = "relu" | "linear";

export type LayerSpec =
  | { kind: "flatten"; name: string }
  | { kind: "dense"; name: string; units: number; activation: Activation }
  | { kind: "conv2d"; name: string; filters: number; kernelSize: number; padding: "same" | "valid"; activation: Activation }
  | { kind: "maxpool2d"; name: string; poolSize: number };

/** A parameter tensor with what Glorot-uniform init needs. */
export interface ParamInfo extends ParamSpec {
  kind: "kernel" | "bias";
  /** index of the layer in the LayerSpec list */
  layer: number;
  fanIn: number;
  fanOut: number;
}

/** Output shape (per sample) of one layer, or a message saying why it has none. */
export function layerOutputShape(spec: LayerSpec, input: readonly number[]): number[] | string {
  switch (spec.kind) {
    case "flatten":
      return [sampleSize(input)];
    case "dense":
      if (input.length !== 1) return `${spec.name} needs a flat input, got [${input.join(", ")}]`;
      return [spec.units];
    case "conv2d": {
      if (input.length !== 3) return `${spec.name} needs an image input [h, w, c], got [${input.join(", ")}]`;
      const [h, w] = input as [number, number, number];
      const k = spec.kernelSize;
      const oh = spec.padding === "same" ? h : h - k + 1;
      const ow = spec.padding === "same" ? w : w - k + 1;
      if (oh < 1 || ow < 1) return `${spec.name} (${k}x${k} valid) needs at least ${k}x${k} pixels, got ${h}x${w}`;
      return [oh, ow, spec.filters];
    }
    case "maxpool2d": {
      if (input.length !== 3) return `${spec.name} needs an image input [h, w, c], got [${input.join(", ")}]`;
      const [h, w, c] = input as [number, number, number];
      const p = spec.poolSize;
      const oh = Math.floor(h / p);
      const ow = Math.floor(w / p);
      if (oh < 1 || ow < 1) return `${spec.name} (${p}x${p}) needs at least ${p}x${p} pixels, got ${h}x${w}`;
      return [oh, ow, c];
    }
  }
}

/**
 * Per-layer input/output shapes and the flat parameter layout: layer by layer, kernel then
 * bias, each tensor row-major in its tfjs/Keras layout (dense kernel [in, out], conv kernel
 * [kh, kw, in, out]). Returns an error message instead if the shapes do not work out.
 */
export function planLayers(
  specs: readonly LayerSpec[],
  inputShape: readonly number[],
): { shapes: number[][]; params: ParamInfo[]; size: number } | string {
  const shapes: number[][] = [inputShape.slice()];
  const params: ParamInfo[] = [];
  let offset = 0;
  const add = (p: Omit<ParamInfo, "offset" | "size">) => {
    const size = sampleSize(p.shape);
    params.push({ ...p, offset, size });
    offset += size;
  };
  for (let i = 0; i < specs.length; i++) {
    const spec = specs[i]!;
    const input = shapes[i]!;
    const out = layerOutputShape(spec, input);
    if (typeof out === "string") return out;
    if (spec.kind === "dense") {
      const fin = input[0]!;
      add({ name: `${spec.name}/kernel`, shape: [fin, spec.units], kind: "kernel", layer: i, fanIn: fin, fanOut: spec.units });
      add({ name: `${spec.name}/bias`, shape: [spec.units], kind: "bias", layer: i, fanIn: fin, fanOut: spec.units });
    } else if (spec.kind === "conv2d") {
      const k = spec.kernelSize;
      const cin = input[2]!;
      const rf = k * k;
      add({ name: `${spec.name}/kernel`, shape: [k, k, cin, spec.filters], kind: "kernel", layer: i, fanIn: rf * cin, fanOut: rf * spec.filters });
      add({ name: `${spec.name}/bias`, shape: [spec.filters], kind: "bias", layer: i, fanIn: rf * cin, fanOut: rf * spec.filters });
    }
    shapes.push(out);
  }
  return { shapes, params, size: offset };
}
