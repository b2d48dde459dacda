/**
 * A worker that runs one stage of a pipeline (--parallelism model|hybrid). Worker rank w is stage
 * w % K of replica floor(w / K). Each step, GPipe-style: the batch is cut into M micro-batches;
 * stage k runs the forward of every micro-batch as its activation arrives from stage k-1 and
 * sends its output on, then the backward of every micro-batch in reverse order as its gradient
 * arrives from stage k+1, summing its parameter gradients; then it pushes its own key range to
 * its stage's shards and reads the next weights (rank = replica: the shards of a stage count the
 * replicas as their workers). Stage 0 and the last stage draw the same batches (same data shard,
 * same seed), so only activations travel between stages, never the input or the labels.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { ControlClient } from "../cluster/control-client.js";
import type { ConfigMsg, DoneMsg, MapMsg, ProgressMsg, ReadyMsg } from "../cluster/messages.js";
import { StepReporter } from "./step-reporter.js";
import { ShardBatcher } from "../data/batcher.js";
import { loadDataset } from "../data/load.js";
import { partitionIndices } from "../data/partition.js";
import { selectBackend } from "../model/backend.js";
import { tensorFrom } from "../model/transfer.js";
import { createModel } from "../model/zoo.js";
import { isReplanStep, microBounds } from "../pipeline/chain.js";
import { StageLink, type Neighbour } from "../pipeline/link.js";
import { StageModel, type MicroTrace } from "../pipeline/stage-model.js";
import { pipelineUnits, stageBounds, type PipelineUnit } from "../pipeline/units.js";
import type { SequentialFlatModel } from "../model/sequential.js";
import { bindAddress } from "../transport/endpoint.js";
import { MsgType } from "../transport/header.js";
import { ErrorCode, PsError } from "../util/errors.js";
import { deriveSeed } from "../util/rng.js";
import { StageAllreduce } from "../pipeline/stage-allreduce.js";
import { f32View } from "../transport/frames.js";
import { ParameterClient } from "./ps-client.js";

/** "worker 4 (replica 1, stage 1)" */
export function stageName(rank: number, stages: number): string {
  return `worker ${rank} (replica ${Math.floor(rank / stages)}, stage ${rank % stages})`;
}

export async function runPipelineStage(control: ControlClient, cfgMsg: ConfigMsg, initFrame?: Buffer): Promise<void> {
  const cfg = cfgMsg.config;
  const rank = control.rank;
  const K = cfg.stages;
  const replica = Math.floor(rank / K);
  const stage = rank % K;
  const self = stageName(rank, K);
  await selectBackend(cfg.backend);
  const data = await loadDataset(cfg.dataset, { seed: cfg.seed, trainLimit: cfg.trainLimit, testLimit: 1 });
  const model = createModel(cfg.model, data.inputShape, data.numOutputs, data.task);
  if (model.size !== cfgMsg.paramCount) throw new Error(`${self}: model has ${model.size} parameters, the run has ${cfgMsg.paramCount}`);
  const units = pipelineUnits(model);
  const [u0, u1] = stageBounds(cfg.splitAt, units.length)[stage] ?? [];
  if (u0 === undefined || u1 === undefined) throw new PsError(ErrorCode.BAD_MESSAGE, `${self}: split points ${cfg.splitAt.join(",")} give no stage ${stage}`);
  // Stage 0 needs the inputs, the last stage the labels: both draw the replica's batches.
  const parts = partitionIndices(data.trainY, data.trainCount, cfg.replicas, cfg.partition, cfg.seed, data.task);
  const mine = parts[replica];
  if (!mine) throw new Error(`${self}: no data shard`);
  const batcher = new ShardBatcher(data, mine, cfg.batchSize, deriveSeed(cfg.seed, 0x5eed, replica));

  const weights = new Float32Array(model.size);
  const gradient = new Float32Array(model.size);
  let st: StageState;
  let ar: StageAllreduce | null = null;
  if (cfg.comm === "allreduce") {
    // No shards: the replicas of this stage allreduce (the group first, as the coordinator expects).
    if (!initFrame || initFrame.byteLength !== weights.byteLength) throw new PsError(ErrorCode.BAD_MESSAGE, `${self}: CONFIG carries ${initFrame?.byteLength ?? 0} bytes of initial weights, the model needs ${weights.byteLength}`);
    weights.set(f32View(initFrame));
    st = new StageState(model, units, stage, replica, self, cfgMsg.runId, cfg.timeoutMs, null, weights);
    st.use(u0, u1);
    ar = await StageAllreduce.join(control, cfgMsg, stage, replica, st.sm!.keys, weights);
  } else {
    // The shards of this stage's key range (the coordinator aligns shards with stages, or with
    // units under --adaptive, so that any split maps onto whole shards).
    const mapMsg = await control.next([MsgType.MAP], cfg.timeoutMs, "cluster MAP");
    st = new StageState(model, units, stage, replica, self, cfgMsg.runId, cfg.timeoutMs, (mapMsg.body as MapMsg).servers, weights);
    st.use(u0, u1);
  }

  // Neighbours: bind, tell the coordinator, get every worker's endpoint, connect. A link carries
  // any unit boundary's activations (the split may move under --adaptive).
  const widest = Math.max(model.xSize, ...units.map((u) => u.outSize));
  const link = new StageLink(cfgMsg.runId, rank, self, cfg.timeoutMs, widest * cfg.batchSize * 4 + 64 * 1024);
  try {
    const endpoint = await link.bind(bindAddress(cfg.transport, cfgMsg.runTag, `stage-${rank}`));
    const ready: ReadyMsg = { endpoint };
    await control.send(MsgType.READY, ready);
    const peersMsg = await control.next([MsgType.MAP], cfg.timeoutMs, "pipeline MAP");
    const peers = (peersMsg.body as MapMsg).peers;
    if (!Array.isArray(peers) || peers.length !== cfg.workers) throw new PsError(ErrorCode.BAD_MESSAGE, `${self}: the coordinator's MAP has no endpoint list for ${cfg.workers} workers`);
    const neighbour = (r: number): Neighbour => ({ rank: r, endpoint: peers[r]!, name: stageName(r, K) });
    link.connect(stage > 0 ? neighbour(rank - 1) : null, stage < K - 1 ? neighbour(rank + 1) : null);

    await st.pull(0);
    await control.send(MsgType.READY, { shardSize: mine.length });
    await control.next([MsgType.START], cfg.timeoutMs, "START");
    await trainStage(control, cfgMsg, { st, ar, link, batcher, weights, gradient, rank, replica, stage, xSize: batcher.xSize, ySize: batcher.ySize });
  } finally {
    link.close();
    st.close();
    model.dispose();
  }
}

/**
 * The part of a stage that a re-plan changes: its units, its slice of the model and the shards it
 * talks to. `use` switches at a step boundary; the new units' weights are then read at that step.
 */
class StageState {
  sm: StageModel | null = null;
  client: ParameterClient | null = null;
  u0 = 0;
  u1 = 0;
  scratch = new Float32Array(0);
  private closedSent = 0;
  private closedReceived = 0;

  constructor(
    private readonly model: SequentialFlatModel,
    private readonly units: readonly PipelineUnit[],
    private readonly stage: number,
    private readonly replica: number,
    private readonly self: string,
    private readonly runId: number,
    private readonly timeoutMs: number,
    /** null: --comm allreduce (the weights are this process's own) */
    private readonly servers: MapMsg["servers"] | null,
    private readonly weights: Float32Array,
  ) {}

  use(u0: number, u1: number): void {
    this.close();
    const sm = new StageModel(this.model, this.units, u0, u1);
    this.sm = sm;
    this.scratch = new Float32Array(sm.paramCount);
    this.u0 = u0;
    this.u1 = u1;
    if (this.servers === null) return;
    const shards = this.servers.filter((s) => s.range.start >= sm.keys.start && s.range.end <= sm.keys.end && s.range.end > s.range.start);
    const covered = shards.reduce((a, s) => a + s.range.end - s.range.start, 0);
    if (covered !== sm.paramCount) throw new PsError(ErrorCode.BAD_MESSAGE, `${this.self}: the shards cover ${covered} of its ${sm.paramCount} keys [${sm.keys.start}, ${sm.keys.end})`);
    this.client = new ParameterClient(this.runId, this.replica, shards, this.weights, this.timeoutMs);
  }

  /** Switch to the stage's units under `splitAt` (from step `clock`); false if they are the same. */
  async replan(splitAt: readonly number[], clock: number): Promise<boolean> {
    const [a, b] = stageBounds(splitAt, this.units.length)[this.stage] ?? [];
    if (a === undefined || b === undefined) throw new PsError(ErrorCode.BAD_MESSAGE, `${this.self}: the re-plan ${splitAt.join(",")} has no stage ${this.stage}`);
    if (a === this.u0 && b === this.u1) return false;
    this.use(a, b);
    await this.pull(clock);
    return true;
  }

  async pull(clock: number): Promise<void> {
    if (this.client) await this.client.pull(clock);
    this.sm!.setWeights(this.weights);
  }

  get bytesSent(): number {
    return this.closedSent + (this.client?.bytesSent ?? 0);
  }

  get bytesReceived(): number {
    return this.closedReceived + (this.client?.bytesReceived ?? 0);
  }

  close(): void {
    if (this.client) {
      this.closedSent += this.client.bytesSent;
      this.closedReceived += this.client.bytesReceived;
      this.client.close();
    }
    this.sm?.dispose();
    this.client = null;
    this.sm = null;
  }
}

interface StageParts {
  st: StageState;
  /** --comm allreduce: the stage's replica group and optimizer */
  ar: StageAllreduce | null;
  link: StageLink;
  batcher: ShardBatcher;
  weights: Float32Array;
  gradient: Float32Array;
  rank: number;
  replica: number;
  stage: number;
  xSize: number;
  ySize: number;
}

async function trainStage(control: ControlClient, cfgMsg: ConfigMsg, p: StageParts): Promise<void> {
  const cfg = cfgMsg.config;
  const { st, link, batcher, gradient } = p;
  // --slow RANK:F: this stage takes F times as long for every forward and backward (a straggler,
  // without using the CPU while it waits), which unbalances the pipeline on purpose
  const slow = cfg.slow[p.rank] ?? 1;
  const straggle = async (ms: number): Promise<number> => {
    if (slow <= 1) return ms;
    await sleep((slow - 1) * ms);
    return slow * ms;
  };
  const reporter = new StepReporter(control, p.rank);
  const t0 = reporter.t0;
  let busyMs = 0;
  let pipeMs = 0;
  let computeMs = 0;
  let commMs = 0;
  let samples = 0;
  let steps = 0;
  let stoppedEarly = false;
  let lastStopping = false;

  for (let step = 0; step < cfgMsg.stepsPerWorker; step++) {
    // A run that stops stops here on every stage (sync: the shards' STOPPING reaches all stages
    // at the same step); the first stage's stop marker follows.
    if (cfg.adaptive > 0 && !lastStopping && isReplanStep(step, cfg.adaptiveEvery, cfgMsg.stepsPerWorker)) {
      // Every worker says it has pushed step - 1; the coordinator answers when all have.
      await reporter.flush();
      const at: ProgressMsg = { rank: p.rank, steps: [], replanAt: step };
      await control.send(MsgType.PROGRESS, at);
      const m = await control.next([MsgType.MAP], cfg.timeoutMs * 4, `the split for step ${step}`);
      const replan = (m.body as MapMsg).replan;
      if (!replan || replan.step !== step || !Array.isArray(replan.splitAt)) throw new PsError(ErrorCode.BAD_MESSAGE, `${stageName(p.rank, cfg.stages)}: expected the split for step ${step}, got ${JSON.stringify(replan)}`);
      await st.replan(replan.splitAt, step);
    }
    const sm = st.sm!;
    // Every stage draws the batch so that all stay in step; stage 0 uses x, the last stage y.
    const batch = batcher.nextBatch();
    const n = batch.size;
    const bounds = microBounds(n, cfg.microbatches);
    const c0 = performance.now();
    let busy = 0;
    let loss = 0;
    let correct = 0;
    gradient.fill(0, sm.keys.start, sm.keys.end);
    sm.beginStep();
    let stopMarker = false;
    try {
      const traces: MicroTrace[] = [];
      const dz: Float32Array[] = [];
      for (let m = 0; m < bounds.length; m++) {
        const [a, b] = bounds[m]!;
        let x: Float32Array;
        if (sm.isFirst) x = batch.x.subarray(a * p.xSize, b * p.xSize);
        else {
          const got = await link.receive(MsgType.ACTIVATION, step, m, a, b, sm.inSize);
          if (got === null) {
            stopMarker = true;
            break;
          }
          x = got;
        }
        const f0 = performance.now();
        const r = sm.forward(x, b - a);
        traces.push(r.trace);
        if (sm.isLast) {
          const l = sm.loss(r.y, batch.y.subarray(a * p.ySize, b * p.ySize), b - a, n);
          loss += (l.loss * (b - a)) / n;
          correct += l.correct;
          dz.push(sm.read(l.dz));
          busy += await straggle(performance.now() - f0);
        } else {
          const out = sm.read(r.y);
          busy += await straggle(performance.now() - f0);
          await link.send(MsgType.ACTIVATION, step, m, a, b, out);
        }
      }
      if (stopMarker) {
        if (!sm.isLast) await link.sendStop(step);
        stoppedEarly = true;
        break;
      }
      for (let m = bounds.length - 1; m >= 0; m--) {
        const [a, b] = bounds[m]!;
        const dy = sm.isLast ? dz[m]! : await link.receive(MsgType.ACTIVATION_GRAD, step, m, a, b, sm.outSize);
        if (dy === null) throw new PsError(ErrorCode.BAD_MESSAGE, `${stageName(p.rank, cfg.stages)}: a stop marker in the backward pass of step ${step}`);
        const b0 = performance.now();
        const dx = sm.backward(traces[m]!, tensorFrom(dy, [b - a, ...sm.outShape]), gradient, st.scratch);
        busy += await straggle(performance.now() - b0);
        if (dx !== null) await link.send(MsgType.ACTIVATION_GRAD, step, m, a, b, dx);
      }
    } finally {
      sm.endStep();
    }
    const c1 = performance.now();
    const r = p.ar ? { stopping: await p.ar.step(step, gradient, p.replica, p.stage), staleness: 0 } : await st.client!.pushPull(step, gradient);
    lastStopping = r.stopping;
    sm.setWeights(p.weights);
    const c2 = performance.now();
    busyMs += busy;
    pipeMs += c1 - c0;
    computeMs += c1 - c0;
    commMs += c2 - c1;
    samples += n;
    steps++;
    if (sm.isLast) await reporter.add({ step, t: c2 - t0, loss, correct, samples: n, staleness: r.staleness, computeMs: c1 - c0, commMs: c2 - c1 }, c2);
    // allreduce: every worker got the same RESUME {stop} at this step
    if (r.stopping && p.ar) {
      stoppedEarly = step + 1 < cfgMsg.stepsPerWorker;
      break;
    }
    // Only the first stage decides to stop (the shards' STOPPING flag may reach the stages of a
    // pipeline at different steps); the others follow its stop marker.
    if (r.stopping && sm.isFirst && step + 1 < cfgMsg.stepsPerWorker) {
      if (!sm.isLast) await link.sendStop(step + 1);
      stoppedEarly = true;
      break;
    }
  }
  await reporter.flush();
  const done: DoneMsg = {
    worker: {
      rank: p.rank,
      steps,
      samples,
      bytesSent: st.bytesSent + link.bytesSent + (p.ar?.bytesSent ?? 0),
      bytesReceived: st.bytesReceived + link.bytesReceived + (p.ar?.bytesReceived ?? 0),
      computeSeconds: computeMs / 1000,
      commSeconds: commMs / 1000,
      slowFactor: slow,
      stoppedEarly,
      pipeline: { replica: p.replica, stage: p.stage, unitStart: st.u0, unitEnd: st.u1, busySeconds: busyMs / 1000, pipeSeconds: pipeMs / 1000 },
    },
  };
  if (p.ar) done.keys = { start: st.sm!.keys.start, end: st.sm!.keys.end };
  await control.send(MsgType.DONE, done, p.ar ? p.ar.finalFrames(p.replica) : []);
}
