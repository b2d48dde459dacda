import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { ControlClient } from "../cluster/control-client.js";
import type { ConfigMsg, DoneMsg, MapMsg, MembersMsg, RestartAck } from "../cluster/messages.js";
import { StepReporter } from "./step-reporter.js";
import { ShardBatcher } from "../data/batcher.js";
import { loadDataset } from "../data/load.js";
import { partitionIndices } from "../data/partition.js";
import { selectBackend } from "../model/backend.js";
import { createModel } from "../model/zoo.js";
import { f32Frame } from "../transport/frames.js";
import { MsgType } from "../transport/header.js";
import { deriveSeed } from "../util/rng.js";
import { AllreduceExchange } from "./allreduce-exchange.js";
import type { GradientExchange, StepResult } from "./exchange.js";
import { runTensorWorker } from "../tensor/tensor-worker.js";
import { runPipelineStage } from "./pipeline-stage.js";
import { ParameterClient } from "./ps-client.js";
import { allocF32 } from "../util/simd.js";
import { ShmFiles, shmDir } from "../transport/shm.js";

/**
 * The worker process: its data shard, the model, and the step loop
 * (weights -> gradient on a batch -> exchange: push to the shards and read the next weights,
 * or allreduce with the other workers and apply the optimizer here).
 */
export async function runWorker(control: ControlClient, cfgMsg: ConfigMsg, initFrame?: Buffer): Promise<void> {
  const cfg = cfgMsg.config;
  if (cfg.parallelism === "model" || cfg.parallelism === "hybrid") return runPipelineStage(control, cfgMsg, initFrame);
  if (cfg.parallelism === "tensor") return runTensorWorker(control, cfgMsg);
  const rank = control.rank;
  await selectBackend(cfg.backend);
  const data = await loadDataset(cfg.dataset, { seed: cfg.seed, trainLimit: cfg.trainLimit, testLimit: 1 });
  const parts = partitionIndices(data.trainY, data.trainCount, cfg.workers, cfg.partition, cfg.seed, data.task);
  const mine = parts[rank];
  if (!mine) throw new Error(`worker ${rank}: no data shard`);
  let batcher = new ShardBatcher(data, mine, cfg.batchSize, deriveSeed(cfg.seed, 0x5eed, rank));
  // --on-worker-failure shrink: from its next epoch on, a survivor takes its part of the whole
  // training set split among the workers still in the run (the latest MEMBERS message).
  const repartition = () => {
    let latest: MembersMsg | null = null;
    for (let m = control.poll(MsgType.MEMBERS); m; m = control.poll(MsgType.MEMBERS)) latest = m.body as MembersMsg;
    const index = latest?.live.indexOf(rank) ?? -1;
    if (!latest || index < 0) return;
    const part = partitionIndices(data.trainY, data.trainCount, latest.live.length, cfg.partition, cfg.seed, data.task)[index];
    if (part) batcher = new ShardBatcher(data, part, cfg.batchSize, deriveSeed(cfg.seed, 0x5eed, rank), batcher.epoch + 1);
  };
  // --resume: the batches of the steps before the checkpoint are skipped, in the same order.
  const startStep = cfgMsg.startStep ?? 0;
  batcher.seek(startStep);
  const model = createModel(cfg.model, data.inputShape, data.numOutputs, data.task);
  if (model.size !== cfgMsg.paramCount) throw new Error(`worker ${rank}: model has ${model.size} parameters, the run has ${cfgMsg.paramCount}`);

  // In the SIMD kernels' memory (util/simd.ts): allreduce sums and the optimizer run there.
  const weights = allocF32(model.size);
  const gradient = allocF32(model.size);
  let exchange: GradientExchange;
  // A replacement (--on-worker-failure wait) starts at the clock the shards let it join at.
  let firstStep = startStep;
  if (cfg.comm === "allreduce") {
    exchange = await AllreduceExchange.join(control, cfgMsg, initFrame, weights, gradient, model.params);
  } else {
    const mapMsg = await control.next([MsgType.MAP], cfg.timeoutMs, "cluster MAP");
    const map = mapMsg.body as MapMsg;
    const shm = cfg.transport === "shm" ? new ShmFiles(shmDir(cfgMsg.runTag)) : null;
    const client = new ParameterClient(cfgMsg.runId, rank, map.servers, weights, cfg.timeoutMs, shm);
    if (cfgMsg.replacement === true) {
      firstStep = await client.join();
      if (batcher.stepsPerEpoch > 0) batcher.startEpoch(Math.floor(firstStep / batcher.stepsPerEpoch));
    }
    // A replacement that joins after the last step has nothing left to do (and nothing to read).
    if (firstStep < cfgMsg.stepsPerWorker) await client.pull(firstStep);
    followShardRestarts(control, client);
    exchange = client;
  }
  await control.send(MsgType.READY, { shardSize: mine.length });
  await control.next([MsgType.START], cfg.timeoutMs, "START");

  const slow = cfg.slow[rank] ?? 1;
  const reporter = new StepReporter(control, rank);
  const t0 = reporter.t0;
  let computeMs = 0;
  let commMs = 0;
  let samples = 0;
  let steps = 0;
  let stoppedEarly = false;
  // One finished step: its figures, the data of the next epoch, the progress report, and
  // whether the run stopped before this worker's last step.
  const record = async (step: number, res: { loss: number; correct: number }, size: number, lastOfEpoch: boolean, r: StepResult, stepComputeMs: number, stepCommMs: number, at: number) => {
    computeMs += stepComputeMs;
    commMs += stepCommMs;
    samples += size;
    steps++;
    if (lastOfEpoch) repartition();
    await reporter.add({ step, t: at - t0, loss: res.loss, correct: res.correct, samples: size, staleness: r.staleness, computeMs: stepComputeMs, commMs: stepCommMs }, at);
    if (r.stopping) stoppedEarly = step + 1 < cfgMsg.stepsPerWorker;
  };
  // --async-overlap on: step k's gradient is computed while step k-1's push-pull is in flight
  // (its messages are out before the compute starts; libzmq's I/O thread and the shards work
  // meanwhile), so it is computed on the weights of step k-2. Two gradient buffers: one being
  // sent, one being written.
  const overlapClient = cfg.asyncOverlap === "on" && cfg.mode === "async" && exchange instanceof ParameterClient ? exchange : null;
  const grads = overlapClient ? [gradient, allocF32(model.size)] : [gradient];
  let pending: { step: number; res: { loss: number; correct: number }; size: number; lastOfEpoch: boolean; computeMs: number; result: Promise<StepResult> } | null = null;
  /** wait for the step in flight and record it; true when the run is stopping */
  const settlePending = async (): Promise<boolean> => {
    if (!pending) return false;
    const p = pending;
    pending = null;
    const w0 = performance.now();
    const r = await p.result;
    const w1 = performance.now();
    await record(p.step, p.res, p.size, p.lastOfEpoch, r, p.computeMs, w1 - w0, w1);
    return r.stopping;
  };
  for (let step = firstStep; step < cfgMsg.stepsPerWorker; step++) {
    const batch = batcher.nextBatch();
    const lastOfEpoch = batch.stepInEpoch === batcher.stepsPerEpoch - 1;
    const g = grads[step % grads.length]!;
    const c0 = performance.now();
    // overlap: the versions of the weights this gradient is computed on, for its push
    const computedOn = overlapClient ? [...overlapClient.versions] : null;
    model.setWeights(weights);
    const res = model.gradient(batch.x, batch.y, batch.size, g);
    let c1 = performance.now();
    if (slow > 1) {
      // A straggler: the step takes `slow` times as long, without using the CPU while it waits.
      await sleep((slow - 1) * (c1 - c0));
      c1 = performance.now();
    }
    if (overlapClient) {
      // The run stopped while this gradient was computed: it is not pushed.
      if (await settlePending()) break;
      const result = overlapClient.pushPull(step, g, computedOn!);
      result.catch(() => undefined); // awaited by settlePending; no unhandled rejection meanwhile
      pending = { step, res, size: batch.size, lastOfEpoch, computeMs: c1 - c0, result };
      continue;
    }
    const r = await exchange.step(step, g);
    if (r.redoFrom !== undefined) {
      // Elastic allreduce: this step's collective failed and the survivors rolled back.
      // Steps after the rollback point are done again: count them once.
      const undone = step - r.redoFrom;
      steps -= undone;
      samples -= undone * batcher.batchSize;
      if (r.stopping) break;
      step = r.redoFrom - 1;
      continue;
    }
    const c2 = performance.now();
    await record(step, res, batch.size, lastOfEpoch, r, c1 - c0, c2 - c1, c2);
    if (r.stopping) break;
  }
  await settlePending();
  await reporter.flush();
  const done: DoneMsg = {
    worker: {
      rank,
      steps,
      samples,
      bytesSent: exchange.bytesSent,
      bytesReceived: exchange.bytesReceived,
      computeSeconds: computeMs / 1000,
      commSeconds: commMs / 1000,
      slowFactor: slow,
      stoppedEarly,
      shardSize: batcher.shardSize,
      ...(cfgMsg.replacement === true ? { joinedAt: firstStep } : {}),
      ...(model.kernels === "simd-dense" ? { denseBatches: model.denseBatches } : {}),
      ...(cfg.comm === "allreduce" ? { weightsSha256: createHash("sha256").update(f32Frame(weights)).digest("hex") } : {}),
    },
  };
  await control.send(MsgType.DONE, done, exchange.finalFrames());
  // An allreduce peer group stays open until the process ends (after the coordinator's STOP,
  // when every worker has finished every collective): a peer that closes early looks lost.
  if (cfg.comm !== "allreduce") exchange.close();
  model.dispose();
}

/**
 * A server shard's restart (docs/reliability.md): on "down" the worker drops the dead shard's
 * socket and tells the coordinator how many of its gradients that shard had acknowledged; on
 * "up" it sends the restarted shard whatever was in flight.
 */
function followShardRestarts(control: ControlClient, client: ParameterClient): void {
  control.onMap = (m) => {
    const r = (m.body as MapMsg | null)?.restart;
    if (!r) return false;
    if (r.phase === "down") {
      client.shardDown(r.shard);
      const ack: RestartAck = { shard: r.shard, clock: client.acked[r.shard] ?? 0 };
      control.send(MsgType.ACK, ack).catch(() => undefined);
    } else if (r.endpoint !== undefined) {
      void client.shardUp(r.shard, r.endpoint);
    }
    return true;
  };
}
