import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { type CommName, dataParallelWidth, heartbeatTimeoutOf, type TrainConfig } from "../config/train-config.js";
import type { Dataset } from "../data/dataset.js";
import { loadDataset } from "../data/load.js";
import { partitionIndices } from "../data/partition.js";
import { IntHistogram } from "../metrics/histogram.js";
import { RunDir } from "../metrics/run-dir.js";
import { selectBackend } from "../model/backend.js";
import type { FlatModel } from "../model/model-api.js";
import { createModel } from "../model/zoo.js";
import { partitionKeys } from "../ps/key-range.js";
import type { ShardStats, StallReport } from "../ps/server-shard.js";
import { bindAddress, removeIpcDir, sweepStaleIpcDirs } from "../transport/endpoint.js";
import { removeShmDir, shmShortfall, sweepStaleShmDirs } from "../transport/shm.js";
import { f32Frame, f32View } from "../transport/frames.js";
import { DType, Flag, makeHeader, MsgType } from "../transport/header.js";
import type { PeerClient, Reply } from "../transport/peer-client.js";
import { ShardPeer } from "../transport/shard-peer.js";
import { enableCurveFromEnv } from "../transport/sockets.js";
import { badOption, ErrorCode, PsError } from "../util/errors.js";
import { type ControlEvent, Coordinator } from "./coordinator.js";
import { type LauncherFactory, localLauncher } from "./launcher.js";
import { publishPeerMap } from "../allreduce/rendezvous.js";
import { reformPeerGroup } from "../allreduce/elastic.js";
import { type WorkerFailureRecord, WorkerFailures } from "./worker-failures.js";
import { planResume, type ResumePlan } from "./resume-plan.js";
import { type RestartableShards, type RestartRecord, ShardRestarter } from "./shard-restarter.js";
import { checkTensorParallel } from "../tensor/tensor-worker.js";
import { serverShardCount } from "../pipeline/units.js";
import { PipelineReplanner, pipelineSummary, pipelineRanges, resolvePipeline, type PipelinePlanInfo, type PipelineSummary } from "../pipeline/run.js";
import { beforeFinalEval, type ConfigMsg, type DoneMsg, type MapMsg, type ProgressMsg, type ReadyMsg, type ResumeMsg, type SnapshotMsg, type WorkerStats } from "./messages.js";

export interface RunHooks {
  /** called at most every ~100 ms with the run's progress (the CLI draws its bar from it) */
  onProgress?: (p: Progress) => void;
  onEval?: (e: EvalRecord) => void;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
  /** worker failures, re-formations and stalls (the CLI logs them at warn level) */
  warn?: (msg: string, fields?: Record<string, unknown>) => void;
}

export interface Progress {
  epoch: number;
  epochs: number;
  globalStep: number;
  totalSteps: number;
  loss: number;
  accuracy: number;
  samplesPerSecond: number;
  testAccuracy: number | null;
}

export interface EvalRecord {
  type: "eval";
  /** training seconds (evaluation pauses excluded) when the snapshot was taken */
  t: number;
  epoch: number;
  globalStep: number;
  testLoss: number;
  testAccuracy: number;
}

export interface Summary {
  status: "ok";
  mode: string;
  comm: CommName;
  workers: number;
  servers: number;
  model: string;
  dataset: string;
  task: "classification" | "regression";
  backend: string;
  /** what computed the gradients: tfjs ops, or the SIMD dense kernels (src/model/dense-simd.ts) */
  kernels: FlatModel["kernels"];
  paramCount: number;
  batchSize: number;
  globalBatch: number;
  optimizer: string;
  lr: number;
  epochs: number;
  epochsCompleted: number;
  steps: number;
  stepsPerWorker: number;
  samples: number;
  testAccuracy: number;
  testLoss: number;
  wallSeconds: number;
  trainSeconds: number;
  evalSeconds: number;
  samplesPerSecond: number;
  bytesSent: number;
  bytesReceived: number;
  bytesByRole: { worker: { sent: number; received: number }; server: { sent: number; received: number } };
  staleness: { mean: number; p99: number; max: number };
  readGap: { mean: number; p99: number; max: number };
  readsWaited: number;
  serverErrors: Record<string, number>;
  workerComputeSeconds: number;
  workerCommSeconds: number;
  targetAccuracy: number | null;
  timeToTargetSeconds: number | null;
  stoppedEarly: boolean;
  evals: EvalRecord[];
  workerStats: WorkerStats[];
  /** --on-worker-failure: the policy, the workers lost (and replaced), the workers that finished */
  onWorkerFailure: string;
  workerFailures: WorkerFailureRecord[];
  workersAtEnd: number;
  /** reads held past the heartbeat timeout, as the shards reported them (the first 20) */
  stallReports: StallReport[];
  /** reliability (docs/reliability.md): shard restarts, gradients lost with them, refused/clipped gradients */
  restarts: number;
  lostUpdates: number;
  restartLog: RestartRecord[];
  rejectedGradients: number;
  clippedGradients: number;
  checkpoints: number;
  /** --resume: the global step the run went on from (throughput figures cover this part only) */
  resumedFrom: number | null;
  /** checkpoints passed over because they did not verify (checksum, truncation), with why */
  checkpointsSkipped: string[];
  /** model, hybrid or tensor parallelism (absent for data parallelism) */
  parallelism?: string;
  /** model/hybrid parallelism: the figures experiments compare, beside the `pipeline` block */
  stages?: number;
  microbatches?: number;
  replicas?: number;
  splitAt?: number[];
  bubbleFraction?: number;
  /** model/hybrid parallelism: stages, micro-batches, replicas, split points, bubble fraction */
  pipeline?: PipelineSummary;
}

export interface PreparedRun {
  config: TrainConfig;
  dataset: Dataset;
  model: FlatModel;
  backend: string;
  stepsPerWorker: number;
  /** --resume: where each shard and worker starts */
  resume: ResumePlan | null;
  /** model/hybrid parallelism: the split points' origin and the planner's prediction */
  pipeline?: PipelinePlanInfo;
}

const PKG_VERSION = (createRequire(import.meta.url)("../../../package.json") as { version: string }).version;

/** Steps each worker takes: the whole run covers `epochs` passes over the training set. */
export function stepsPerWorker(cfg: TrainConfig, trainCount: number): number {
  if (cfg.maxSteps > 0) return cfg.maxSteps;
  return Math.max(1, Math.floor((cfg.epochs * trainCount) / (dataParallelWidth(cfg) * cfg.batchSize)));
}

/**
 * Everything that can be wrong with the input is found here, before a process starts or a
 * file is written: the dataset, the model against the dataset's shape, the partition, --out.
 */
export async function prepareRun(given: TrainConfig): Promise<PreparedRun> {
  let config = given;
  if (config.resume === "" && config.out) RunDir.check(config.out);
  const dataset = await loadDataset(config.dataset, { seed: config.seed, trainLimit: config.trainLimit, testLimit: config.testLimit });
  partitionIndices(dataset.trainY, dataset.trainCount, dataParallelWidth(config), config.partition, config.seed, dataset.task);
  const { backend } = await selectBackend(config.backend);
  const model = createModel(config.model, dataset.inputShape, dataset.numOutputs, dataset.task);
  // model/hybrid parallelism: the split points (given, or chosen by the planner)
  let pipeline: PipelinePlanInfo | undefined;
  if (config.parallelism === "model" || config.parallelism === "hybrid") ({ config, info: pipeline } = await resolvePipeline(config, model, dataset));
  if (config.parallelism === "tensor") checkTensorParallel(config, model);
  if (config.comm === "allreduce" && config.mode !== "sync") throw badOption(`--comm allreduce needs --mode sync (got ${config.mode})`);
  if (config.comm === "allreduce" && config.onWorkerFailure === "wait") throw badOption("--on-worker-failure wait needs --comm ps; an allreduce run re-forms without the lost worker with shrink");
  if (config.comm === "ps" && config.servers > model.size) throw badOption(`--servers ${config.servers} exceeds the model's ${model.size} parameters`);
  const resume = config.resume !== "" ? planResume(config, config.resume) : null;
  return { config, dataset, model, backend, stepsPerWorker: stepsPerWorker(config, dataset.trainCount), resume, ...(pipeline ? { pipeline } : {}) };
}

/** How the role processes are started: children on this machine unless a launcher is given (cluster mode). */
export interface RunOptions {
  launcher?: LauncherFactory;
}

/**
 * The transport a local run uses: --transport shm becomes ipc when CURVE is on (tensors then stay
 * inside CurveZMQ, docs/security.md) or when /dev/shm has no room for the run's files.
 */
function localTransport(cfg: TrainConfig, params: number, curve: boolean, log: (msg: string) => void, warn: (msg: string) => void): TrainConfig {
  if (cfg.transport !== "shm") return cfg;
  if (curve) {
    log("--curve-keys: the tensors stay inside CurveZMQ, so this run uses --transport ipc instead of shm");
    return { ...cfg, transport: "ipc" };
  }
  const shortfall = shmShortfall(params, cfg.workers, cfg.comm);
  if (shortfall === null) return cfg;
  warn(`--transport shm: ${shortfall}; this run uses ipc (see docs/configuration.md)`);
  return { ...cfg, transport: "ipc" };
}

/** Run a whole training job on this machine: coordinator here, shards and workers as child processes. */
export async function runLocal(prep: PreparedRun, hooks: RunHooks = {}, opts: RunOptions = {}): Promise<Summary> {
  const wall0 = performance.now();
  const { dataset, model } = prep;
  const log = hooks.log ?? (() => undefined);
  const warn = hooks.warn ?? log;
  // --curve-keys: CURVE on every socket of the run, this process as the coordinator (docs/security.md).
  const curve = await enableCurveFromEnv("coordinator", (msg, fields) => log(msg, fields));
  // before the room check: a dead run's shared-memory files may be what fills /dev/shm
  if (prep.config.transport !== "tcp") for (const dir of [...sweepStaleShmDirs(), ...sweepStaleIpcDirs()]) log(`removed ${dir}, left by a run whose coordinator is gone`);
  const cfg = localTransport(prep.config, model.size, curve, log, warn);
  const runId = randomBytes(4).readUInt32LE(0) || 1;
  const runTag = `${process.pid}-${runId.toString(16)}`;
  const out = cfg.out || `runs/${new Date().toISOString().replace(/[:.]/g, "-")}-${cfg.mode}`;
  const resume = prep.resume;
  const runDir = resume ? RunDir.open(cfg.resume) : RunDir.create(out);
  // --comm allreduce: no server shards; the workers reduce among themselves.
  const allreduce = cfg.comm === "allreduce";
  // model/hybrid parallelism: --servers shards per stage, each inside one stage's key range
  const pipelined = cfg.parallelism === "model" || cfg.parallelism === "hybrid";
  const ranges = allreduce ? [] : pipelined ? pipelineRanges(model, cfg) : partitionKeys(model.size, cfg.servers);
  const nServers = ranges.length;
  if (nServers !== serverShardCount(cfg)) throw new Error(`internal: ${nServers} shard ranges, expected ${serverShardCount(cfg)}`);
  // workers that report steps (the last stage of each pipeline) and own a data shard
  const dp = dataParallelWidth(cfg);
  const totalSteps = prep.stepsPerWorker;
  const config: TrainConfig = { ...cfg, out: runDir.path, totalSteps };

  // The largest control frame is a copy of the weights (allreduce SNAPSHOT and DONE).
  const coordinator = new Coordinator(runId, cfg.timeoutMs, model.size * 4 + 1024 * 1024);
  const endpoint = await coordinator.bind(bindAddress(cfg.transport, runTag, "coordinator"));
  let restarter: ShardRestarter | null = null;
  const launcher = (opts.launcher ?? localLauncher)(
    endpoint,
    cfg.timeoutMs,
    (err, who) => {
      // With checkpoints on, a dead shard is restarted from its checkpoint (docs/reliability.md).
      if (who?.role === "server" && restarter?.onExit(who.rank)) return;
      if (who) coordinator.lost(who.role, who.rank, err);
      else coordinator.fail(err);
    },
    cfg.workers + nServers,
  );
  // Worker failures (--on-worker-failure): steps each rank has reported, and what a loss does.
  const stepsOf = new Array<number>(cfg.workers).fill(0);
  const done = new Map<number, WorkerStats>();
  const failures = new WorkerFailures({
    policy: cfg.onWorkerFailure,
    workers: cfg.workers,
    maxReplacements: cfg.maxReplacements,
    replaceTimeoutMs: cfg.replaceTimeout,
    coordinator,
    launcher,
    logFile: (rank, n) => runDir.logFile(`worker-${rank}-replacement-${n}.log`),
    stepOf: (rank) => stepsOf[rank] ?? 0,
    isDone: (rank) => done.has(rank),
    log: warn,
  });
  const stallReports: StallReport[] = [];
  coordinator.onStall = (peer, body) => {
    const r = body as StallReport;
    const waiting = Array.isArray(r?.waitingOn) ? r.waitingOn.map((w) => `worker ${w.rank} (at clock ${w.clock})`).join(", ") : "?";
    warn(`stall: server shard ${peer.rank} has held worker ${r?.reader}'s read for clock ${r?.clock} for ${r?.waitedMs} ms, waiting for ${waiting || "nobody (paused?)"}`, { stall: r });
    if (stallReports.length < 20) stallReports.push(r);
  };
  const shardClients: ShardPeer[] = [];
  const memberClients: ShardPeer[] = [];
  let closeEvaluator = (): void => undefined;
  const globalBatchSize = dp * cfg.batchSize;
  const evalInterval =
    cfg.evalEvery > 0 ? cfg.evalEvery : Math.max(1, Math.round((dataset.trainCount / globalBatchSize) * (cfg.targetAccuracy !== null ? 0.2 : 1)));
  const tellWorkerLeft = async (c: ShardPeer, rank: number): Promise<void> => {
    const body = Buffer.from(JSON.stringify({ rank }));
    await c.request(makeHeader(MsgType.WORKER_LEFT, { runId, rank: -1, dtype: DType.JSON, byteLength: body.byteLength }), [body]);
  };
  const cleanup = async () => {
    closeEvaluator();
    for (const c of shardClients) c.close();
    for (const c of memberClients) c.close();
    await launcher.killAll();
    coordinator.close();
    if (cfg.transport !== "tcp") removeIpcDir(runTag);
    if (cfg.transport === "shm") removeShmDir(runTag);
    await runDir.close();
  };

  try {
    for (let k = 0; k < nServers; k++) {
      coordinator.expect("server", k);
      launcher.start("server", k, runDir.logFile(`server-${k}.log`));
    }
    for (let r = 0; r < cfg.workers; r++) {
      coordinator.expect("worker", r);
      launcher.start("worker", r, runDir.logFile(`worker-${r}.log`));
    }
    await coordinator.waitForHellos();
    coordinator.startWatchdog(cfg.heartbeatMs, heartbeatTimeoutOf(cfg));

    const init = model.init(cfg.seed);
    const cfgMsg: ConfigMsg = { config, runId, runTag, paramCount: model.size, ranges, stepsPerWorker: totalSteps, evalInterval };
    for (let k = 0; k < nServers; k++) {
      const r = ranges[k]!;
      const msg: ConfigMsg = resume ? { ...cfgMsg, restore: { step: resume.shardSteps[k]!, workerClocks: resume.startSteps } } : cfgMsg;
      await coordinator.send("server", k, MsgType.CONFIG, msg, [f32Frame(init.subarray(r.start, r.end))]);
    }
    // allreduce: rank 0 gets the initial weights and broadcasts them to the others.
    // (a pipeline's stages each start from these weights: every worker gets them)
    for (let w = 0; w < cfg.workers; w++) {
      const msg: ConfigMsg = resume ? { ...cfgMsg, startStep: resume.startSteps[w]! } : cfgMsg;
      await coordinator.send("worker", w, MsgType.CONFIG, msg, allreduce && (w === 0 || pipelined) ? [f32Frame(init)] : []);
    }

    const map: MapMsg = { servers: [] };
    if (allreduce) map.peers = await publishPeerMap(coordinator, cfg.workers, cfg.timeoutMs);
    await coordinator.collect(MsgType.READY, nServers, cfg.timeoutMs, (ev) => {
      const body = ev.body as ReadyMsg;
      if (ev.peer.role !== "server" || typeof body?.endpoint !== "string") throw new PsError(ErrorCode.PEER_LOST, `unexpected READY from ${ev.peer.role} ${ev.peer.rank}`);
      map.servers.push({ shard: ev.peer.rank, endpoint: body.endpoint, range: ranges[ev.peer.rank]! });
    }, () => missingOf(nServers, new Set(map.servers.map((s) => s.shard)), "server"));
    map.servers.sort((a, b) => a.shard - b.shard);
    if (!allreduce) await coordinator.broadcast("worker", MsgType.MAP, map);
    // pipeline stages: every worker's endpoint, for its neighbours
    if (pipelined || cfg.parallelism === "tensor") map.peers = await publishPeerMap(coordinator, cfg.workers, cfg.timeoutMs);
    runDir.writeJson("config.json", {
      ...config,
      // config.json repeats the run when given back with --config; a resumed run records where it went on from
      resume: "",
      ...(resume ? { resumedFrom: resume.startSteps } : {}),
      backend: prep.backend,
      backendRequested: cfg.backend,
      kernels: model.kernels,
      versions: { psTrain: PKG_VERSION, node: process.version },
      paramCount: model.size,
      stepsPerWorker: totalSteps,
      ...(prep.pipeline ? { pipelinePlan: prep.pipeline } : {}),
      cluster: { coordinator: endpoint, servers: map.servers, ...(map.peers ? { peers: map.peers } : {}), processes: launcher.pids(), security: curve ? "curve" : "none" },
    });
    const readyWorkers = new Set<number>();
    await coordinator.collect(MsgType.READY, cfg.workers, cfg.timeoutMs + 60_000, (ev) => readyWorkers.add(ev.peer.rank), () =>
      missingOf(cfg.workers, readyWorkers, "worker"),
    );

    for (const s of map.servers) shardClients.push(new ShardPeer(`server shard ${s.shard}`, s.endpoint, cfg.timeoutMs));
    // Worker failures: the shards learn that a rank left on sockets of their own (the evaluator's may be busy).
    for (const s of map.servers) memberClients.push(new ShardPeer(`server shard ${s.shard}`, s.endpoint, cfg.timeoutMs));
    if (allreduce) {
      // Elastic allreduce: the survivors re-form the peer group without the lost worker.
      let gen = 0;
      failures.onLeft = async () => {
        gen++;
        await reformPeerGroup(coordinator, { gen, ranks: failures.liveRanks(), timeoutMs: cfg.timeoutMs, isDone: (r) => done.has(r), log: warn });
      };
    } else {
      failures.onLeft = async (rank) => {
        await Promise.all(memberClients.map((c) => tellWorkerLeft(c, rank)));
      };
    }
    const psEvaluator = allreduce ? null : new Evaluator(model, dataset, shardClients, map, runId, cfg.timeoutMs);
    const evaluator: RunEvaluator = psEvaluator ?? new AllreduceEvaluator(model, dataset, coordinator, pipelined ? cfg.stages : 1);
    closeEvaluator = () => evaluator.close();
    if (psEvaluator && cfg.checkpointEvery > 0) {
      // A restarted shard also gets back the coordinator's membership socket. The workers lost so
      // far come in its CONFIG (restore.left); one lost later is told over this socket once it is
      // up (failures.onLeft waits for it), one request at a time.
      const restartable: RestartableShards = {
        shardDown: (k) => {
          psEvaluator.shardDown(k);
          memberClients[k]?.down();
        },
        shardUp: async (k, ep) => {
          await Promise.all([psEvaluator.shardUp(k, ep), memberClients[k]?.up(ep)]);
        },
      };
      restarter = new ShardRestarter(coordinator, launcher, cfgMsg, init, map, restartable, (k) => runDir.logFile(`server-${k}.log`), log, {
        isLost: (r) => failures.isLost(r),
        interruptJoins: () => failures.interruptJoins(),
      });
    }
    // Every wait of the coordinator also ends as soon as any process of the run fails.
    const guard = <T>(p: Promise<T>): Promise<T> => Promise.race([p, coordinator.failure]);

    // ---- training ----
    // The same rule the workers of an allreduce run follow (messages.ts isEvalStep).
    const periodic = (g: number) => beforeFinalEval(g, evalInterval, totalSteps);
    // Sync runs are evaluated at exact steps: the shards hold every read at the evaluation step,
    // so the evaluated weights (and an early stop) do not depend on timing.
    const exact = cfg.mode === "sync";
    const startGlobal = resume ? resume.startSteps.reduce((a, b) => a + b, 0) / cfg.workers : 0; // data parallelism only (--resume)
    const snapshotWaitMs = Math.max(cfg.timeoutMs * 20, 600_000);
    let exactSnapshot: Promise<number> | null = null;
    const snapshotAt = (g: number) => guard(evaluator.snapshotAt(g, snapshotWaitMs)).then(() => g);
    const firstEval = (Math.floor(startGlobal / evalInterval) + 1) * evalInterval;
    if (exact && periodic(firstEval)) {
      await guard(evaluator.holdAt(firstEval));
      exactSnapshot = snapshotAt(firstEval);
    }
    failures.arm(cfgMsg, map);
    await coordinator.broadcast("worker", MsgType.START);
    restarter?.setActive(true);
    const train0 = performance.now();
    let pausedMs = 0;
    const trainSeconds = () => (performance.now() - train0 - pausedMs) / 1000;
    const globalBatch = globalBatchSize;
    const evalEvery = evalInterval;
    let nextEval = firstEval;
    let totalWorkerSteps = startGlobal * dp;
    let samples = 0;
    // Global step: the mean of the steps of the workers still in the run (all of them when none was lost).
    const globalStepNow = () => {
      if (failures.records.length === 0) return totalWorkerSteps / dp;
      const live = failures.liveRanks();
      return live.length > 0 ? live.reduce((a, r) => a + stepsOf[r]!, 0) / live.length : totalWorkerSteps / dp;
    };
    const evals: EvalRecord[] = [];
    let timeToTarget: number | null = null;
    let stopRequested = false;
    let emaLoss = NaN;
    let emaAcc = NaN;
    let lastProgress = 0;
    let lastEval: EvalRecord | null = null;

    const doEval = async (exactStep: number | null) => {
      const p0 = performance.now();
      const t = trainSeconds();
      const globalStep = exactStep ?? globalStepNow();
      const res = exactStep !== null ? evaluator.score() : await guard(evaluator.evaluate(true));
      const rec: EvalRecord = { type: "eval", t, epoch: (globalStep * globalBatch) / dataset.trainCount, globalStep, testLoss: res.loss, testAccuracy: res.accuracy };
      evals.push(rec);
      lastEval = rec;
      runDir.metric(rec as unknown as Record<string, unknown>);
      hooks.onEval?.(rec);
      log("eval", rec as unknown as Record<string, unknown>);
      if (cfg.targetAccuracy !== null && timeToTarget === null && res.accuracy >= cfg.targetAccuracy) {
        timeToTarget = t;
        stopRequested = true;
        await guard(evaluator.stopShards());
      } else if (exactStep !== null) {
        nextEval = exactStep + evalEvery;
        const next = periodic(nextEval) ? nextEval : null;
        await guard(evaluator.resumeAt(next));
        if (next !== null) exactSnapshot = snapshotAt(next);
      }
      pausedMs += performance.now() - p0;
    };

    // --adaptive pipelines: the split for every check step, re-planned from the measured link
    const replanner = pipelined && cfg.adaptive > 0 && prep.pipeline ? new PipelineReplanner(cfg, prep.pipeline, coordinator, totalSteps) : null;
    let pendingEvent: Promise<ControlEvent | null> | null = null;
    let pendingChange: Promise<{ changed: true }> | null = null;
    while (!failures.finished((r) => done.has(r))) {
      pendingEvent ??= coordinator.next([MsgType.PROGRESS, MsgType.DONE], cfg.timeoutMs * 2);
      const waits: Promise<{ ev: ControlEvent | null } | { step: number } | { changed: true }>[] = [pendingEvent.then((e) => ({ ev: e }))];
      if (exactSnapshot) waits.push(exactSnapshot.then((step) => ({ step })));
      // A worker lost (or replaced) may be the one the loop was waiting for. (One promise per
      // change, not per message: a promise raced anew every turn would collect reactions.)
      pendingChange ??= failures.changed().then(() => ({ changed: true as const }));
      waits.push(pendingChange);
      const got = await Promise.race(waits);
      if ("changed" in got) {
        pendingChange = null;
        continue;
      }
      if ("step" in got) {
        exactSnapshot = null;
        await doEval(got.step);
        continue;
      }
      pendingEvent = null;
      const ev = got.ev;
      if (!ev) {
        const missing = missingOf(cfg.workers, new Set(done.keys()), "worker").filter((k) => !failures.isLost(Number(k.split(":")[1])));
        const stall = stallReports.length > 0 ? `; last stall report: ${JSON.stringify(stallReports[stallReports.length - 1])}` : "";
        throw new PsError(ErrorCode.TIMEOUT, `no progress from any worker for ${cfg.timeoutMs * 2} ms (waiting for ${missing.join(", ")})${stall}`);
      }
      if (ev.header.type === MsgType.DONE) {
        const d = ev.body as DoneMsg;
        if (d.worker) done.set(ev.peer.rank, d.worker);
        evaluator.onDone(ev);
        continue;
      }
      const pm = ev.body as ProgressMsg;
      for (const s of pm.steps) {
        totalWorkerSteps++;
        if (pm.rank >= 0 && pm.rank < cfg.workers) stepsOf[pm.rank] = s.step + 1;
        samples += s.samples;
        const acc = s.samples > 0 ? s.correct / s.samples : 0;
        emaLoss = Number.isNaN(emaLoss) ? s.loss : 0.95 * emaLoss + 0.05 * s.loss;
        emaAcc = Number.isNaN(emaAcc) ? acc : 0.95 * emaAcc + 0.05 * acc;
        runDir.metric({
          type: "step",
          worker: pm.rank,
          step: s.step,
          t: s.t / 1000,
          epoch: (globalStepNow() * globalBatch) / dataset.trainCount,
          loss: s.loss,
          accuracy: acc,
          samples: s.samples,
          staleness: s.staleness,
          computeMs: s.computeMs,
          commMs: s.commMs,
        });
        if (!Number.isFinite(s.loss)) {
          throw new PsError(ErrorCode.DIVERGED, `training diverged: worker ${pm.rank} reported loss ${s.loss} at step ${s.step} (lower --lr?)`);
        }
      }
      if (replanner && pm.replanAt !== undefined) await guard(replanner.onArrive(pm.rank, pm.replanAt));
      // Periodic evaluation; none in the last half interval, where the final evaluation follows.
      const globalStep = globalStepNow();
      if (!exact && !stopRequested && globalStep >= nextEval && periodic(globalStep)) {
        nextEval += evalEvery;
        await doEval(null);
      }
      const now = performance.now();
      if (hooks.onProgress && now - lastProgress > 100) {
        lastProgress = now;
        const ts = trainSeconds();
        hooks.onProgress({
          epoch: (globalStepNow() * globalBatch) / dataset.trainCount,
          epochs: (totalSteps * globalBatch) / dataset.trainCount,
          globalStep: globalStepNow(),
          totalSteps,
          loss: emaLoss,
          accuracy: emaAcc,
          samplesPerSecond: ts > 0 ? samples / ts : 0,
          testAccuracy: (lastEval as EvalRecord | null)?.testAccuracy ?? null,
        });
      }
    }
    const trainS = trainSeconds();
    failures.disarm();
    await guard(failures.settled());
    const endStep = globalStepNow();

    // ---- the end: final weights, statistics, model ----
    restarter?.setActive(false);
    await guard(restarter?.settled() ?? Promise.resolve());
    const stats = await guard(evaluator.shardStats());
    const final = await guard(evaluator.evaluate(false));
    const finalT = trainS;
    const finalRec: EvalRecord = {
      type: "eval",
      t: finalT,
      epoch: (endStep * globalBatch) / dataset.trainCount,
      globalStep: endStep,
      testLoss: final.loss,
      testAccuracy: final.accuracy,
    };
    evals.push(finalRec);
    runDir.metric(finalRec as unknown as Record<string, unknown>);
    hooks.onEval?.(finalRec);
    if (cfg.targetAccuracy !== null && timeToTarget === null && final.accuracy >= cfg.targetAccuracy) timeToTarget = finalT;
    model.setWeights(evaluator.weights);
    await model.save(runDir.modelDir);

    await coordinator.broadcast(null, MsgType.STOP);
    await launcher.stop(cfg.timeoutMs);

    const staleness = new IntHistogram();
    const readGap = new IntHistogram();
    const serverErrors: Record<string, number> = {};
    let serverSent = 0;
    let serverReceived = 0;
    let readsWaited = 0;
    let rejectedGradients = 0;
    let clippedGradients = 0;
    let checkpoints = 0;
    for (const s of stats) {
      rejectedGradients += s.rejectedGradients;
      clippedGradients += s.clippedGradients;
      checkpoints += s.checkpoints;
      staleness.merge(s.staleness);
      readGap.merge(s.readGap);
      readsWaited += s.readsWaited;
      serverSent += s.bytesSent;
      serverReceived += s.bytesReceived;
      for (const [k, v] of Object.entries(s.errors)) serverErrors[k] = (serverErrors[k] ?? 0) + v;
    }
    const workerStats = [...done.values()].sort((a, b) => a.rank - b.rank);
    const wSent = workerStats.reduce((a, w) => a + w.bytesSent, 0);
    const wRecv = workerStats.reduce((a, w) => a + w.bytesReceived, 0);
    const pick = (h: IntHistogram) => {
      const s = h.summary();
      return { mean: s.mean, p99: s.p99, max: s.max };
    };
    const summary: Summary = {
      status: "ok",
      mode: cfg.mode,
      comm: cfg.comm,
      workers: cfg.workers,
      servers: nServers,
      model: cfg.model,
      dataset: cfg.dataset,
      task: dataset.task,
      backend: prep.backend,
      kernels: model.kernels,
      paramCount: model.size,
      batchSize: cfg.batchSize,
      globalBatch,
      optimizer: cfg.optimizer,
      lr: cfg.lr,
      epochs: cfg.epochs,
      epochsCompleted: samples / dataset.trainCount,
      steps: endStep,
      stepsPerWorker: totalSteps,
      samples,
      testAccuracy: final.accuracy,
      testLoss: final.loss,
      wallSeconds: (performance.now() - wall0) / 1000,
      trainSeconds: trainS,
      evalSeconds: pausedMs / 1000,
      samplesPerSecond: trainS > 0 ? samples / trainS : 0,
      bytesSent: wSent,
      bytesReceived: wRecv,
      bytesByRole: { worker: { sent: wSent, received: wRecv }, server: { sent: serverSent, received: serverReceived } },
      staleness: pick(staleness),
      readGap: pick(readGap),
      readsWaited,
      serverErrors,
      workerComputeSeconds: workerStats.reduce((a, w) => a + w.computeSeconds, 0),
      workerCommSeconds: workerStats.reduce((a, w) => a + w.commSeconds, 0),
      targetAccuracy: cfg.targetAccuracy,
      timeToTargetSeconds: timeToTarget,
      stoppedEarly: stopRequested,
      evals,
      workerStats,
      onWorkerFailure: cfg.onWorkerFailure,
      workerFailures: failures.records,
      workersAtEnd: done.size,
      stallReports,
      restarts: restarter?.restarts ?? 0,
      lostUpdates: restarter?.lostUpdates ?? 0,
      restartLog: restarter?.records ?? [],
      rejectedGradients,
      clippedGradients,
      checkpoints,
      resumedFrom: resume ? startGlobal : null,
      checkpointsSkipped: [...(resume?.skipped ?? []), ...(restarter?.records ?? []).flatMap((r) => r.skipped)],
      ...(cfg.parallelism !== "data" ? { parallelism: cfg.parallelism } : {}),
      ...(pipelined ? pipelineFields(pipelineSummary(cfg, workerStats, prep.pipeline, replanner)) : {}),
    };
    runDir.writeJson("summary.json", summary);
    return summary;
  } catch (err) {
    const e = coordinator.failed ?? err;
    try {
      runDir.writeJson("summary.json", {
        status: "failed",
        error: e instanceof Error ? e.message : String(e),
        code: e instanceof PsError ? e.code : undefined,
        onWorkerFailure: cfg.onWorkerFailure,
        workerFailures: failures.records,
      });
    } catch {
      /* the error below is what matters */
    }
    throw e;
  } finally {
    await cleanup();
  }
}

function pipelineFields(p: PipelineSummary): Pick<Summary, "stages" | "microbatches" | "replicas" | "splitAt" | "bubbleFraction" | "pipeline"> {
  return { stages: p.stages, microbatches: p.microbatches, replicas: p.replicas, splitAt: p.splitAt, bubbleFraction: p.bubbleFraction, pipeline: p };
}

function missingOf(n: number, have: Set<number>, role: "server" | "worker"): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) if (!have.has(i)) out.push(`${role}:${i}`);
  return out;
}

/** Where the coordinator gets the weights it evaluates, and how it pauses and stops training. */
interface RunEvaluator {
  readonly weights: Float32Array;
  close(): void;
  /** the current weights, training paused while they are read (not for exact-step runs) */
  evaluate(pause: boolean): Promise<{ loss: number; accuracy: number }>;
  /** hold training at global step g (the first exact evaluation) */
  holdAt(g: number): Promise<void>;
  /** the weights at exactly global step g */
  snapshotAt(g: number, timeoutMs: number): Promise<void>;
  /** let training go on, to be held again at step g (none when null) */
  resumeAt(g: number | null): Promise<void>;
  /** end training here (the target accuracy is reached) */
  stopShards(): Promise<void>;
  score(): { loss: number; accuracy: number };
  /** a worker's DONE message */
  onDone(ev: ControlEvent): void;
  shardStats(): Promise<ShardStats[]>;
}

/**
 * An allreduce run has no shards: the workers stop by themselves after every evaluation step
 * (ConfigMsg.evalInterval), rank 0 sends its weights (which equal every other worker's), and the
 * coordinator's RESUME lets them go on or stop. The final weights come with rank 0's DONE.
 */
class AllreduceEvaluator implements RunEvaluator {
  readonly weights: Float32Array;
  private finals = 0;
  /** the step of the last snapshot evaluated */
  private step = 0;

  constructor(
    private readonly model: FlatModel,
    private readonly dataset: Dataset,
    private readonly coordinator: Coordinator,
    /** workers 0..holders-1 hold the weights: rank 0, or the stages of a pipeline's replica 0 */
    private readonly holders = 1,
  ) {
    this.weights = new Float32Array(model.size);
  }

  close(): void {}

  private absorb(frame: Buffer | undefined, what: string, rank = 0, start = 0, end = this.weights.length): void {
    const bytes = (end - start) * 4;
    if (!frame || !(start >= 0 && end <= this.weights.length && end >= start) || frame.byteLength !== bytes) {
      throw new PsError(ErrorCode.BAD_MESSAGE, `worker ${rank} sent ${frame?.byteLength ?? 0} bytes of weights with ${what}, expected ${bytes} for keys [${start}, ${end})`);
    }
    this.weights.set(f32View(frame), start);
  }

  private get haveFinal(): boolean {
    return this.finals >= this.holders;
  }

  evaluate(): Promise<{ loss: number; accuracy: number }> {
    if (!this.haveFinal) return Promise.reject(new Error("an allreduce run is evaluated at exact steps and at its end only"));
    return Promise.resolve(this.score());
  }

  holdAt(): Promise<void> {
    return Promise.resolve();
  }

  async snapshotAt(g: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < this.holders; ) {
      const remaining = deadline - Date.now();
      const ev = remaining > 0 ? await this.coordinator.next([MsgType.SNAPSHOT], remaining) : null;
      if (!ev) throw new PsError(ErrorCode.TIMEOUT, `${this.holders > 1 ? `the stages of replica 0 (workers 0..${this.holders - 1})` : "worker 0"} sent no weights for the evaluation at step ${g} within ${timeoutMs} ms`);
      const body = ev.body as SnapshotMsg | null;
      const step = body?.step;
      // Rank 0 of the group sends them; after an elastic rollback it may send an evaluated step again.
      if (this.holders === 1 && typeof step === "number" && step < g) continue;
      if (step !== g || (this.holders > 1 && ev.peer.rank >= this.holders)) {
        throw new PsError(ErrorCode.BAD_MESSAGE, `expected weights at step ${g} from worker 0..${this.holders - 1}, got worker ${ev.peer.rank}'s at step ${String(step)}`);
      }
      if (this.holders > 1) this.absorb(ev.frames[1], `its snapshot at step ${g}`, ev.peer.rank, body?.start ?? -1, body?.end ?? -1);
      else this.absorb(ev.frames[1], `its snapshot at step ${g}`);
      i++;
    }
    this.step = g;
  }

  async resumeAt(): Promise<void> {
    const go: ResumeMsg = { stop: false, step: this.step };
    await this.coordinator.broadcast("worker", MsgType.RESUME, go);
  }

  async stopShards(): Promise<void> {
    const stop: ResumeMsg = { stop: true, step: this.step };
    await this.coordinator.broadcast("worker", MsgType.RESUME, stop);
  }

  score(): { loss: number; accuracy: number } {
    this.model.setWeights(this.weights);
    return this.model.evaluate(this.dataset.testX, this.dataset.testY, this.dataset.testCount);
  }

  onDone(ev: ControlEvent): void {
    if (this.holders > 1) {
      // A pipeline: the stages of replica 0 each send their keys.
      if (ev.peer.rank >= this.holders) return;
      const keys = (ev.body as DoneMsg | null)?.keys;
      this.absorb(ev.frames[1], "DONE", ev.peer.rank, keys?.start ?? -1, keys?.end ?? -1);
    } else {
      // The final weights come with the DONE of rank 0 of the group (worker 0 unless it was lost).
      if (ev.frames[1] === undefined) return;
      this.absorb(ev.frames[1], "DONE");
    }
    this.finals++;
  }

  shardStats(): Promise<ShardStats[]> {
    return Promise.resolve([]);
  }
}

/**
 * Reads the model from the shards (pausing training so evaluation time is not counted as
 * training time, as the PyTorch reference script does) and scores it on the test set.
 */
class Evaluator implements RunEvaluator, RestartableShards {
  readonly weights: Float32Array;
  private readonly atClients: ShardPeer[];
  /** the step at which the shards hold reads (exact evaluations), re-armed on a restarted shard */
  private holdClock: number | null = null;

  constructor(
    private readonly model: FlatModel,
    private readonly dataset: Dataset,
    private readonly clients: ShardPeer[],
    private readonly map: MapMsg,
    private readonly runId: number,
    timeoutMs: number,
  ) {
    this.weights = new Float32Array(model.size);
    this.atClients = map.servers.map((s) => new ShardPeer(`server shard ${s.shard}`, s.endpoint, timeoutMs));
  }

  shardDown(k: number): void {
    this.clients[k]?.down();
    this.atClients[k]?.down();
  }

  async shardUp(k: number, endpoint: string): Promise<void> {
    const hold = this.holdClock;
    await this.clients[k]?.up(endpoint, async (c: PeerClient) => {
      if (hold !== null) await c.request(makeHeader(MsgType.PAUSE, { runId: this.runId, rank: -1, clock: hold, flags: Flag.AT_CLOCK }));
    });
    await this.atClients[k]?.up(endpoint);
  }

  close(): void {
    for (const c of this.atClients) c.close();
  }

  private all<T>(f: (c: ShardPeer, k: number) => Promise<T>): Promise<T[]> {
    return Promise.all(this.clients.map(f));
  }

  private header(type: MsgType) {
    return makeHeader(type, { runId: this.runId, rank: -1 });
  }

  async snapshot(): Promise<void> {
    this.absorb(await this.all((c) => c.request(this.header(MsgType.SNAPSHOT))));
  }

  private absorb(replies: Reply[]): void {
    replies.forEach((r, k) => {
      const s = this.map.servers[k]!;
      const f = r.frames[0];
      if (!f) throw new PsError(ErrorCode.PEER_LOST, `server shard ${s.shard} sent an empty snapshot`);
      this.weights.set(f32View(f), s.range.start);
    });
  }

  async evaluate(pause: boolean): Promise<{ loss: number; accuracy: number }> {
    if (pause) await this.all((c) => c.request(this.header(MsgType.PAUSE)));
    try {
      await this.snapshot();
      return this.score();
    } finally {
      if (pause) await this.all((c) => c.request(this.header(MsgType.RESUME)));
    }
  }

  /** Hold every read for clock >= g on every shard (none when g is null). */
  async resumeAt(g: number | null): Promise<void> {
    const flags = g === null ? 0 : Flag.AT_CLOCK;
    this.holdClock = g;
    await this.all((c) => c.request(makeHeader(MsgType.RESUME, { runId: this.runId, rank: -1, clock: g ?? 0, flags })));
  }

  async holdAt(g: number): Promise<void> {
    this.holdClock = g;
    await this.all((c) => c.request(makeHeader(MsgType.PAUSE, { runId: this.runId, rank: -1, clock: g, flags: Flag.AT_CLOCK })));
  }

  /**
   * The weights once every worker has taken exactly g steps (the shards hold reads for clock
   * >= g, so nothing moves past it). Uses its own sockets: the wait spans a stretch of training.
   */
  async snapshotAt(g: number, timeoutMs: number): Promise<void> {
    const replies = await Promise.all(
      this.atClients.map((c) => c.request(makeHeader(MsgType.SNAPSHOT, { runId: this.runId, rank: -1, clock: g, flags: Flag.AT_CLOCK }), [], timeoutMs)),
    );
    this.absorb(replies);
  }

  score(): { loss: number; accuracy: number } {
    this.model.setWeights(this.weights);
    return this.model.evaluate(this.dataset.testX, this.dataset.testY, this.dataset.testCount);
  }

  async stopShards(): Promise<void> {
    await this.all((c) => c.request(this.header(MsgType.STOP)));
  }

  onDone(): void {}

  async shardStats(): Promise<ShardStats[]> {
    const replies = await this.all((c) => c.request(this.header(MsgType.STATS)));
    return replies.map((r) => JSON.parse(r.frames[0]?.toString("utf8") ?? "{}") as ShardStats);
  }
}
