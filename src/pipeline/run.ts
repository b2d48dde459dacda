/**
 * What the coordinator does differently for a pipelined run (--parallelism model|hybrid): choose
 * the split points (given, or by the planner), lay the shards out so that each serves one stage,
 * and sum the stages' statistics into the summary's `pipeline` block.
 */
import type { TrainConfig } from "../config/train-config.js";
import type { Coordinator } from "../cluster/coordinator.js";
import type { MapMsg, WorkerStats } from "../cluster/messages.js";
import { MsgType } from "../transport/header.js";
import { AdaptivePlanner } from "../planner/adaptive.js";
import { isReplanStep } from "./chain.js";
import type { Dataset } from "../data/dataset.js";
import type { FlatModel } from "../model/model-api.js";
import type { SequentialFlatModel } from "../model/sequential.js";
import { partitionKeys, type KeyRange } from "../ps/key-range.js";
import { measureBandwidth } from "../planner/bandwidth.js";
import { evaluateSplit, planSplits, type PlanResult, type UnitCost } from "../planner/partition.js";
import { profileUnits } from "../planner/profile.js";
import { badOption, ErrorCode, PsError } from "../util/errors.js";
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
  /** --adaptive: every change of the split during the run (splitAt above is the last) */
  replans?: Replan[];
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

/**
 * --servers shards per stage, each inside its stage's keys (a shard's workers are that stage's
 * replicas); under --adaptive per unit instead, so that a re-plan moves no weights between shards.
 */
export function pipelineRanges(model: FlatModel, cfg: TrainConfig): KeyRange[] {
  const units = pipelineUnits(model as SequentialFlatModel);
  const out: KeyRange[] = [];
  const groups = cfg.adaptive > 0 ? units.map((_, i): [number, number] => [i, i + 1]) : stageBounds(cfg.splitAt, units.length);
  for (const [a, b] of groups) {
    const start = units[a]!.keys.start;
    const end = units[b - 1]!.keys.end;
    for (const r of partitionKeys(end - start, cfg.servers)) out.push({ start: start + r.start, end: start + r.end });
  }
  return out;
}

export interface Replan {
  /** the new split applies from this step */
  step: number;
  bandwidthBytesPerSecond: number;
  splitAt: number[];
  predictedStepMs: number;
}

/**
 * The coordinator's half of --adaptive: before every `adaptiveEvery`-th step, once every worker
 * has pushed the step before it (PROGRESS {replanAt}), it measures the link, asks the
 * AdaptivePlanner, and sends every worker the split for that step (MAP {replan}).
 */
export class PipelineReplanner {
  readonly replans: Replan[] = [];
  private nextCheck: number;
  private readonly arrived = new Set<number>();
  private readonly planner: AdaptivePlanner;

  constructor(
    private readonly cfg: TrainConfig,
    info: PipelinePlanInfo,
    private readonly coordinator: Coordinator,
    private readonly totalSteps: number,
  ) {
    this.nextCheck = cfg.adaptiveEvery;
    this.planner = new AdaptivePlanner(info.units, cfg.stages, cfg.microbatches, cfg.adaptive, {
      splitAt: cfg.splitAt,
      bandwidth: info.chosenBy === "planner" ? info.bandwidthBytesPerSecond : null,
    });
  }

  get splitAt(): number[] {
    return this.planner.splitAt;
  }

  /** Worker `rank` has pushed every step before `g` and waits for the split of step g. */
  async onArrive(rank: number, g: number): Promise<void> {
    if (g !== this.nextCheck || !isReplanStep(g, this.cfg.adaptiveEvery, this.totalSteps)) {
      throw new PsError(ErrorCode.BAD_MESSAGE, `worker ${rank} waits for the split of step ${g}, expected step ${this.nextCheck}`);
    }
    this.arrived.add(rank);
    if (this.arrived.size < this.cfg.workers) return;
    // Every stage has pushed step g - 1: the shards of every unit are at clock g, so any stage
    // may read any unit's weights for step g.
    this.arrived.clear();
    this.nextCheck += this.cfg.adaptiveEvery;
    const bw = await measureBandwidth(this.cfg.transport, 1 << 20, 4, this.cfg.timeoutMs);
    const plan = this.planner.observe({ bandwidth: bw.bytesPerSecond, latencyMs: bw.latencyMs });
    if (plan) this.replans.push({ step: g, bandwidthBytesPerSecond: bw.bytesPerSecond, splitAt: plan.splitAt, predictedStepMs: plan.predictedStepMs });
    const msg: MapMsg = { servers: [], replan: { step: g, splitAt: this.planner.splitAt } };
    await this.coordinator.broadcast("worker", MsgType.MAP, msg);
  }
}

export function pipelineSummary(cfg: TrainConfig, workers: readonly WorkerStats[], info: PipelinePlanInfo | undefined, replanner?: PipelineReplanner | null): PipelineSummary {
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
  const split = replanner ? replanner.splitAt : cfg.splitAt.slice();
  return {
    stages: K,
    microbatches: M,
    replicas: cfg.replicas,
    splitAt: split,
    stageUnits: names.length > 0 ? stageBounds(split, names.length).map(([a, b]) => names.slice(a, b)) : [],
    chosenBy: info?.chosenBy ?? "--split-at",
    bubbleFractionIdeal: (K - 1) / (M + K - 1),
    bubbleFraction: stats.length > 0 ? idle / stats.length : 0,
    predictedStepMs: info?.plan.predictedStepMs ?? 0,
    measuredStepMs: stats.length > 0 ? stepMs / stats.length : 0,
    ...(replanner ? { replans: replanner.replans } : {}),
  };
}
