/**
 * A pipeline's stages run one after another in one process: the reference schedule the
 * distributed stages must reproduce (tests), and what the planner times.
 */
import type { SequentialFlatModel } from "../model/sequential.js";
import { tensorFrom } from "../model/transfer.js";
import { StageModel, type MicroTrace } from "./stage-model.js";
import { pipelineUnits, stageBounds } from "./units.js";

/**
 * Mean loss and gradient of the batch computed stage by stage over `microbatches` micro-batches,
 * GPipe order (all forwards, then all backwards in reverse); `out` gets the gradient.
 */
export function chainedGradient(
  model: SequentialFlatModel,
  splitAt: readonly number[],
  microbatches: number,
  weights: Float32Array,
  x: Float32Array,
  y: Float32Array,
  batch: number,
  out: Float32Array,
): { loss: number; correct: number } {
  const units = pipelineUnits(model);
  const stages = stageBounds(splitAt, units.length).map(([a, b]) => new StageModel(model, units, a, b));
  const ySize = model.task === "classification" ? 1 : model.numOutputs;
  out.fill(0);
  let loss = 0;
  let correct = 0;
  const scratch = new Float32Array(model.size);
  try {
    for (const s of stages) {
      s.setWeights(weights);
      s.beginStep();
    }
    const bounds = microBounds(batch, microbatches);
    const traces: MicroTrace[][] = stages.map(() => []);
    const dz: Float32Array[] = [];
    for (const [a, b] of bounds) {
      let h = x.subarray(a * model.xSize, b * model.xSize);
      for (let k = 0; k < stages.length; k++) {
        const s = stages[k]!;
        const r = s.forward(h, b - a);
        traces[k]!.push(r.trace);
        if (s.isLast) {
          const l = s.loss(r.y, y.subarray(a * ySize, b * ySize), b - a, batch);
          loss += (l.loss * (b - a)) / batch;
          correct += l.correct;
          dz.push(s.read(l.dz));
        } else h = s.read(r.y);
      }
    }
    for (let m = bounds.length - 1; m >= 0; m--) {
      let d: Float32Array | null = dz[m]!;
      for (let k = stages.length - 1; k >= 0 && d !== null; k--) {
        const s = stages[k]!;
        const tr = traces[k]![m]!;
        d = s.backward(tr, tensorFrom(d, [tr.n, ...s.outShape]), out, scratch);
      }
    }
  } finally {
    for (const s of stages) s.dispose();
  }
  return { loss, correct };
}


/** Sample ranges [a, b) of `m` micro-batches of a batch of n, sizes differing by at most one. */
export function microBounds(n: number, m: number): [number, number][] {
  const parts = Math.max(1, Math.min(m, n));
  const out: [number, number][] = [];
  for (let i = 0; i < parts; i++) out.push([Math.floor((i * n) / parts), Math.floor(((i + 1) * n) / parts)]);
  return out;
}

/** --adaptive: the steps before which the coordinator sends the split (the same or a new one). */
export function isReplanStep(g: number, every: number, totalSteps: number): boolean {
  return g > 0 && g < totalSteps && g % every === 0;
}
