/**
 * npm run bench:train [-- --modes sync,async,ssp --workers 1,2,4,8 --comms ps,allreduce --epochs 3 --target 0.97 ...]
 *
 * Samples/s and seconds-to-target test accuracy of ps-train on the MNIST MLP, for each mode and
 * worker count, beside plain single-process training with the same backend, batch, gradient
 * code and optimizer (so the ratio is the cost of the parameter server). One JSON line per run
 * on stdout; progress on stderr. Figures are read from each run's summary.json.
 * `--comms ps,allreduce` adds allreduce runs (sync only, no servers) beside the parameter server.
 * `--modes` also takes `async-overlap`: async with --async-overlap on (the next gradient is
 * computed while the last push-pull is in flight).
 */
import { parseArgs } from "node:util";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CommName, DEFAULTS, type ModeName, type ModelName, type OptimizerName, type TrainConfig } from "../src/config/train-config.js";
import { prepareRun, runLocal } from "../src/cluster/train-run.js";
import { ShardBatcher } from "../src/data/batcher.js";
import { loadDataset } from "../src/data/load.js";
import { partitionIndices } from "../src/data/partition.js";
import { selectBackend } from "../src/model/backend.js";
import { createModel } from "../src/model/zoo.js";
import { learningRate } from "../src/ps/lr-schedule.js";
import { createOptimizer } from "../src/ps/optimizer.js";
import { deriveSeed } from "../src/util/rng.js";
import { allocF32 } from "../src/util/simd.js";

const { values: opt } = parseArgs({
  options: {
    modes: { type: "string", default: "sync,async,ssp" },
    comms: { type: "string", default: "ps" },
    workers: { type: "string", default: "1,2,4,8" },
    servers: { type: "string", default: "1" },
    epochs: { type: "string", default: "3" },
    target: { type: "string", default: "0.97" },
    "batch-size": { type: "string", default: String(DEFAULTS.batchSize) },
    model: { type: "string", default: "mlp" },
    dataset: { type: "string", default: "mnist" },
    backend: { type: "string", default: "wasm" },
    optimizer: { type: "string", default: DEFAULTS.optimizer },
    lr: { type: "string", default: String(DEFAULTS.lr) },
    "lr-schedule": { type: "string", default: DEFAULTS.lrSchedule },
    "warmup-steps": { type: "string", default: String(DEFAULTS.warmupSteps) },
    momentum: { type: "string", default: String(DEFAULTS.momentum) },
    staleness: { type: "string", default: "3" },
    transport: { type: "string", default: DEFAULTS.transport },
    "eval-every": { type: "string", default: "0" },
    "no-plain": { type: "boolean", default: false },
    "train-limit": { type: "string", default: "0" },
  },
});

const list = (s: string) => s.split(",").map((x) => x.trim()).filter(Boolean);
const emit = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + "\n");
const note = (s: string) => process.stderr.write(`bench-train: ${s}\n`);

const base: TrainConfig = {
  ...DEFAULTS,
  model: opt.model as ModelName,
  dataset: opt.dataset,
  backend: opt.backend as TrainConfig["backend"],
  batchSize: Number(opt["batch-size"]),
  epochs: Number(opt.epochs),
  targetAccuracy: Number(opt.target) > 0 ? Number(opt.target) : null,
  optimizer: opt.optimizer as OptimizerName,
  lr: Number(opt.lr),
  lrSchedule: opt["lr-schedule"] as TrainConfig["lrSchedule"],
  warmupSteps: Number(opt["warmup-steps"]),
  momentum: Number(opt.momentum),
  staleness: Number(opt.staleness),
  transport: opt.transport as TrainConfig["transport"],
  evalEvery: Number(opt["eval-every"]),
  trainLimit: Number(opt["train-limit"]),
  logLevel: "silent",
  progress: "off",
};

/** Plain single-process training: the same gradient code and optimizer, no parameter server. */
async function plain(cfg: TrainConfig): Promise<Record<string, unknown>> {
  await selectBackend(cfg.backend);
  const ds = await loadDataset(cfg.dataset, { seed: cfg.seed, trainLimit: cfg.trainLimit });
  const [idx] = partitionIndices(ds.trainY, ds.trainCount, 1, "iid", cfg.seed, ds.task);
  const batcher = new ShardBatcher(ds, idx!, cfg.batchSize, deriveSeed(cfg.seed, 0x5eed, 0));
  const model = createModel(cfg.model, ds.inputShape, ds.numOutputs, ds.task);
  // Weights and gradient where the workers keep theirs (the SIMD kernels' memory): the same optimizer code.
  const w = allocF32(model.size);
  w.set(model.init(cfg.seed));
  const g = allocF32(model.size);
  const steps = Math.max(1, Math.floor((cfg.epochs * ds.trainCount) / cfg.batchSize));
  const optimizer = createOptimizer({ ...cfg, totalSteps: steps }, model.size);
  const stepsPerEpoch = ds.trainCount / cfg.batchSize;
  const evalEvery = cfg.evalEvery > 0 ? cfg.evalEvery : Math.max(1, Math.round(cfg.targetAccuracy !== null ? stepsPerEpoch / 5 : stepsPerEpoch));
  let trainMs = 0;
  let samples = 0;
  let timeToTarget: number | null = null;
  let acc = 0;
  let step = 0;
  for (; step < steps; step++) {
    const t0 = performance.now();
    const b = batcher.nextBatch();
    model.setWeights(w);
    model.gradient(b.x, b.y, b.size, g);
    optimizer.apply(w, g, 1, learningRate({ ...cfg, totalSteps: steps }, step));
    trainMs += performance.now() - t0;
    samples += b.size;
    if ((step + 1) % evalEvery === 0 || step + 1 === steps) {
      model.setWeights(w);
      acc = model.evaluate(ds.testX, ds.testY, ds.testCount).accuracy;
      if (cfg.targetAccuracy !== null && acc >= cfg.targetAccuracy) {
        timeToTarget = trainMs / 1000;
        step++;
        break;
      }
    }
  }
  model.dispose();
  return {
    bench: "train",
    impl: "plain-single-process",
    mode: "none",
    workers: 1,
    servers: 0,
    model: cfg.model,
    backend: cfg.backend,
    batch: cfg.batchSize,
    optimizer: cfg.optimizer,
    lr: cfg.lr,
    steps: step,
    samples_per_s: samples / (trainMs / 1000),
    train_s: trainMs / 1000,
    time_to_target_s: timeToTarget,
    target: cfg.targetAccuracy,
    test_accuracy: acc,
    epochs: samples / ds.trainCount,
  };
}

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), "ps-train-bench-"));
  let plainRate: number | null = null;
  try {
    if (!opt["no-plain"]) {
      note("plain single-process baseline");
      const p = await plain(base);
      plainRate = p["samples_per_s"] as number;
      emit(p);
    }
    for (const workers of list(opt.workers).map(Number)) {
      // allreduce runs are sync only and have no servers to vary
      const runs: { comm: CommName; mode: ModeName; servers: number; overlap?: boolean }[] = [];
      for (const comm of list(opt.comms) as CommName[]) {
        if (comm !== "ps" && comm !== "allreduce") throw new Error(`--comms: "${comm}" is not ps or allreduce`);
        if (comm === "allreduce") runs.push({ comm, mode: "sync", servers: 0 });
        else
          for (const servers of list(opt.servers).map(Number))
            for (const m of list(opt.modes)) runs.push(m === "async-overlap" ? { comm, mode: "async", servers, overlap: true } : { comm, mode: m as ModeName, servers });
      }
      for (const { comm, mode, servers, overlap } of runs) {
        const name = overlap ? "async-overlap" : mode;
        const cfg: TrainConfig = { ...base, mode, comm, workers, servers: Math.max(1, servers), asyncOverlap: overlap ? "on" : "off", out: join(root, `${comm}-${name}-w${workers}-s${servers}`) };
        note(`${comm} ${name} workers=${workers} servers=${servers}`);
        const s = await runLocal(await prepareRun(cfg));
        emit({
          bench: "train",
          impl: "ps-train",
          comm,
          mode,
          ...(overlap ? { async_overlap: true } : {}),
          staleness: mode === "ssp" ? cfg.staleness : undefined,
          workers,
          servers: s.servers,
          transport: cfg.transport,
          model: cfg.model,
          backend: s.backend,
          batch: cfg.batchSize,
          optimizer: cfg.optimizer,
          lr: cfg.lr,
          steps: s.steps,
          samples_per_s: s.samplesPerSecond,
          ratio_to_plain: plainRate ? s.samplesPerSecond / plainRate : null,
          train_s: s.trainSeconds,
          wall_s: s.wallSeconds,
          time_to_target_s: s.timeToTargetSeconds,
          target: cfg.targetAccuracy,
          test_accuracy: s.testAccuracy,
          epochs: s.epochsCompleted,
          staleness_mean: s.staleness.mean,
          staleness_max: s.staleness.max,
          worker_compute_s: s.workerComputeSeconds,
          worker_comm_s: s.workerCommSeconds,
          bytes_per_step: s.steps > 0 ? (s.bytesSent + s.bytesReceived) / s.steps : 0,
        });
      }
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench-train: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
