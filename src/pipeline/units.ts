/**
 * The pieces a model is split into for pipeline parallelism: its compute ops, with every op that
 * has no parameters (flatten) joined to the op after it, so that no stage is a bare reshape.
 *
 *   mlp  [flatten+]dense1 | dense2 | dense3                                  3 units
 *   cnn  conv1+pool1 | conv2+pool2 | flatten+dense1 | dense2 | dense3        5 units
 *   logreg, linreg  [flatten+]dense                                          1 unit
 *
 * `--split-at 2,4` cuts after units 2 and 4: stages [0, 2), [2, 4), [4, 5).
 */
import type { ModelName, TrainConfig } from "../config/train-config.js";
import { sampleSize } from "../data/dataset.js";
import type { SequentialFlatModel } from "../model/sequential.js";
import type { KeyRange } from "../ps/key-range.js";

export interface PipelineUnit {
  /** the layer names it computes, e.g. "conv1+pool1" */
  name: string;
  /** its compute ops [opStart, opEnd) in model.ops */
  opStart: number;
  opEnd: number;
  /** its parameter tensors [paramStart, paramEnd) in model.params */
  paramStart: number;
  paramEnd: number;
  /** its keys in the flat parameter vector */
  keys: KeyRange;
  /** per-sample output shape and size (the activation sent to the next stage) */
  outShape: number[];
  outSize: number;
}

/** Units of each zoo model, known before the dataset is loaded (the CLI checks --stages with it). */
export function pipelineUnitCount(model: ModelName): number {
  switch (model) {
    case "mlp":
      return 3;
    case "cnn":
      return 5;
    case "logreg":
    case "linreg":
      return 1;
  }
}

export function pipelineUnits(model: SequentialFlatModel): PipelineUnit[] {
  const units: PipelineUnit[] = [];
  let start = 0;
  let param = 0;
  for (let i = 0; i < model.ops.length; i++) {
    const o = model.ops[i]!;
    const last = i === model.ops.length - 1;
    if (o.op.numParams === 0 && !last) continue; // joins the next op
    const first = model.ops[start]!;
    const paramEnd = param + model.ops.slice(start, i + 1).reduce((a, c) => a + c.op.numParams, 0);
    const ps = model.params.slice(param, paramEnd);
    const keys = ps.length > 0 ? { start: ps[0]!.offset, end: ps[ps.length - 1]!.offset + ps[ps.length - 1]!.size } : { start: 0, end: 0 };
    const outShape = model.shapes[o.endLayer]!.slice();
    units.push({
      name: model.layers.slice(first.firstLayer, o.endLayer).map((l) => l.name).join("+"),
      opStart: start,
      opEnd: i + 1,
      paramStart: param,
      paramEnd,
      keys,
      outShape,
      outSize: sampleSize(outShape),
    });
    param = paramEnd;
    start = i + 1;
  }
  // A trailing parameterless op (none in the zoo) belongs to the last unit.
  if (start < model.ops.length && units.length > 0) units[units.length - 1]!.opEnd = model.ops.length;
  return units;
}

/** Stage boundaries [u0, u1), [u1, u2), ... from split points (the units after which a stage ends). */
export function stageBounds(splitAt: readonly number[], units: number): [number, number][] {
  const cuts = [0, ...splitAt, units];
  const out: [number, number][] = [];
  for (let i = 0; i + 1 < cuts.length; i++) {
    const a = cuts[i]!;
    const b = cuts[i + 1]!;
    if (!(b > a) || b > units) throw new RangeError(`split points ${splitAt.join(",")} do not cut ${units} units into non-empty stages`);
    out.push([a, b]);
  }
  return out;
}

/** Split points of K stages as even as the unit count allows (the default without a planner). */
export function evenSplit(stages: number, units: number): number[] {
  const out: number[] = [];
  for (let k = 1; k < stages; k++) out.push(Math.round((k * units) / stages));
  return out;
}

/**
 * Server shards of a run: none with --comm allreduce; in model/hybrid parallelism --servers per
 * stage (per unit under --adaptive); otherwise --servers. The cluster scheduler sizes gangs by it.
 */
export function serverShardCount(cfg: Partial<Pick<TrainConfig, "comm" | "parallelism" | "stages" | "adaptive" | "model">> & Pick<TrainConfig, "servers">): number {
  if (cfg.comm === "allreduce") return 0;
  if (cfg.parallelism === "model" || cfg.parallelism === "hybrid") return cfg.servers * ((cfg.adaptive ?? 0) > 0 ? pipelineUnitCount(cfg.model ?? "mlp") : (cfg.stages ?? 1));
  return cfg.servers;
}
