/**
 * Profiles every pipeline unit of a model on the current backend: forward and backward time of
 * one micro-batch (median of `reps` runs after a warm-up), output size, parameters.
 */
import type { SequentialFlatModel } from "../model/sequential.js";
import { tensorFrom } from "../model/transfer.js";
import { StageModel } from "../pipeline/stage-model.js";
import { pipelineUnits } from "../pipeline/units.js";
import { Rng } from "../util/rng.js";
import type { UnitCost } from "./partition.js";

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

export function profileUnits(model: SequentialFlatModel, microBatch: number, reps = 5, seed = 1): UnitCost[] {
  const units = pipelineUnits(model);
  const weights = model.init(seed);
  const rng = new Rng(seed);
  const grad = new Float32Array(model.size);
  const scratch = new Float32Array(model.size);
  return units.map((u, i) => {
    const sm = new StageModel(model, units, i, i + 1);
    sm.setWeights(weights);
    const x = Float32Array.from({ length: microBatch * sm.inSize }, () => rng.next());
    const dy = Float32Array.from({ length: microBatch * sm.outSize }, () => rng.normal() * 0.01);
    const fwd: number[] = [];
    const bwd: number[] = [];
    try {
      for (let r = 0; r <= reps; r++) {
        sm.beginStep();
        try {
          const f0 = performance.now();
          const out = sm.forward(x, microBatch);
          sm.read(out.y); // forces the backend to finish
          const f1 = performance.now();
          sm.backward(out.trace, tensorFrom(dy, [microBatch, ...sm.outShape]), grad, scratch);
          const f2 = performance.now();
          if (r > 0) {
            fwd.push(f1 - f0);
            bwd.push(f2 - f1);
          }
        } finally {
          sm.endStep();
        }
      }
    } finally {
      sm.dispose();
    }
    return { name: u.name, forwardMs: median(fwd), backwardMs: median(bwd), activationBytes: 4 * microBatch * u.outSize, params: u.keys.end - u.keys.start };
  });
}
