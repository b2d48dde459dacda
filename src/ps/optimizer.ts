import type { OptimizerConfig } from "../config/train-config.js";
import { allocF32, freeF32, simdAdam, simdMomentum, simdSgd } from "../util/simd.js";

/**
 * Server-side optimizers over one shard's slice of the flat parameter vector, in place.
 * Definitions follow torch.optim: SGD with heavy-ball momentum (v = mu v + g; w -= lr v) and
 * Adam with bias correction; weight decay is L2 added to the gradient.
 *
 * The state lives in the SIMD kernels' memory (util/simd.ts): when the weights do too, the update
 * runs there (the same bits as the loops below, which do the remaining tail element or all of it).
 */
export interface ShardOptimizer {
  /** w -= update(scale * g) at learning rate lr */
  apply(w: Float32Array, g: Float32Array, scale: number, lr: number): void;
  /** state for checkpoints: named Float32Arrays plus scalars */
  state(): { tensors: Record<string, Float32Array>; scalars: Record<string, number> };
  /** load a state() taken from an optimizer of the same kind and size (a checkpoint) */
  restore(tensors: ReadonlyMap<string, Float32Array>, scalars: Readonly<Record<string, number>>): void;
  /** give the state's memory back (the optimizer is not used again) */
  dispose(): void;
}

function load(into: Float32Array, tensors: ReadonlyMap<string, Float32Array>, name: string): void {
  const t = tensors.get(name);
  if (!t || t.length !== into.length) throw new Error(`optimizer state "${name}": expected ${into.length} values, got ${t?.length ?? "none"}`);
  into.set(t);
}

class Sgd implements ShardOptimizer {
  constructor(private readonly wd: number) {}
  apply(w: Float32Array, g: Float32Array, scale: number, lr: number): void {
    const wd = this.wd;
    const n = w.length;
    const from = simdSgd(w, g, n, lr, scale, wd);
    if (wd === 0) {
      // Unrolled by four: about 1.5x faster in V8 on these loops (measured).
      const a = lr * scale;
      let i = from;
      for (; i + 3 < n; i += 4) {
        w[i] = w[i]! - a * g[i]!;
        w[i + 1] = w[i + 1]! - a * g[i + 1]!;
        w[i + 2] = w[i + 2]! - a * g[i + 2]!;
        w[i + 3] = w[i + 3]! - a * g[i + 3]!;
      }
      for (; i < n; i++) w[i] = w[i]! - a * g[i]!;
    } else {
      for (let i = from; i < n; i++) w[i] = w[i]! - lr * (scale * g[i]! + wd * w[i]!);
    }
  }
  state() {
    return { tensors: {}, scalars: {} };
  }
  restore(): void {}
  dispose(): void {}
}

class Momentum implements ShardOptimizer {
  private readonly v: Float32Array;
  constructor(
    n: number,
    private readonly mu: number,
    private readonly wd: number,
  ) {
    this.v = allocF32(n);
  }
  apply(w: Float32Array, g: Float32Array, scale: number, lr: number): void {
    const { v, mu, wd } = this;
    const n = w.length;
    let i = simdMomentum(w, v, g, n, mu, scale, lr, wd);
    if (wd === 0) {
      for (; i + 1 < n; i += 2) {
        const v0 = mu * v[i]! + scale * g[i]!;
        const v1 = mu * v[i + 1]! + scale * g[i + 1]!;
        v[i] = v0;
        v[i + 1] = v1;
        w[i] = w[i]! - lr * v0;
        w[i + 1] = w[i + 1]! - lr * v1;
      }
    }
    for (; i < n; i++) {
      const gi = scale * g[i]! + wd * w[i]!;
      const vi = mu * v[i]! + gi;
      v[i] = vi;
      w[i] = w[i]! - lr * vi;
    }
  }
  state() {
    return { tensors: { v: this.v }, scalars: {} };
  }
  restore(tensors: ReadonlyMap<string, Float32Array>): void {
    load(this.v, tensors, "v");
  }
  dispose(): void {
    freeF32(this.v);
  }
}

class Adam implements ShardOptimizer {
  private readonly m: Float32Array;
  private readonly v: Float32Array;
  private t = 0;
  constructor(
    n: number,
    private readonly b1: number,
    private readonly b2: number,
    private readonly eps: number,
    private readonly wd: number,
  ) {
    this.m = allocF32(n);
    this.v = allocF32(n);
  }
  apply(w: Float32Array, g: Float32Array, scale: number, lr: number): void {
    const { m, v, b1, b2, eps, wd } = this;
    this.t++;
    const c1 = 1 - Math.pow(b1, this.t);
    const c2 = 1 - Math.pow(b2, this.t);
    const step = lr / c1;
    // sqrt(v̂) = sqrt(v) / sqrt(c2): one multiplication instead of a second division per value
    // (the loop is the shard's hot path: 2.3 -> 1.2 ms for the MLP's 266,610 values here).
    const isc2 = 1 / Math.sqrt(c2);
    const ob1 = 1 - b1;
    const ob2 = 1 - b2;
    const n = w.length;
    if (g.length < n || m.length < n || v.length < n) throw new Error(`adam: ${n} weights, ${g.length} gradients, ${m.length}/${v.length} moments`);
    const from = simdAdam(w, m, v, g, n, { scale, wd, b1, ob1, b2, ob2, step, isc2, eps });
    for (let i = from; i < n; i++) {
      const wi = w[i]!;
      const gi = scale * g[i]! + wd * wi;
      const mi = b1 * m[i]! + ob1 * gi;
      const vi = b2 * v[i]! + ob2 * gi * gi;
      m[i] = mi;
      v[i] = vi;
      w[i] = wi - (step * mi) / (Math.sqrt(vi) * isc2 + eps);
    }
  }
  state() {
    return { tensors: { m: this.m, v: this.v }, scalars: { t: this.t } };
  }
  restore(tensors: ReadonlyMap<string, Float32Array>, scalars: Readonly<Record<string, number>>): void {
    load(this.m, tensors, "m");
    load(this.v, tensors, "v");
    const t = scalars["t"];
    if (t === undefined || !Number.isInteger(t) || t < 0) throw new Error(`optimizer state "t": expected a step count, got ${String(t)}`);
    this.t = t;
  }
  dispose(): void {
    freeF32(this.m);
    freeF32(this.v);
  }
}

export function createOptimizer(cfg: OptimizerConfig, n: number): ShardOptimizer {
  switch (cfg.optimizer) {
    case "sgd":
      return new Sgd(cfg.weightDecay);
    case "momentum":
      return new Momentum(n, cfg.momentum, cfg.weightDecay);
    case "adam":
      return new Adam(n, cfg.beta1, cfg.beta2, cfg.epsilon, cfg.weightDecay);
  }
}
