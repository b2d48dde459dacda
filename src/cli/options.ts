/**
 * Command-line options of `ps-train` and their resolution into a validated TrainConfig.
 *
 * Every TrainConfig field (except totalSteps, which the launcher computes) is a kebab-case flag.
 * Values come from four layers, later ones winning:
 *
 *     DEFAULTS  <  --config FILE (.json/.yaml/.yml)  <  PS_TRAIN_* environment  <  command-line flags
 *
 * Every value from every layer is validated; a bad one ends as ONE line (a PsError with code
 * PS_ERR_BAD_OPTION, exit code 2) naming the flag, where the value came from, and the value.
 */
import { readFileSync } from "node:fs";
import { dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadAll, YAMLException } from "js-yaml";
import yargs from "yargs";
import type { Argv } from "yargs";
import {
  ALLREDUCE_ALGO_NAMES,
  ASYNC_LR_SCALES,
  ASYNC_OVERLAP,
  BACKENDS,
  COMMS,
  DEFAULTS,
  LR_SCHEDULES,
  MODELS,
  MODES,
  OPTIMIZERS,
  PARALLELISMS,
  TRANSPORTS,
  type TrainConfig,
  WORKER_FAILURE_POLICIES,
} from "../config/train-config.js";
import { CURVE_ROLES } from "../transport/curve-keys.js";
import { pipelineUnitCount } from "../pipeline/units.js";
import { PsError, badOption } from "../util/errors.js";
import { resumeConfig } from "./resume-config.js";
import { applyCurveKeys, curveKeysOption } from "./curve-option.js";

/** Prefix of the environment variables: `--batch-size` is PS_TRAIN_BATCH_SIZE. */
export const ENV_PREFIX = "PS_TRAIN_";

/** The TrainConfig fields a user can set (totalSteps is computed by the launcher). */
export type TrainOptionKey = Exclude<keyof TrainConfig, "totalSteps">;

export const OPTION_GROUPS = ["Training", "Parallelism", "Data", "Optimizer", "Run"] as const;
export type OptionGroup = (typeof OPTION_GROUPS)[number];

/** pino's level names. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export const PROGRESS_MODES = ["auto", "on", "off"] as const;

/** File extensions --config accepts. */
export const CONFIG_EXTENSIONS = [".json", ".yaml", ".yml"] as const;

/** Keys a config file may carry that are accepted and ignored (a run's own config.json has them). */
const IGNORED_FILE_KEYS: ReadonlySet<string> = new Set(["totalSteps", "total-steps"]);

const UINT32_MAX = 4294967295;

// ---------------------------------------------------------------------------------------------
// Value parsers. Each takes the raw value (a flag value from yargs, an environment string, or
// anything a JSON/YAML file holds) and `where` (the flag and its source, for the message).
// ---------------------------------------------------------------------------------------------

type Parse<T> = (raw: unknown, where: string) => T;

/** A value as it appears in a message: strings quoted, numbers bare. */
function show(raw: unknown): string {
  if (typeof raw === "string") return JSON.stringify(raw);
  if (typeof raw === "number" || typeof raw === "boolean" || raw === null || raw === undefined) return String(raw);
  try {
    return JSON.stringify(raw) ?? String(raw);
  } catch {
    return String(raw);
  }
}

function fail(where: string, requirement: string, raw: unknown): PsError {
  return badOption(`${where} must be ${requirement} (got ${show(raw)})`);
}

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
const HEX = /^0x[0-9a-f]+$/i;

/** A number from a number or a numeric string; undefined for anything else. May be non-finite. */
function toNumber(raw: unknown): number | undefined {
  if (typeof raw === "number") return raw;
  if (typeof raw === "string") {
    const s = raw.trim();
    if (DECIMAL.test(s) || HEX.test(s)) return Number(s);
  }
  return undefined;
}

function int(min: number, max: number = Number.MAX_SAFE_INTEGER): Parse<number> {
  const requirement = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`;
  return (raw, where) => {
    const n = toNumber(raw);
    if (n === undefined || !Number.isSafeInteger(n) || n < min || n > max) throw fail(where, requirement, raw);
    return n;
  };
}

const BYTE_UNITS: Record<string, number> = { "": 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

/** A size in bytes: an integer, or a number with a unit (KiB, MiB, GiB; K/KB etc. mean the same, powers of 1024); a multiple of 4 (float32). */
function byteSize(min: number): Parse<number> {
  const requirement = `a size in bytes >= ${min} that is a multiple of 4, e.g. 262144 or 256KiB`;
  return (raw, where) => {
    const m = typeof raw === "number" ? [String(raw), String(raw), ""] : typeof raw === "string" ? /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(raw) : null;
    const unit = m ? BYTE_UNITS[(m[2] ?? "").toLowerCase()] : undefined;
    const n = m && unit !== undefined ? Number(m[1]) * unit : NaN;
    if (!Number.isSafeInteger(n) || n < min || n % 4 !== 0) throw fail(where, requirement, raw);
    return n;
  };
}

/** Bounds of a number; an "open" bound excludes the bound itself. */
interface Range {
  min?: number;
  minOpen?: boolean;
  max?: number;
  maxOpen?: boolean;
}

function rangeText(r: Range): string {
  if (r.min !== undefined && r.max !== undefined) {
    return `a number in ${r.minOpen ? "(" : "["}${r.min}, ${r.max}${r.maxOpen ? ")" : "]"}`;
  }
  if (r.min !== undefined) return `a number ${r.minOpen ? ">" : ">="} ${r.min}`;
  if (r.max !== undefined) return `a number ${r.maxOpen ? "<" : "<="} ${r.max}`;
  return "a finite number";
}

function inRange(n: number, r: Range): boolean {
  if (!Number.isFinite(n)) return false;
  if (r.min !== undefined && (r.minOpen ? n <= r.min : n < r.min)) return false;
  if (r.max !== undefined && (r.maxOpen ? n >= r.max : n > r.max)) return false;
  return true;
}

function num(r: Range): Parse<number> {
  const requirement = rangeText(r);
  return (raw, where) => {
    const n = toNumber(raw);
    if (n === undefined || !inRange(n, r)) throw fail(where, requirement, raw);
    return n;
  };
}

function isOneOf<T extends string>(list: readonly T[], raw: unknown): raw is T {
  return typeof raw === "string" && (list as readonly string[]).includes(raw);
}

function choice<T extends string>(list: readonly T[]): Parse<T> {
  return (raw, where) => {
    if (isOneOf(list, raw)) return raw;
    throw fail(where, `one of ${list.join(", ")}`, raw);
  };
}

function str(allowEmpty: boolean): Parse<string> {
  return (raw, where) => {
    if (typeof raw !== "string") throw fail(where, "a string (quote it in a config file)", raw);
    if (!allowEmpty && raw.trim() === "") throw fail(where, "a non-empty string", raw);
    return raw;
  };
}

const ACCURACY: Range = { min: 0, minOpen: true, max: 1 };

/** `none` (or null in a config file) = no target; otherwise a fraction in (0, 1]. */
const parseTargetAccuracy: Parse<number | null> = (raw, where) => {
  if (raw === null || (typeof raw === "string" && raw.trim().toLowerCase() === "none")) return null;
  const n = toNumber(raw);
  if (n === undefined || !inRange(n, ACCURACY)) throw fail(where, "a fraction in (0, 1] or none", raw);
  return n;
};

const SLOW_FORMAT = "RANK:FACTOR[,RANK:FACTOR...] with RANK an integer >= 0 and FACTOR a number >= 1";

function addSlow(out: Record<number, number>, rankRaw: unknown, factorRaw: unknown, where: string, raw: unknown): void {
  const rank = toNumber(rankRaw);
  if (rank === undefined || !Number.isSafeInteger(rank) || rank < 0) {
    throw badOption(`${where}: worker rank must be an integer >= 0 (got ${show(raw)})`);
  }
  const factor = toNumber(factorRaw);
  if (factor === undefined || !inRange(factor, { min: 1 })) {
    throw badOption(`${where}: slowdown factor for rank ${rank} must be a number >= 1 (got ${show(raw)})`);
  }
  if (Object.hasOwn(out, rank)) throw badOption(`${where} lists rank ${rank} more than once (got ${show(raw)})`);
  out[rank] = factor;
}

/**
 * `--slow RANK:FACTOR[,RANK:FACTOR]`: "" or "none" = no slow workers. A config file may also give a
 * mapping `{ "1": 2.5 }`. The rank < workers check happens once the worker count is known.
 */
export const parseSlow: Parse<Record<number, number>> = (raw, where) => {
  const out: Record<number, number> = {};
  if (raw === null) return out;
  if (typeof raw === "string") {
    const text = raw.trim();
    if (text === "" || text.toLowerCase() === "none") return out;
    for (const part of text.split(",")) {
      const pieces = part.split(":");
      if (pieces.length !== 2 || pieces[0]?.trim() === "" || pieces[1]?.trim() === "") {
        throw fail(where, SLOW_FORMAT, raw);
      }
      addSlow(out, pieces[0]?.trim(), pieces[1]?.trim(), where, raw);
    }
    return out;
  }
  if (typeof raw === "object" && !Array.isArray(raw)) {
    for (const [rank, factor] of Object.entries(raw)) addSlow(out, rank, factor, where, raw);
    return out;
  }
  throw fail(where, SLOW_FORMAT, raw);
};

/** `--split-at 2,4`: ascending integers >= 1; "" or "none" = none (the planner chooses). */
const parseSplitAt: Parse<number[]> = (raw, where) => {
  const requirement = "ascending integers >= 1 separated by commas, e.g. 2,4 (or none)";
  let items: unknown[];
  if (raw === null) return [];
  if (Array.isArray(raw)) items = raw;
  else if (typeof raw === "number") items = [raw];
  else if (typeof raw === "string") {
    const text = raw.trim();
    if (text === "" || text.toLowerCase() === "none") return [];
    items = text.split(",").map((t) => t.trim());
  } else throw fail(where, requirement, raw);
  const out: number[] = [];
  for (const item of items) {
    const n = toNumber(item);
    if (n === undefined || !Number.isSafeInteger(n) || n < 1) throw fail(where, requirement, raw);
    if (out.length > 0 && n <= out[out.length - 1]!) throw fail(where, requirement, raw);
    out.push(n);
  }
  return out;
};

// ---------------------------------------------------------------------------------------------
// The option table: one entry per TrainConfig field, in help order.
// ---------------------------------------------------------------------------------------------

interface Field<T> {
  group: OptionGroup;
  /** one line for --help: meaning, units, accepted values */
  describe: string;
  /** "number" options get no yargs type so the raw text reaches our validation */
  type: "string" | "number";
  choices?: readonly string[];
  /** shown as [default: ...]; derived from DEFAULTS when absent */
  defaultText?: string;
  parse: Parse<T>;
}

type FieldTable = { [K in TrainOptionKey]: Field<TrainConfig[K]> };

const FIELDS: FieldTable = {
  // Training
  model: {
    group: "Training",
    describe: "Model to train: logreg, mlp or cnn (classification), linreg (regression)",
    type: "string",
    choices: MODELS,
    parse: choice(MODELS),
  },
  epochs: {
    group: "Training",
    describe: "Passes over the training data (integer >= 1)",
    type: "number",
    parse: int(1),
  },
  maxSteps: {
    group: "Training",
    describe: "Stop after this many steps per worker; 0 = run all epochs (integer >= 0)",
    type: "number",
    parse: int(0),
  },
  batchSize: {
    group: "Training",
    describe: "Samples per step PER WORKER; the global batch is workers x batch-size (integer >= 1)",
    type: "number",
    parse: int(1),
  },
  seed: {
    group: "Training",
    describe: "Random seed (init, partitioning, shuffling); the same seed repeats a run (integer 0..4294967295)",
    type: "number",
    parse: int(0, UINT32_MAX),
  },
  targetAccuracy: {
    group: "Training",
    describe: "Stop as soon as test accuracy reaches this fraction, e.g. 0.97; none = never (0 < x <= 1)",
    type: "number",
    defaultText: "none",
    parse: parseTargetAccuracy,
  },
  evalEvery: {
    group: "Training",
    describe: "Evaluate on the test set every N server steps; 0 = once per epoch (5x with --target-accuracy) (integer >= 0)",
    type: "number",
    parse: int(0),
  },
  // Parallelism
  mode: {
    group: "Parallelism",
    describe: "Consistency: sync (barrier every step), async (no waiting), ssp (bounded by --staleness)",
    type: "string",
    choices: MODES,
    parse: choice(MODES),
  },
  staleness: {
    group: "Parallelism",
    describe: "SSP bound: the fastest worker may lead the slowest by at most this many steps; --mode ssp only (integer >= 0)",
    type: "number",
    parse: int(0),
  },
  workers: {
    group: "Parallelism",
    describe: "Worker processes, each training on its own shard of the data (integer >= 1)",
    type: "number",
    parse: int(1),
  },
  servers: {
    group: "Parallelism",
    describe: "Parameter-server shards the parameters are split across (integer >= 1)",
    type: "number",
    parse: int(1),
  },
  comm: {
    group: "Parallelism",
    describe: "Gradient exchange: ps (through the parameter-server shards) or allreduce (among the workers, no servers; needs --mode sync)",
    type: "string",
    choices: COMMS,
    parse: choice(COMMS),
  },
  allreduceAlgo: {
    group: "Parallelism",
    describe: "--comm allreduce: auto (recursive doubling up to --allreduce-small-bytes, ring above), ring, doubling or halving-doubling (Rabenseifner)",
    type: "string",
    choices: ALLREDUCE_ALGO_NAMES,
    parse: choice(ALLREDUCE_ALGO_NAMES),
  },
  allreduceSegmentBytes: {
    group: "Parallelism",
    describe: "--comm allreduce: the ring sends each chunk in segments of this size, so sending, receiving and summing overlap (bytes, or with KiB/MiB; >= 4)",
    type: "string",
    defaultText: "1MiB",
    parse: byteSize(4),
  },
  allreduceSmallBytes: {
    group: "Parallelism",
    describe: "--comm allreduce: buffers up to this size use recursive doubling under --allreduce-algo auto (bytes, or with KiB/MiB)",
    type: "string",
    defaultText: "256KiB",
    parse: byteSize(0),
  },
  fusionBytes: {
    group: "Parallelism",
    describe: "--comm allreduce: gradient tensors are packed into fusion buffers of at most this size, one collective each (bytes, or with KiB/MiB; >= 4)",
    type: "string",
    defaultText: "64MiB",
    parse: byteSize(4),
  },
  parallelism: {
    group: "Parallelism",
    describe: "data (every worker holds the model), model (a pipeline of --stages workers), hybrid (--replicas copies of that pipeline) or tensor (dense layers split by output units across --workers; mlp/logreg, sync)",
    type: "string",
    choices: PARALLELISMS,
    parse: choice(PARALLELISMS),
  },
  stages: {
    group: "Parallelism",
    describe: "--parallelism model/hybrid: pipeline stages, each a contiguous run of layers on its own worker (integer >= 1, at most the model's layers)",
    type: "number",
    parse: int(1),
  },
  microbatches: {
    group: "Parallelism",
    describe: "--parallelism model/hybrid: GPipe micro-batches per step, so that stages overlap (integer >= 1, at most --batch-size)",
    type: "number",
    parse: int(1),
  },
  replicas: {
    group: "Parallelism",
    describe: "--parallelism hybrid: data-parallel copies of the pipeline (their stages share shards, or allreduce with --comm allreduce); workers = stages x replicas (integer >= 1)",
    type: "number",
    parse: int(1),
  },
  splitAt: {
    group: "Parallelism",
    describe: "--parallelism model/hybrid: layers after which a stage ends, e.g. 2,4 (stages - 1 values); none = the planner chooses",
    type: "string",
    defaultText: "none",
    parse: parseSplitAt,
  },
  adaptive: {
    group: "Parallelism",
    describe: "--parallelism model/hybrid, sync: re-plan the split points during the run when the measured link bandwidth moves by more than this fraction (e.g. 0.5); 0 = off (>= 0)",
    type: "number",
    parse: num({ min: 0 }),
  },
  adaptiveEvery: {
    group: "Parallelism",
    describe: "With --adaptive: measure the link and maybe re-plan every this many steps (integer >= 1)",
    type: "number",
    parse: int(1),
  },
  transport: {
    group: "Parallelism",
    describe: "ZeroMQ transport between processes: ipc (local sockets, one machine), tcp, or shm (ipc, with the parameter server's and allreduce's tensors in shared-memory files; one machine)",
    type: "string",
    choices: TRANSPORTS,
    parse: choice(TRANSPORTS),
  },
  slow: {
    group: "Parallelism",
    describe: "Make workers slower, for experiments: RANK:FACTOR[,RANK:FACTOR], e.g. 0:3 = rank 0 takes 3x as long (FACTOR >= 1)",
    type: "string",
    defaultText: "none",
    parse: parseSlow,
  },
  // Data
  dataset: {
    group: "Data",
    describe: "mnist, synthetic, synthetic-linear, or a PATH to a folder of IDX files",
    type: "string",
    parse: str(false),
  },
  partition: {
    group: "Data",
    describe: "Split of the training data: iid, shards:K (K label-sorted shards per worker) or dirichlet:ALPHA (label skew)",
    type: "string",
    parse: str(false),
  },
  trainLimit: {
    group: "Data",
    describe: "Use only the first N training samples; 0 = all (integer >= 0)",
    type: "number",
    parse: int(0),
  },
  testLimit: {
    group: "Data",
    describe: "Use only the first N test samples; 0 = all (integer >= 0)",
    type: "number",
    parse: int(0),
  },
  // Optimizer
  optimizer: {
    group: "Optimizer",
    describe: "Update rule: sgd, momentum (heavy ball, as torch.optim.SGD) or adam",
    type: "string",
    choices: OPTIMIZERS,
    parse: choice(OPTIMIZERS),
  },
  lr: {
    group: "Optimizer",
    describe: "Base learning rate, before warm-up and schedule (> 0)",
    type: "number",
    parse: num({ min: 0, minOpen: true }),
  },
  momentum: {
    group: "Optimizer",
    describe: "Momentum coefficient, used by --optimizer momentum (0 <= x < 1)",
    type: "number",
    parse: num({ min: 0, max: 1, maxOpen: true }),
  },
  beta1: {
    group: "Optimizer",
    describe: "Adam decay rate of the first-moment (mean) estimate (0 <= x < 1)",
    type: "number",
    parse: num({ min: 0, max: 1, maxOpen: true }),
  },
  beta2: {
    group: "Optimizer",
    describe: "Adam decay rate of the second-moment (variance) estimate (0 <= x < 1)",
    type: "number",
    parse: num({ min: 0, max: 1, maxOpen: true }),
  },
  epsilon: {
    group: "Optimizer",
    describe: "Adam constant added to the denominator for numerical stability (> 0)",
    type: "number",
    parse: num({ min: 0, minOpen: true }),
  },
  weightDecay: {
    group: "Optimizer",
    describe: "L2 weight decay: adds this x weight to every gradient; 0 = off (>= 0)",
    type: "number",
    parse: num({ min: 0 }),
  },
  lrSchedule: {
    group: "Optimizer",
    describe: "Learning-rate schedule: constant, step (see --lr-step-size, --lr-gamma) or cosine (to 0 at the end of the run)",
    type: "string",
    choices: LR_SCHEDULES,
    parse: choice(LR_SCHEDULES),
  },
  lrStepSize: {
    group: "Optimizer",
    describe: "step schedule: multiply the lr by --lr-gamma every this many server steps (integer >= 1)",
    type: "number",
    parse: int(1),
  },
  lrGamma: {
    group: "Optimizer",
    describe: "step schedule: factor the lr is multiplied by every --lr-step-size server steps (0 < x <= 1)",
    type: "number",
    parse: num({ min: 0, minOpen: true, max: 1 }),
  },
  warmupSteps: {
    group: "Optimizer",
    describe: "Raise the lr linearly from 0 over this many server steps; 0 = no warm-up (integer >= 0)",
    type: "number",
    parse: int(0),
  },
  asyncOverlap: {
    group: "Optimizer",
    describe: "async with --comm ps: on = a worker computes its next gradient while its last push-pull is in flight (one more step of staleness, communication hidden behind compute); off = push, wait, compute",
    type: "string",
    choices: ASYNC_OVERLAP,
    parse: choice(ASYNC_OVERLAP),
  },
  asyncLrScale: {
    group: "Optimizer",
    describe: "async and ssp: the step of one arriving gradient: workers (lr / N), none (lr), staleness (lr / max(1, staleness))",
    type: "string",
    choices: ASYNC_LR_SCALES,
    parse: choice(ASYNC_LR_SCALES),
  },
  // Run
  backend: {
    group: "Run",
    describe: "TensorFlow.js backend: auto (best available), node-gpu (CUDA), node (native CPU), wasm, cpu (pure JS)",
    type: "string",
    choices: BACKENDS,
    parse: choice(BACKENDS),
  },
  out: {
    group: "Run",
    describe: "Run directory for config.json, metrics and logs; empty = runs/<timestamp>-<mode>",
    type: "string",
    defaultText: '""',
    parse: str(true),
  },
  logLevel: {
    group: "Run",
    describe: "Log verbosity: fatal, error, warn, info, debug, trace or silent",
    type: "string",
    choices: LOG_LEVELS,
    parse: choice(LOG_LEVELS),
  },
  progress: {
    group: "Run",
    describe: "Progress display: auto (only when stderr is a terminal), on or off",
    type: "string",
    choices: PROGRESS_MODES,
    parse: choice(PROGRESS_MODES),
  },
  timeoutMs: {
    group: "Run",
    describe:
      "Give up on any single wait (rendezvous, a reply, a barrier) after this many milliseconds; keep it above the slowest step plus one evaluation, during which reads are held (integer >= 1)",
    type: "number",
    parse: int(1),
  },
  heartbeatMs: {
    group: "Run",
    describe: "Interval between liveness heartbeats, in milliseconds (integer >= 1)",
    type: "number",
    parse: int(1),
  },
  heartbeatTimeout: {
    group: "Run",
    describe:
      "A role process that sends no heartbeat for this many ms is lost, and a sync/SSP step waiting this long is reported as stalled; 0 = max(--timeout-ms / 2, 5 x --heartbeat-ms) (integer >= 0, > --heartbeat-ms)",
    type: "number",
    parse: int(0),
  },
  onWorkerFailure: {
    group: "Run",
    describe:
      "When a worker dies or goes silent: abort (end the run with an error naming it), shrink (go on with the others; allreduce re-forms the ring) or wait (start a replacement for its rank; --comm ps only)",
    type: "string",
    choices: WORKER_FAILURE_POLICIES,
    parse: choice(WORKER_FAILURE_POLICIES),
  },
  replaceTimeout: {
    group: "Run",
    describe: "--on-worker-failure wait: the replacement must have joined within this many ms, else the run aborts (integer >= 1)",
    type: "number",
    parse: int(1),
  },
  maxReplacements: {
    group: "Run",
    describe: "--on-worker-failure wait: replacements started per rank at most; the next failure of that rank aborts the run (integer >= 0)",
    type: "number",
    parse: int(0),
  },
  maxRestarts: {
    group: "Run",
    describe: "--checkpoint-every: restarts of one server shard at most; its next death fails the run (integer >= 0)",
    type: "number",
    parse: int(0),
  },
  checkpointEvery: {
    group: "Run",
    describe: "Server shards checkpoint weights, optimizer state and clocks every N server updates (sync: global steps); a crashed shard is restarted from it; 0 = off (integer >= 0)",
    type: "number",
    parse: int(0),
  },
  checkpointKeep: {
    group: "Run",
    describe: "Checkpoints kept per shard, newest first (integer >= 1)",
    type: "number",
    parse: int(1),
  },
  gradClip: {
    group: "Run",
    describe: "Clip each gradient range a shard receives to this L2 norm; 0 = off (>= 0)",
    type: "number",
    parse: num({ min: 0 }),
  },
  resume: {
    group: "Run",
    describe: "Continue the run in RUN_DIR from its latest checkpoint, with its config.json; other options may not change its training",
    type: "string",
    defaultText: '""',
    parse: str(true),
  },
};

const KEYS = Object.keys(FIELDS) as TrainOptionKey[];

/** `batchSize` -> `batch-size`, `beta1` -> `beta1`. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `batch-size` -> `PS_TRAIN_BATCH_SIZE`. */
export function envVarName(flag: string): string {
  return ENV_PREFIX + flag.toUpperCase().replace(/-/g, "_");
}

function defaultText(key: TrainOptionKey): string {
  const text = FIELDS[key].defaultText;
  if (text !== undefined) return text;
  const value = DEFAULTS[key];
  return typeof value === "string" ? value : show(value);
}

/** A user-settable option, for documentation and for other commands that reuse the table. */
export interface TrainOptionInfo {
  key: TrainOptionKey;
  flag: string;
  env: string;
  group: OptionGroup;
  describe: string;
  choices: readonly string[] | undefined;
  defaultText: string;
}

/** Every TrainConfig option in help order (without --config). */
export const TRAIN_OPTIONS: readonly TrainOptionInfo[] = OPTION_GROUPS.flatMap((group) =>
  KEYS.filter((key) => FIELDS[key].group === group).map((key) => ({
    key,
    flag: flagName(key),
    env: envVarName(flagName(key)),
    group,
    describe: FIELDS[key].describe,
    choices: FIELDS[key].choices,
    defaultText: defaultText(key),
  })),
);

const CONFIG_DESCRIBE =
  "Read options from a .json, .yaml or .yml FILE (keys kebab-case or camelCase); PS_TRAIN_* variables and flags override it";

// ---------------------------------------------------------------------------------------------
// yargs declarations
// ---------------------------------------------------------------------------------------------

/** Reject a bad choice given as a flag with our one-line message, before yargs's own multi-line one. */
function checkChoiceFlags(argv: Record<string, unknown>): void {
  for (const key of KEYS) {
    if (FIELDS[key].choices === undefined) continue;
    const raw = argv[key] ?? argv[flagName(key)];
    for (const value of Array.isArray(raw) ? raw : [raw]) {
      if (value !== undefined) FIELDS[key].parse(value, `--${flagName(key)}`);
    }
  }
}

/**
 * Declares every TrainConfig option (and --config) on `y`, grouped for --help. No yargs defaults are
 * set, so resolveTrainConfig can tell a flag that was given from one that was not.
 */
export function trainOptions<T>(y: Argv<T>): Argv<T> {
  for (const info of TRAIN_OPTIONS) {
    const field = FIELDS[info.key];
    y.option(info.flag, {
      describe: field.describe,
      requiresArg: true,
      defaultDescription: info.defaultText,
      ...(field.type === "string" ? { type: "string" as const } : {}),
      ...(field.choices !== undefined ? { choices: [...field.choices] } : {}),
    });
  }
  y.option("config", { describe: CONFIG_DESCRIBE, type: "string", requiresArg: true, defaultDescription: "none" });
  for (const group of OPTION_GROUPS) {
    const flags = TRAIN_OPTIONS.filter((o) => o.group === group).map((o) => o.flag);
    y.group(group === "Run" ? ["config", ...flags] : flags, `${group}:`);
  }
  y.middleware((argv) => checkChoiceFlags(argv), true);
  y.epilogue(
    "Every option can also be set in a --config file or as PS_TRAIN_<FLAG> in the environment " +
      "(e.g. PS_TRAIN_BATCH_SIZE=128). Precedence: defaults < config file < environment < flags. " +
      "See docs/configuration.md.",
  );
  return y;
}

// ---------------------------------------------------------------------------------------------
// Resolution: defaults < config file < environment < flags
// ---------------------------------------------------------------------------------------------

interface Setting {
  key: TrainOptionKey;
  raw: unknown;
  /** the flag and where its value came from, for messages */
  where: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Repeated flags arrive as arrays: the last one wins. */
function lastValue(v: unknown): unknown {
  return Array.isArray(v) ? v[v.length - 1] : v;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

const FILE_KEYS: ReadonlyMap<string, TrainOptionKey> = new Map(
  KEYS.flatMap((key): [string, TrainOptionKey][] => [
    [key, key],
    [flagName(key), key],
  ]),
);

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

function suggestKey(name: string): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of FILE_KEYS.keys()) {
    const d = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = candidate;
    }
  }
  return best === undefined ? "" : ` (did you mean "${best}"?)`;
}

function describeError(err: unknown): string {
  if (err instanceof YAMLException) {
    const at = err.mark ? ` at line ${err.mark.line + 1}, column ${err.mark.column + 1}` : "";
    return `${err.reason}${at}`;
  }
  if (isRecord(err) && typeof err["code"] === "string") {
    const reasons: Record<string, string> = {
      ENOENT: "no such file",
      EACCES: "permission denied",
      EISDIR: "it is a directory",
    };
    const reason = reasons[err["code"]];
    if (reason !== undefined) return reason;
  }
  return oneLine(err instanceof Error ? err.message : String(err));
}

function parseConfigText(text: string, file: string, ext: string, where: string): unknown {
  try {
    if (ext === ".json") return JSON.parse(text) as unknown;
    const docs = loadAll(text, { filename: file });
    if (docs.length > 1) throw new Error(`expected one YAML document, found ${docs.length}`);
    return docs[0] ?? {};
  } catch (err) {
    throw badOption(`${where}: cannot parse config file ${JSON.stringify(file)}: ${describeError(err)}`);
  }
}

/** Reads a config file into settings; every failure names the file. */
function loadConfigFile(file: string, where: string): Setting[] {
  const ext = extname(file).toLowerCase();
  if (!(CONFIG_EXTENSIONS as readonly string[]).includes(ext)) {
    throw fail(where, "a .json, .yaml or .yml file", file);
  }
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw badOption(`${where}: cannot read config file ${JSON.stringify(file)}: ${describeError(err)}`);
  }
  const data = parseConfigText(text, file, ext, where);
  if (!isRecord(data)) {
    throw badOption(
      `${where}: config file ${JSON.stringify(file)} must hold a mapping of option names to values (got ${show(data)})`,
    );
  }
  const settings: Setting[] = [];
  const seen = new Map<TrainOptionKey, string>();
  for (const [name, raw] of Object.entries(data)) {
    if (IGNORED_FILE_KEYS.has(name)) continue;
    const key = FILE_KEYS.get(name);
    if (key === undefined) {
      throw badOption(`unknown key ${JSON.stringify(name)} in config file ${JSON.stringify(file)}${suggestKey(name)}`);
    }
    const other = seen.get(key);
    if (other !== undefined) {
      throw badOption(
        `config file ${JSON.stringify(file)} sets --${flagName(key)} twice (keys ${JSON.stringify(other)} and ${JSON.stringify(name)})`,
      );
    }
    seen.set(key, name);
    settings.push({ key, raw, where: `--${flagName(key)} (key ${JSON.stringify(name)} in ${file})` });
  }
  return settings;
}

function envSettings(env: NodeJS.ProcessEnv): Setting[] {
  const settings: Setting[] = [];
  for (const key of KEYS) {
    const name = envVarName(flagName(key));
    const raw = env[name];
    // An empty variable counts as unset, so `PS_TRAIN_WORKERS= ps-train ...` falls back.
    if (raw === undefined || raw.trim() === "") continue;
    settings.push({ key, raw, where: `--${flagName(key)} (set by ${name})` });
  }
  return settings;
}

function flagSettings(argv: Readonly<Record<string, unknown>>): Setting[] {
  const settings: Setting[] = [];
  for (const key of KEYS) {
    const flag = flagName(key);
    let raw = argv[key] ?? argv[flag];
    if (raw === undefined) continue;
    if (Array.isArray(raw)) {
      // --slow may be repeated and accumulates; any other repeated flag: the last one wins.
      raw = key === "slow" ? raw.map((v) => String(v).trim()).filter((v) => v !== "").join(",") : lastValue(raw);
    }
    settings.push({ key, raw, where: `--${flag}` });
  }
  return settings;
}

/** Which config file, if any: --config wins over PS_TRAIN_CONFIG. */
function configSource(argv: Readonly<Record<string, unknown>>, env: NodeJS.ProcessEnv): Setting[] {
  const flag = argv["config"];
  if (flag !== undefined) {
    if (Array.isArray(flag)) throw badOption(`--config may be given only once (got ${show(flag)})`);
    if (typeof flag !== "string" || flag.trim() === "") throw fail("--config", "a file name", flag);
    return loadConfigFile(flag, "--config");
  }
  const name = envVarName("config");
  const fromEnv = env[name];
  if (fromEnv !== undefined && fromEnv.trim() !== "") return loadConfigFile(fromEnv, `--config (set by ${name})`);
  return [];
}

function assign<K extends TrainOptionKey>(config: TrainConfig, s: Setting & { key: K }): void {
  config[s.key] = FIELDS[s.key].parse(s.raw, s.where);
}

/**
 * The validated TrainConfig for a parsed command line (`argv` from yargs, declared with
 * trainOptions) and an environment. Layers: DEFAULTS < config file < PS_TRAIN_* < flags.
 * Every value given in any layer is validated, even one a later layer overrides.
 * totalSteps is left at its default (the launcher computes it).
 * @throws PsError PS_ERR_BAD_OPTION with a one-line message naming the flag and the value.
 */
export function resolveTrainConfig(
  argv: Readonly<Record<string, unknown>>,
  env: NodeJS.ProcessEnv = process.env,
): TrainConfig {
  const config: TrainConfig = { ...DEFAULTS, slow: { ...DEFAULTS.slow } };
  const last = new Map<TrainOptionKey, Setting>();
  for (const s of [...configSource(argv, env), ...envSettings(env), ...flagSettings(argv)]) {
    assign(config, s);
    last.set(s.key, s);
  }
  // Cross-field checks, on the final values.
  if (config.comm === "allreduce" && config.mode !== "sync") {
    // Allreduce is synchronous by nature: sync is what it means, unless another mode was asked for.
    const mode = last.get("mode");
    if (mode !== undefined) {
      throw badOption(`${mode.where}: --comm allreduce needs --mode sync (got ${show(mode.raw)}); async and ssp need the parameter server (--comm ps)`);
    }
    config.mode = "sync";
  }
  const hbTimeout = last.get("heartbeatTimeout");
  if (hbTimeout !== undefined && config.heartbeatTimeout > 0 && config.heartbeatTimeout <= config.heartbeatMs) {
    throw badOption(`${hbTimeout.where}: must be 0 or more than --heartbeat-ms ${config.heartbeatMs} (got ${show(hbTimeout.raw)})`);
  }
  const overlap = last.get("asyncOverlap");
  if (overlap !== undefined && config.asyncOverlap === "on" && (config.mode !== "async" || config.comm !== "ps" || config.parallelism !== "data")) {
    throw badOption(`${overlap.where}: on needs --mode async, --comm ps and data parallelism (got --mode ${config.mode} --comm ${config.comm} --parallelism ${config.parallelism})`);
  }
  const policy = last.get("onWorkerFailure");
  if (policy !== undefined && config.onWorkerFailure === "wait" && config.comm === "allreduce") {
    throw badOption(`${policy.where}: wait needs --comm ps; an allreduce run re-forms without the lost worker with shrink (got ${show(policy.raw)})`);
  }
  checkParallelism(config, last);
  if (config.parallelism !== "data") {
    // Worker-failure policies, shard checkpoints and resume are built for data parallelism.
    const unsupported = (["onWorkerFailure", "checkpointEvery", "resume"] as const).find((k) => last.has(k) && config[k] !== DEFAULTS[k]);
    if (unsupported) throw badOption(`${last.get(unsupported)!.where}: not with --parallelism ${config.parallelism} (data parallelism only, docs/reliability.md)`);
  }
  if (config.resume !== "") {
    return resumeConfig(config, new Map([...last].map(([k, s]) => [k, s.where])));
  }
  const slow = last.get("slow");
  if (slow !== undefined) {
    for (const rank of Object.keys(config.slow).map(Number)) {
      if (rank >= config.workers) {
        throw badOption(
          `${slow.where}: rank ${rank} is out of range 0..${config.workers - 1} for --workers ${config.workers} (got ${show(slow.raw)})`,
        );
      }
    }
  }
  return config;
}

/** Model and hybrid parallelism: the pipeline options against each other and the model. */
function checkParallelism(config: TrainConfig, last: ReadonlyMap<TrainOptionKey, Setting>): void {
  const given = (key: TrainOptionKey) => last.get(key);
  const where = (key: TrainOptionKey) => given(key)?.where ?? `--${flagName(key)}`;
  if (config.parallelism === "data") {
    for (const key of ["stages", "microbatches", "replicas", "splitAt", "adaptive"] as const) {
      const s = given(key);
      if (s !== undefined && JSON.stringify(config[key]) !== JSON.stringify(DEFAULTS[key])) {
        throw badOption(`${s.where} needs --parallelism model or hybrid (got ${show(s.raw)} with --parallelism data)`);
      }
    }
    return;
  }
  if (config.parallelism === "tensor") {
    for (const key of ["stages", "microbatches", "replicas", "splitAt", "adaptive"] as const) {
      const s = given(key);
      if (s !== undefined && JSON.stringify(config[key]) !== JSON.stringify(DEFAULTS[key])) {
        throw badOption(`${s.where} needs --parallelism model or hybrid (got ${show(s.raw)} with --parallelism tensor)`);
      }
    }
    if (config.model !== "mlp" && config.model !== "logreg") throw badOption(`${where("model")}: --parallelism tensor splits dense layers: use --model mlp or logreg (got ${config.model})`);
    if (config.comm !== "ps") throw badOption(`${where("comm")}: --parallelism tensor needs --comm ps`);
    // sync is what tensor parallelism means (the blocks make one step together), unless another mode was asked for
    if (config.mode !== "sync" && given("mode") !== undefined) throw badOption(`${where("mode")}: --parallelism tensor needs --mode sync (the workers' gradient blocks make one step together)`);
    config.mode = "sync";
    return;
  }
  if (config.parallelism === "hybrid" && given("replicas") === undefined) {
    throw badOption(`${where("parallelism")}: --parallelism hybrid needs --replicas R (the data-parallel copies of the pipeline)`);
  }
  if (config.parallelism === "model" && config.replicas !== 1) {
    throw badOption(`${where("replicas")} needs --parallelism hybrid (got ${config.replicas} with --parallelism model)`);
  }
  if (config.comm === "allreduce" && config.adaptive > 0) {
    throw badOption(`${where("adaptive")} needs --comm ps (a re-plan moves units between stages through the shards; got --comm allreduce)`);
  }
  const units = pipelineUnitCount(config.model);
  if (config.stages > units) {
    throw badOption(`${where("stages")}: --stages ${config.stages} exceeds the ${units} layer(s) model ${config.model} can be split into`);
  }
  if (config.splitAt.length > 0) {
    if (config.splitAt.length !== config.stages - 1) {
      throw badOption(`${where("splitAt")} must give stages - 1 = ${config.stages - 1} split point(s) for --stages ${config.stages} (got ${show(given("splitAt")?.raw)})`);
    }
    const lastSplit = config.splitAt[config.splitAt.length - 1]!;
    if (lastSplit >= units) {
      throw badOption(`${where("splitAt")}: split point ${lastSplit} leaves no layer for the last stage of model ${config.model} (${units} layers; split points must be < ${units})`);
    }
  }
  if (config.microbatches > config.batchSize) {
    throw badOption(`${where("microbatches")}: --microbatches ${config.microbatches} exceeds --batch-size ${config.batchSize} (each micro-batch needs a sample)`);
  }
  if (config.adaptive > 0 && config.mode !== "sync") {
    throw badOption(`${where("adaptive")} needs --mode sync (every stage switches split at the same step; got --mode ${config.mode})`);
  }
  const workers = config.stages * config.replicas;
  const w = given("workers");
  if (w !== undefined && config.workers !== workers) {
    throw badOption(`${w.where}: --workers ${config.workers} does not match --stages ${config.stages} x --replicas ${config.replicas} = ${workers} (leave --workers out)`);
  }
  config.workers = workers;
}

// ---------------------------------------------------------------------------------------------
// The parser
// ---------------------------------------------------------------------------------------------

let cachedVersion: string | undefined;

/** ps-train's version from its package.json (found by walking up from this file). */
export function packageVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as unknown;
      if (isRecord(pkg) && pkg["name"] === "ps-train" && typeof pkg["version"] === "string") {
        cachedVersion = pkg["version"];
        return cachedVersion;
      }
    } catch {
      // not here; keep walking up
    }
    dir = dirname(dir);
  }
  cachedVersion = "unknown";
  return cachedVersion;
}

function camelCase(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** yargs's "Unknown arguments: foo-bar, fooBar" as "unknown option --foo-bar". */
function unknownArgumentsMessage(list: string, args: readonly string[]): string {
  const names = list.split(", ");
  const shown = names
    .filter((n) => !names.some((o) => o !== n && camelCase(o) === n))
    .map((n) => {
      const long = `--${n}`;
      if (args.some((a) => a === long || a.startsWith(`${long}=`) || a === `--no-${n}`)) return { flag: true, text: long };
      if (n.length === 1 && args.some((a) => /^-[^-]/.test(a) && a.includes(n))) return { flag: true, text: `-${n}` };
      return { flag: false, text: JSON.stringify(n) };
    });
  const text = shown.map((s) => s.text).join(", ");
  if (shown.every((s) => s.flag)) return `unknown option${shown.length > 1 ? "s" : ""} ${text}`;
  if (shown.every((s) => !s.flag)) return `unexpected argument${shown.length > 1 ? "s" : ""} ${text}`;
  return `unknown arguments ${text}`;
}

/** yargs's own failure message as one line. */
function yargsMessage(msg: string, args: readonly string[]): string {
  const text = oneLine(msg);
  const unknown = /^Unknown arguments?: (.*)$/.exec(text);
  if (unknown?.[1] !== undefined) return unknownArgumentsMessage(unknown[1], args);
  const missing = /^Not enough arguments following: (\S+)$/.exec(text);
  if (missing?.[1] !== undefined) return `--${missing[1]} needs a value`;
  return text;
}

/**
 * The yargs `.fail` handler: usage errors from yargs become one-line PsErrors (BAD_OPTION, exit 2);
 * errors thrown by our own validation or by a command handler pass through unchanged.
 */
function failHandler(args: readonly string[]) {
  return (msg: string | null | undefined, err: Error | undefined): never => {
    if (err instanceof PsError) throw err;
    if (err !== undefined && err.name !== "YError") throw err;
    const text = msg ?? err?.message ?? "invalid command line";
    throw badOption(`${yargsMessage(text, args)} (see ps-train --help)`);
  };
}

export interface CliHooks {
  /** where PS_TRAIN_* variables are read from (default: process.env) */
  env?: NodeJS.ProcessEnv;
  /** runs the default (train) command with the resolved, validated config */
  train?: (config: TrainConfig) => void | Promise<void>;
}

/**
 * The `ps-train` command line: the default command `train` (also `$0`) with every TrainConfig
 * option, --help/-h and --version. It never exits the process: --help and --version print and
 * resolve, and every usage error rejects with a one-line PsError (PS_ERR_BAD_OPTION, exit code 2).
 * Add more commands with `.command(...)` before `.parseAsync()`.
 */
export function buildParser(args: readonly string[], hooks: CliHooks = {}): Argv {
  const env = hooks.env ?? process.env;
  return yargs(args)
    .scriptName("ps-train")
    .locale("en")
    .command(
      ["train", "$0"],
      "Train a model on a local parameter-server cluster (the default command)",
      (y) => curveKeysOption(trainOptions(y)),
      async (argv) => {
        const config = resolveTrainConfig(argv, env);
        applyCurveKeys(argv, env, CURVE_ROLES);
        if (hooks.train !== undefined) await hooks.train(config);
      },
    )
    .strict()
    .help()
    .alias("h", "help")
    .version(packageVersion())
    .showHelpOnFail(false)
    .exitProcess(false)
    .fail(failHandler(args));
}

/**
 * Parses `args` as the train command and returns the resolved config, or undefined when --help or
 * --version was given (yargs has printed it).
 */
export async function parseTrainArgs(
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<TrainConfig | undefined> {
  let config: TrainConfig | undefined;
  await buildParser(args, {
    env,
    train: (c) => {
      config = c;
    },
  }).parseAsync();
  return config;
}
