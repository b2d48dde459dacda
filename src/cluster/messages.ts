import type { TrainConfig } from "../config/train-config.js";
import { DType, encodeHeader, makeHeader, type MsgType } from "../transport/header.js";
import type { KeyRange } from "../ps/key-range.js";

/** Control-plane payloads (JSON frames on the coordinator channel; tensors never go here). */
export type Role = "server" | "worker";

export interface HelloMsg {
  role: Role;
  rank: number;
  pid: number;
  /** with CURVE: proof that the sender holds the secret key of `role` (curve-keys.ts roleProof) */
  proof?: string;
}

export interface ConfigMsg {
  config: TrainConfig;
  runId: number;
  runTag: string;
  paramCount: number;
  ranges: KeyRange[];
  /** steps every worker takes (the same for all, so sync and SSP end together) */
  stepsPerWorker: number;
  /**
   * allreduce runs: every worker stops after each global step g = k·evalInterval with
   * evalBefore(g) (no evaluation in the last half interval), rank 0 sends its weights (SNAPSHOT),
   * and all wait for the coordinator's RESUME; 0 = never
   */
  evalInterval: number;
  /** --on-worker-failure wait: this worker replaces a lost one and joins at the shards' current clock */
  replacement?: boolean;
  /** server shards: start from a checkpoint instead of the initial weights (docs/reliability.md) */
  restore?: ShardRestore;
  /** workers of a resumed run: the step to start at (the checkpoint's global step) */
  startStep?: number;
}

/** How a server shard starts from its checkpoints. */
export interface ShardRestore {
  /** bind exactly this endpoint (a restarted shard takes its predecessor's place) */
  endpoint?: string;
  /** --resume: the checkpoint at exactly this step, which every shard has */
  step?: number;
  /** a restart after a crash: the gradients each worker has had acknowledged by this shard (null: not known, keep the checkpoint's) */
  workerClocks?: (number | null)[];
  /** a restart after a crash: workers lost from the run (--on-worker-failure), not to be waited for */
  left?: number[];
}

/** No periodic evaluation in the last half interval of a run: the final evaluation follows. */
export function beforeFinalEval(g: number, evalInterval: number, totalSteps: number): boolean {
  return g < totalSteps - evalInterval / 2;
}

/** The global steps after which an allreduce run stops for an exact evaluation (see ConfigMsg). */
export function isEvalStep(g: number, evalInterval: number, totalSteps: number): boolean {
  return evalInterval > 0 && g > 0 && g % evalInterval === 0 && beforeFinalEval(g, evalInterval, totalSteps);
}

/** The coordinator's answer to a SNAPSHOT of an allreduce run: go on, or stop here (target reached). */
export interface ResumeMsg {
  stop: boolean;
  /** the evaluation step it answers (an elastic run may reach the same step twice after a rollback) */
  step?: number;
}

/**
 * Elastic allreduce (--on-worker-failure shrink). Coordinator -> worker: re-form as generation
 * `gen` (sent to every worker still in the run when one is lost). Worker -> coordinator: its
 * group of generation `gen` failed; `step` is the step it would do next, with the state it
 * holds committed for that step.
 */
export interface ElasticMsg {
  gen: number;
  step?: number;
}

/** Coordinator -> worker (--on-worker-failure shrink): the workers still in the run, by rank. */
export interface MembersMsg {
  live: number[];
}

/** Coordinator -> worker: the new group: this worker's rank in it, its size, and the step all roll back to. */
export interface ReformMsg {
  gen: number;
  rank: number;
  size: number;
  rollbackTo: number;
}

/** Rank 0 of an allreduce run: the weights after global step `step` follow as a float32 frame. */
export interface SnapshotMsg {
  step: number;
  /** a pipeline stage's snapshot: the keys [start, end) its frame holds (absent: all of them) */
  start?: number;
  end?: number;
}

/** A worker's answer to a restart "down": the gradients the shard had acknowledged from it. */
export interface RestartAck {
  shard: number;
  clock: number;
}

export interface ReadyMsg {
  endpoint?: string;
  /** server: the checkpoint step it was restored from, the gradients lost, checkpoints skipped as corrupt */
  restoredFrom?: number | null;
  lostUpdates?: number;
  skipped?: string[];
  /** worker: samples in its data shard */
  shardSize?: number;
}

export interface MapMsg {
  servers: { shard: number; endpoint: string; range: KeyRange }[];
  /** after START: server shard `shard` died ("down") or serves again at `endpoint` ("up") */
  restart?: { shard: number; phase: "down" | "up"; endpoint?: string };
  /** allreduce runs: every worker's peer endpoint, by rank */
  peers?: string[];
  /** --adaptive pipelines: the split points from step `step` on (the same or new) */
  replan?: { step: number; splitAt: number[] };
}

/** One worker step as reported to the coordinator. */
export interface StepRecord {
  step: number;
  /** wall-clock ms since START at the end of the step */
  t: number;
  loss: number;
  correct: number;
  samples: number;
  /** staleness of this step's push, max over shards */
  staleness: number;
  computeMs: number;
  commMs: number;
}

export interface ProgressMsg {
  rank: number;
  steps: StepRecord[];
  /** --adaptive pipelines: this worker has finished every step before `replanAt` and waits for its split */
  replanAt?: number;
}

export interface WorkerStats {
  rank: number;
  steps: number;
  samples: number;
  bytesSent: number;
  bytesReceived: number;
  computeSeconds: number;
  commSeconds: number;
  slowFactor: number;
  stoppedEarly: boolean;
  /** samples in this worker's data shard at the end (more than at the start after a shrink re-partitioned the data) */
  shardSize?: number;
  /** allreduce runs: sha256 of this worker's final weights (every worker's must be the same) */
  weightsSha256?: string;
  /** --on-worker-failure wait: the clock a replacement joined the shards at (its first step) */
  joinedAt?: number;
  /** model/hybrid parallelism: this worker's place in the pipelines and its busy/idle time */
  pipeline?: StageStats;
  /** with the SIMD dense kernels on: the batches they computed, and those left to tfjs as too dense */
  denseBatches?: { simd: number; tfjs: number };
}

export interface StageStats {
  replica: number;
  stage: number;
  /** the pipeline units [unitStart, unitEnd) it runs */
  unitStart: number;
  unitEnd: number;
  /** forward + backward compute, seconds */
  busySeconds: number;
  /** wall time from each step's start to its last backward, summed (busy + waiting for neighbours) */
  pipeSeconds: number;
}

export interface DoneMsg {
  worker?: WorkerStats;
  /** a pipeline stage of an allreduce run: the keys its final-weights frame holds */
  keys?: KeyRange;
}

export interface FailMsg {
  message: string;
  code?: string;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A control message's frames: the header, then the JSON body (if any), then extra frames. */
export function controlFrames(type: MsgType, runId: number, rank: number, body: unknown, extra: readonly Buffer[] = []): Buffer[] {
  const frames: Buffer[] = [];
  if (body !== null) frames.push(Buffer.from(JSON.stringify(body)));
  frames.push(...extra);
  let n = 0;
  for (const f of frames) n += f.byteLength;
  const header = makeHeader(type, { runId, rank, dtype: body !== null ? DType.JSON : DType.NONE, byteLength: n });
  return [encodeHeader(header), ...frames];
}
