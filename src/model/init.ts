/**
 * Deterministic initial weights: Glorot (Xavier) uniform kernels, zero biases, as Keras's
 * defaults. Drawn in JS from src/util/rng.ts (not tf.randomUniform), so the values depend
 * only on the seed: the same on every backend and every machine.
 */
import { deriveSeed, Rng } from "../util/rng.js";
import type { ParamInfo } from "./spec.js";

/** Salt that separates the init streams from other uses of the run seed. */
const INIT_SALT = 0x1a17;

/**
 * Kernel `index` (its position in the parameter list) is drawn from its own stream
 * Rng(deriveSeed(seed, INIT_SALT, index)), uniform in [-limit, limit) with
 * limit = sqrt(6 / (fanIn + fanOut)); dense fanIn/fanOut = in/out units, conv
 * fanIn = kh*kw*in_channels, fanOut = kh*kw*out_channels.
 */
export function glorotInit(params: readonly ParamInfo[], size: number, seed: number): Float32Array {
  const out = new Float32Array(size);
  params.forEach((p, index) => {
    if (p.kind !== "kernel") return; // biases stay 0
    const rng = new Rng(deriveSeed(seed, INIT_SALT, index));
    const limit = Math.sqrt(6 / (p.fanIn + p.fanOut));
    for (let i = 0; i < p.size; i++) out[p.offset + i] = (2 * rng.next() - 1) * limit;
  });
  return out;
}
