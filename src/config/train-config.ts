/** Every resolved option of a training run. config.json in the run directory is this object. */
export const MODES = ["sync", "async", "ssp"] as const;
export type ModeName = (typeof MODES)[number];

export const MODELS = ["logreg", "mlp", "cnn", "linreg"] as const;
export type ModelName = (typeof MODELS)[number];

export const OPTIMIZERS = ["sgd", "momentum", "adam"] as const;
export type OptimizerName = (typeof OPTIMIZERS)[number];

export const LR_SCHEDULES = ["constant", "step", "cosine"] as const;
export type LrScheduleName = (typeof LR_SCHEDULES)[number];

export const BACKENDS = ["auto", "node-gpu", "node", "wasm", "cpu"] as const;
export type BackendName = (typeof BACKENDS)[number];

export const TRANSPORTS = ["ipc", "tcp", "shm"] as const;
export type TransportName = (typeof TRANSPORTS)[number];

/** How workers exchange gradients: through the parameter-server shards, or allreduce among themselves. */
export const COMMS = ["ps", "allreduce"] as const;
export type CommName = (typeof COMMS)[number];

/** What a run does when a worker process dies or goes silent (docs/reliability.md, "Worker failures"). */
export const WORKER_FAILURE_POLICIES = ["abort", "shrink", "wait"] as const;
export type WorkerFailurePolicy = (typeof WORKER_FAILURE_POLICIES)[number];

/**
 * data: every worker holds the whole model; model: a pipeline of stages; hybrid: replicas of a
 * pipeline; tensor: every dense layer's output units split across the workers (MLP, logreg).
 */
export const PARALLELISMS = ["data", "model", "hybrid", "tensor"] as const;
export type ParallelismName = (typeof PARALLELISMS)[number];

export const ALLREDUCE_ALGO_NAMES = ["auto", "ring", "doubling", "halving-doubling"] as const;
export type AllreduceAlgoName = (typeof ALLREDUCE_ALGO_NAMES)[number];

/**
 * How async and SSP scale the step of one worker's gradient (applied on arrival):
 * `workers` lr / N (the default: N arrivals move the weights as far as one sync step),
 * `none` the full lr per arrival (Downpour as first described), `staleness` lr / max(1, staleness)
 * (Zhang et al., "Staleness-aware async-SGD", IJCAI 2016).
 */
export const ASYNC_LR_SCALES = ["workers", "none", "staleness"] as const;
export type AsyncLrScale = (typeof ASYNC_LR_SCALES)[number];
/** async: off (push, wait for the new weights, compute) or on (compute the next gradient while the last push is in flight) */
export const ASYNC_OVERLAP = ["off", "on"] as const;
export type AsyncOverlap = (typeof ASYNC_OVERLAP)[number];

export interface OptimizerConfig {
  optimizer: OptimizerName;
  lr: number;
  /** momentum coefficient for `momentum` (heavy ball, as torch.optim.SGD) */
  momentum: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
  lrSchedule: LrScheduleName;
  /** `step` schedule: multiply lr by lrGamma every lrStepSize server steps */
  lrStepSize: number;
  lrGamma: number;
  /** linear warm-up from 0 over this many server steps */
  warmupSteps: number;
  /** total server steps, for the cosine schedule (resolved by the launcher) */
  totalSteps: number;
  /** async and SSP: the step of one arriving gradient (see ASYNC_LR_SCALES) */
  asyncLrScale: AsyncLrScale;
}

export interface TrainConfig extends OptimizerConfig {
  mode: ModeName;
  /** async with --comm ps: compute step k+1's gradient while step k's push-pull is in flight */
  asyncOverlap: AsyncOverlap;
  /** SSP bound s; ignored by the other modes */
  staleness: number;
  workers: number;
  servers: number;
  comm: CommName;
  /** allreduce: auto (doubling up to allreduceSmallBytes, ring above), ring or doubling */
  allreduceAlgo: AllreduceAlgoName;
  /** allreduce: the ring's pipelining segment, bytes */
  allreduceSegmentBytes: number;
  /** allreduce: largest buffer that `auto` reduces by recursive doubling, bytes */
  allreduceSmallBytes: number;
  /** allreduce: cap of one fusion buffer, bytes */
  fusionBytes: number;
  /** data | model (one pipeline of `stages` workers) | hybrid (`replicas` pipelines) */
  parallelism: ParallelismName;
  /** model/hybrid: pipeline stages, each a contiguous run of the model's layers on its own worker */
  stages: number;
  /** model/hybrid: GPipe micro-batches per step (the batch is split into this many) */
  microbatches: number;
  /** hybrid: data-parallel copies of the pipeline (workers = stages x replicas) */
  replicas: number;
  /** model/hybrid: the pipeline units after which a stage ends (stages - 1 ascending values); [] = the planner chooses */
  splitAt: number[];
  /**
   * model/hybrid, sync: re-plan the split points during the run when the measured link bandwidth
   * moves by more than this fraction from the one the split was planned for (0 = off)
   */
  adaptive: number;
  /** with --adaptive: measure and maybe re-plan before every this many steps */
  adaptiveEvery: number;
  model: ModelName;
  /** mnist | synthetic | synthetic-linear | PATH to a folder of IDX files */
  dataset: string;
  /** iid | shards:K | dirichlet:ALPHA */
  partition: string;
  /** use only the first N training samples (0 = all); for quick runs and tests */
  trainLimit: number;
  testLimit: number;
  seed: number;
  epochs: number;
  /** stop after this many steps per worker (0 = run all epochs) */
  maxSteps: number;
  /** per worker: the global batch is workers x batchSize */
  batchSize: number;
  backend: BackendName;
  transport: TransportName;
  /** rank -> slowdown factor (>= 1) */
  slow: Record<number, number>;
  out: string;
  targetAccuracy: number | null;
  /** evaluate every this many server steps (0: at the end of each epoch only) */
  evalEvery: number;
  logLevel: string;
  progress: "auto" | "on" | "off";
  /** deadline for any single wait (rendezvous, a reply, a barrier), in ms */
  timeoutMs: number;
  heartbeatMs: number;
  /** a role process silent for this long is lost (0: max(timeoutMs / 2, 5 x heartbeatMs)); also when a stall is reported */
  heartbeatTimeout: number;
  /** a dead worker: abort the run, shrink (go on without it) or wait (start a replacement for its rank) */
  onWorkerFailure: WorkerFailurePolicy;
  /** wait: a replacement must have joined within this many ms, else the run aborts */
  replaceTimeout: number;
  /** wait: replacements started per rank at most; one more failure of that rank aborts */
  maxReplacements: number;
  /** --checkpoint-every: restarts of one server shard at most; its next death fails the run */
  maxRestarts: number;
  /** server shards checkpoint every N server updates (sync: global steps); 0 = off (docs/reliability.md) */
  checkpointEvery: number;
  /** checkpoints kept per shard */
  checkpointKeep: number;
  /** clip each pushed gradient range to this L2 norm at the shard; 0 = off */
  gradClip: number;
  /** continue the run in this run directory from its latest checkpoint; "" = a new run */
  resume: string;
}

export const DEFAULTS: TrainConfig = {
  mode: "async",
  staleness: 3,
  workers: 1,
  servers: 1,
  comm: "ps",
  allreduceAlgo: "auto",
  allreduceSegmentBytes: 1024 * 1024,
  allreduceSmallBytes: 256 * 1024,
  fusionBytes: 64 * 1024 * 1024,
  parallelism: "data",
  stages: 1,
  microbatches: 1,
  replicas: 1,
  splitAt: [],
  adaptive: 0,
  adaptiveEvery: 20,
  model: "mlp",
  dataset: "mnist",
  partition: "iid",
  trainLimit: 0,
  testLimit: 0,
  seed: 1,
  epochs: 1,
  maxSteps: 0,
  batchSize: 64,
  backend: "auto",
  transport: "shm",
  slow: {},
  out: "",
  targetAccuracy: null,
  evalEvery: 0,
  logLevel: "info",
  progress: "auto",
  timeoutMs: 30000,
  heartbeatMs: 1000,
  heartbeatTimeout: 0,
  onWorkerFailure: "abort",
  replaceTimeout: 60000,
  maxReplacements: 2,
  maxRestarts: 3,
  checkpointEvery: 0,
  checkpointKeep: 3,
  gradClip: 0,
  resume: "",
  optimizer: "adam",
  lr: 0.005,
  momentum: 0.9,
  beta1: 0.9,
  beta2: 0.999,
  epsilon: 1e-8,
  weightDecay: 0,
  lrSchedule: "cosine",
  lrStepSize: 1000,
  lrGamma: 0.5,
  warmupSteps: 20,
  totalSteps: 0,
  asyncOverlap: "off",
  asyncLrScale: "workers",
};

/** How long a role process may stay silent before it counts as lost (and a waiting step as stalled). */
export function heartbeatTimeoutOf(cfg: Pick<TrainConfig, "heartbeatTimeout" | "timeoutMs" | "heartbeatMs">): number {
  // Below the deadline of a single wait by default, so that a worker that hangs is let go
  // (--on-worker-failure shrink|wait) before the others' own waits for it expire.
  return cfg.heartbeatTimeout > 0 ? cfg.heartbeatTimeout : Math.max(Math.ceil(cfg.timeoutMs / 2), 5 * cfg.heartbeatMs);
}

/**
 * Workers that train on their own data shard and push whole gradients for a key range: every
 * worker in data parallelism, one per pipeline (the replicas) in model and hybrid parallelism.
 */
export function dataParallelWidth(cfg: Pick<TrainConfig, "parallelism" | "workers" | "replicas">): number {
  if (cfg.parallelism === "tensor") return 1;
  return cfg.parallelism === "data" ? cfg.workers : cfg.replicas;
}

/** How many workers push to each shard every clock (a shard's `workers`). */
export function shardWorkers(cfg: Pick<TrainConfig, "parallelism" | "workers" | "replicas">): number {
  return cfg.parallelism === "tensor" ? cfg.workers : dataParallelWidth(cfg);
}
