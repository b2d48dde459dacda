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
import type { ControlClient } from "../cluster/control-client.js";
import type { ConfigMsg, DoneMsg, MapMsg, ProgressMsg, ReadyMsg, StepRecord } from "../cluster/messages.js";
import { ShardBatcher } from "../data/batcher.js";
import { loadDataset } from "../data/load.js";
import { partitionIndices } from "../data/partition.js";
import { selectBackend } from "../model/backend.js";
import { tensorFrom } from "../model/transfer.js";
import { createModel } from "../model/zoo.js";
import { microBounds } from "../pipeline/chain.js";
import { StageLink, type Neighbour } from "../pipeline/link.js";
import { StageModel, type MicroTrace } from "../pipeline/stage-model.js";
import { pipelineUnits, stageBounds } from "../pipeline/units.js";
import { bindAddress } from "../transport/endpoint.js";
import { MsgType } from "../transport/header.js";
import { ErrorCode, PsError } from "../util/errors.js";
import { deriveSeed } from "../util/rng.js";
import { ParameterClient } from "./ps-client.js";

const PROGRESS_EVERY_MS = 100;

/** "worker 4 (replica 1, stage 1)" */
export function stageName(rank: number, stages: number): string {
  return `worker ${rank} (replica ${Math.floor(rank / stages)}, stage ${rank % stages})`;
}

export async function runPipelineStage(control: ControlClient, cfgMsg: ConfigMsg): Promise<void> {
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
  const sm = new StageModel(model, units, u0, u1);
  // Stage 0 needs the inputs, the last stage the labels: both draw the replica's batches.
  const parts = partitionIndices(data.trainY, data.trainCount, cfg.replicas, cfg.partition, cfg.seed, data.task);
  const mine = parts[replica];
  if (!mine) throw new Error(`${self}: no data shard`);
  const batcher = new ShardBatcher(data, mine, cfg.batchSize, deriveSeed(cfg.seed, 0x5eed, replica));

  // The shards of this stage's key range (the coordinator aligns shards with stages).
  const mapMsg = await control.next([MsgType.MAP], cfg.timeoutMs, "cluster MAP");
  const shards = (mapMsg.body as MapMsg).servers.filter((s) => s.range.start >= sm.keys.start && s.range.end <= sm.keys.end && s.range.end > s.range.start);
  const covered = shards.reduce((a, s) => a + s.range.end - s.range.start, 0);
  if (covered !== sm.paramCount) throw new PsError(ErrorCode.BAD_MESSAGE, `${self}: the shards cover ${covered} of its ${sm.paramCount} keys [${sm.keys.start}, ${sm.keys.end})`);
  const weights = new Float32Array(model.size);
  const gradient = new Float32Array(model.size);
  const client = new ParameterClient(cfgMsg.runId, replica, shards, weights, cfg.timeoutMs);

  // Neighbours: bind, tell the coordinator, get every worker's endpoint, connect.
  const largest = Math.max(sm.inSize, sm.outSize) * cfg.batchSize * 4 + 64 * 1024;
  const link = new StageLink(cfgMsg.runId, rank, self, cfg.timeoutMs, largest);
  const closeAll = () => {
    link.close();
    client.close();
    sm.dispose();
    model.dispose();
  };
  try {
    const endpoint = await link.bind(bindAddress(cfg.transport, cfgMsg.runTag, `stage-${rank}`));
    const ready: ReadyMsg = { endpoint };
    await control.send(MsgType.READY, ready);
    const peersMsg = await control.next([MsgType.MAP], cfg.timeoutMs, "pipeline MAP");
    const peers = (peersMsg.body as MapMsg).peers;
    if (!Array.isArray(peers) || peers.length !== cfg.workers) throw new PsError(ErrorCode.BAD_MESSAGE, `${self}: the coordinator's MAP has no endpoint list for ${cfg.workers} workers`);
    const neighbour = (r: number): Neighbour => ({ rank: r, endpoint: peers[r]!, name: stageName(r, K) });
    link.connect(stage > 0 ? neighbour(rank - 1) : null, stage < K - 1 ? neighbour(rank + 1) : null);

    await client.pull(0);
    sm.setWeights(weights);
    await control.send(MsgType.READY, { shardSize: mine.length });
    await control.next([MsgType.START], cfg.timeoutMs, "START");
    await trainStage(control, cfgMsg, { sm, link, client, batcher, weights, gradient, rank, replica, stage, u0, u1, ySize: batcher.ySize, xSize: batcher.xSize });
  } finally {
    closeAll();
  }
}

interface StageParts {
  sm: StageModel;
  link: StageLink;
  client: ParameterClient;
  batcher: ShardBatcher;
  weights: Float32Array;
  gradient: Float32Array;
  rank: number;
  replica: number;
  stage: number;
  u0: number;
  u1: number;
  xSize: number;
  ySize: number;
}

async function trainStage(control: ControlClient, cfgMsg: ConfigMsg, p: StageParts): Promise<void> {
  const cfg = cfgMsg.config;
  const { sm, link, client, batcher, weights, gradient } = p;
  const scratch = new Float32Array(sm.paramCount);
  const t0 = performance.now();
  let pending: StepRecord[] = [];
  let lastReport = t0;
  let busyMs = 0;
  let pipeMs = 0;
  let computeMs = 0;
  let commMs = 0;
  let samples = 0;
  let steps = 0;
  let stoppedEarly = false;
  const flush = async () => {
    if (pending.length === 0) return;
    const msg: ProgressMsg = { rank: p.rank, steps: pending };
    pending = [];
    await control.send(MsgType.PROGRESS, msg);
  };

  for (let step = 0; step < cfgMsg.stepsPerWorker; step++) {
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
          busy += performance.now() - f0;
        } else {
          const out = sm.read(r.y);
          busy += performance.now() - f0;
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
        const dx = sm.backward(traces[m]!, tensorFrom(dy, [b - a, ...sm.outShape]), gradient, scratch);
        busy += performance.now() - b0;
        if (dx !== null) await link.send(MsgType.ACTIVATION_GRAD, step, m, a, b, dx);
      }
    } finally {
      sm.endStep();
    }
    const c1 = performance.now();
    const r = await client.pushPull(step, gradient);
    sm.setWeights(weights);
    const c2 = performance.now();
    busyMs += busy;
    pipeMs += c1 - c0;
    computeMs += c1 - c0;
    commMs += c2 - c1;
    samples += n;
    steps++;
    if (sm.isLast) {
      pending.push({ step, t: c2 - t0, loss, correct, samples: n, staleness: r.staleness, computeMs: c1 - c0, commMs: c2 - c1 });
      if (c2 - lastReport >= PROGRESS_EVERY_MS) {
        lastReport = c2;
        await flush();
      }
    }
    // Only the first stage decides to stop (the shards' STOPPING flag may reach the stages of a
    // pipeline at different steps); the others follow its stop marker.
    if (r.stopping && sm.isFirst && step + 1 < cfgMsg.stepsPerWorker) {
      if (!sm.isLast) await link.sendStop(step + 1);
      stoppedEarly = true;
      break;
    }
  }
  await flush();
  const done: DoneMsg = {
    worker: {
      rank: p.rank,
      steps,
      samples,
      bytesSent: client.bytesSent + link.bytesSent,
      bytesReceived: client.bytesReceived + link.bytesReceived,
      computeSeconds: computeMs / 1000,
      commSeconds: commMs / 1000,
      slowFactor: 1,
      stoppedEarly,
      pipeline: { replica: p.replica, stage: p.stage, unitStart: p.u0, unitEnd: p.u1, busySeconds: busyMs / 1000, pipeSeconds: pipeMs / 1000 },
    },
  };
  await control.send(MsgType.DONE, done);
}
