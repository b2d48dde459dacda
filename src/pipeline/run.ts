/**
 * What the coordinator does differently for a pipelined run (--parallelism model|hybrid): choose
 * the split points (given, or by the planner), lay the shards out so that each serves one stage,
 * and sum the stages' statistics into the summary's `pipeline` block.
 */
import type { TrainConfig } from "../config/train-config.js";
import type { WorkerStats } from "../cluster/messages.js";
import type { Dataset } from "../data/dataset.js";
import type { FlatModel } from "../model/model-api.js";
import type { SequentialFlatModel } from "../model/sequential.js";
import { partitionKeys, type KeyRange } from "../ps/key-range.js";
import { measureBandwidth } from "../planner/bandwidth.js";
import { evaluateSplit, planSplits, type PlanResult, type UnitCost } from "../planner/partition.js";
import { profileUnits } from "../planner/profile.js";
import { badOption } from "../util/errors.js";
import { pipelineUnits, stageBounds } from "./units.js";

export interface PipelinePlanInfo {
  /** how the split points were chosen */
  chosenBy: "planner" | "--split-at";
  plan: PlanResult;
  /** the profile the plan was made from */
  units: UnitCost[];
  unitNames: string[];
  bandwidthBytesPerSecond: number;
}

export interface PipelineSummary {
  stages: number;
  microbatches: number;
  replicas: number;
  splitAt: number[];
  /** each stage's units, by name */
  stageUnits: string[][];
  chosenBy: "planner" | "--split-at";
  /** GPipe's bubble with equal stages: (K - 1) / (M + K - 1) */
  bubbleFractionIdeal: number;
  /** 1 - busy / pipeline wall time, averaged over every stage worker */
  bubbleFraction: number;
  predictedStepMs: number;
  /** mean over stage workers of (pipeline + exchange) ms per step */
  measuredStepMs: number;
}

/** The split points for this run and the planner's view of them. */
export async function resolvePipeline(config: TrainConfig, model: FlatModel, _dataset: Dataset): Promise<{ config: TrainConfig; info: PipelinePlanInfo }> {
  const seq = model as SequentialFlatModel;
  const units = pipelineUnits(seq);
  if (config.stages > units.length) throw badOption(`--stages ${config.stages} exceeds the ${units.length} layer(s) model ${config.model} can be split into`);
  const micro = Math.ceil(config.batchSize / config.microbatches);
  const costs = profileUnits(seq, micro, 5, config.seed);
  const bw = await measureBandwidth(config.transport, 1 << 20, 4, config.timeoutMs);
  const link = { bandwidth: bw.bytesPerSecond, latencyMs: bw.latencyMs };
  let plan: PlanResult;
  let chosenBy: PipelinePlanInfo["chosenBy"];
  if (config.splitAt.length > 0) {
    stageBounds(config.splitAt, units.length);
    plan = evaluateSplit(costs, config.splitAt, config.microbatches, link);
    chosenBy = "--split-at";
  } else {
    plan = planSplits(costs, config.stages, config.microbatches, link);
    chosenBy = "planner";
  }
  const bounds = stageBounds(plan.splitAt, units.length);
  for (const [a, b] of bounds) {
    const keys = units[b - 1]!.keys.end - units[a]!.keys.start;
    if (config.comm === "ps" && config.servers > keys) throw badOption(`--servers ${config.servers} (per stage) exceeds the ${keys} parameters of the stage with units ${a}..${b - 1}`);
  }
  return { config: { ...config, splitAt: plan.splitAt }, info: { chosenBy, plan, units: costs, unitNames: units.map((u) => u.name), bandwidthBytesPerSecond: bw.bytesPerSecond } };
}

/** --servers shards per stage, each inside its stage's keys (a shard's workers are that stage's replicas). */
export function pipelineRanges(model: FlatModel, cfg: TrainConfig): KeyRange[] {
  const units = pipelineUnits(model as SequentialFlatModel);
  const out: KeyRange[] = [];
  for (const [a, b] of stageBounds(cfg.splitAt, units.length)) {
    const start = units[a]!.keys.start;
    const end = units[b - 1]!.keys.end;
    for (const r of partitionKeys(end - start, cfg.servers)) out.push({ start: start + r.start, end: start + r.end });
  }
  return out;
}

export function pipelineSummary(cfg: TrainConfig, workers: readonly WorkerStats[], info: PipelinePlanInfo | undefined): PipelineSummary {
  const K = cfg.stages;
  const M = cfg.microbatches;
  const stats = workers.filter((w) => w.pipeline !== undefined);
  let idle = 0;
  let stepMs = 0;
  for (const w of stats) {
    const p = w.pipeline!;
    idle += p.pipeSeconds > 0 ? 1 - p.busySeconds / p.pipeSeconds : 0;
    stepMs += w.steps > 0 ? ((w.computeSeconds + w.commSeconds) * 1000) / w.steps : 0;
  }
  const names = info?.unitNames ?? [];
  return {
    stages: K,
    microbatches: M,
    replicas: cfg.replicas,
    splitAt: cfg.splitAt.slice(),
    stageUnits: names.length > 0 ? stageBounds(cfg.splitAt, names.length).map(([a, b]) => names.slice(a, b)) : [],
    chosenBy: info?.chosenBy ?? "--split-at",
    bubbleFractionIdeal: (K - 1) / (M + K - 1),
    bubbleFraction: stats.length > 0 ? idle / stats.length : 0,
    predictedStepMs: info?.plan.predictedStepMs ?? 0,
    measuredStepMs: stats.length > 0 ? stepMs / stats.length : 0,
  };
}
