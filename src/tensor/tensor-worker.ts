/**
 * A worker of a tensor-parallel run (--parallelism tensor --workers T, sync): every worker takes
 * the same batch, computes its column blocks of every dense layer (column-dense.ts) with the
 * others over an allreduce peer group, and pushes its gradient block to the parameter-server
 * shards. A block is zero outside the worker's columns and is pushed scaled by T: the shards'
 * sync mode applies the mean over the T workers, which is then exactly the sum of the blocks,
 * the whole gradient. (Keys are interleaved by column, so each push covers the whole range.)
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { ControlClient } from "../cluster/control-client.js";
import type { ConfigMsg, DoneMsg, MapMsg } from "../cluster/messages.js";
import { StepReporter } from "../worker/step-reporter.js";
import type { TrainConfig } from "../config/train-config.js";
import { Allreducer } from "../allreduce/allreducer.js";
import { joinPeerGroup } from "../allreduce/rendezvous.js";
import { ShardBatcher } from "../data/batcher.js";
import { loadDataset } from "../data/load.js";
import { partitionIndices } from "../data/partition.js";
import type { FlatModel } from "../model/model-api.js";
import { selectBackend } from "../model/backend.js";
import type { SequentialFlatModel } from "../model/sequential.js";
import { createModel } from "../model/zoo.js";
import { MsgType } from "../transport/header.js";
import { badOption } from "../util/errors.js";
import { deriveSeed } from "../util/rng.js";
import { ParameterClient } from "../worker/ps-client.js";
import { ColumnParallelMlp } from "./column-dense.js";

/** Every dense layer needs at least one output unit per worker. */
export function checkTensorParallel(cfg: TrainConfig, model: FlatModel): void {
  const seq = model as SequentialFlatModel;
  for (const l of seq.layers) {
    if (l.kind === "dense" && l.units < cfg.workers) {
      throw badOption(`--parallelism tensor: layer ${l.name} of model ${cfg.model} has ${l.units} output units, fewer than --workers ${cfg.workers}`);
    }
  }
}

export async function runTensorWorker(control: ControlClient, cfgMsg: ConfigMsg): Promise<void> {
  const cfg = cfgMsg.config;
  const rank = control.rank;
  const T = cfg.workers;
  const slow = cfg.slow[rank] ?? 1;
  await selectBackend(cfg.backend);
  const data = await loadDataset(cfg.dataset, { seed: cfg.seed, trainLimit: cfg.trainLimit, testLimit: 1 });
  const model = createModel(cfg.model, data.inputShape, data.numOutputs, data.task);
  // one data shard (all of it, as data parallelism with one worker), the same batches everywhere
  const all = partitionIndices(data.trainY, data.trainCount, 1, cfg.partition, cfg.seed, data.task)[0]!;
  const batcher = new ShardBatcher(data, all, cfg.batchSize, deriveSeed(cfg.seed, 0x5eed, 0));
  const mapMsg = await control.next([MsgType.MAP], cfg.timeoutMs, "cluster MAP");
  const weights = new Float32Array(model.size);
  const gradient = new Float32Array(model.size);
  const client = new ParameterClient(cfgMsg.runId, rank, (mapMsg.body as MapMsg).servers, weights, cfg.timeoutMs);
  const group = await joinPeerGroup(control, { rank, size: T, runId: cfgMsg.runId, runTag: cfgMsg.runTag, transport: cfg.transport, timeoutMs: cfg.timeoutMs, maxMessageBytes: 4 * cfg.batchSize * Math.max(model.xSize, 1024) + 64 * 1024 });
  const allreducer = new Allreducer(group, {});
  const tp = new ColumnParallelMlp(model, rank, T);
  try {
    await client.pull(0);
    await control.send(MsgType.READY, { shardSize: data.trainCount });
    await control.next([MsgType.START], cfg.timeoutMs, "START");
    const reporter = new StepReporter(control, rank);
    const t0 = reporter.t0;
    let computeMs = 0;
    let commMs = 0;
    let samples = 0;
    let steps = 0;
    let stoppedEarly = false;
    for (let step = 0; step < cfgMsg.stepsPerWorker; step++) {
      const batch = batcher.nextBatch();
      const c0 = performance.now();
      tp.setWeights(weights);
      const res = await tp.gradient(batch.x, batch.y, batch.size, gradient, allreducer);
      for (let i = 0; i < gradient.length; i++) gradient[i]! *= T;
      let c1 = performance.now();
      if (slow > 1) {
        // a straggler: the step takes `slow` times as long (the others wait for it in the collectives)
        await sleep((slow - 1) * (c1 - c0));
        c1 = performance.now();
      }
      const r = await client.pushPull(step, gradient);
      const c2 = performance.now();
      computeMs += c1 - c0;
      commMs += c2 - c1;
      samples += batch.size;
      steps++;
      // the loss is the same on every worker: rank 0 reports it
      if (rank === 0) await reporter.add({ step, t: c2 - t0, loss: res.loss, correct: res.correct, samples: batch.size, staleness: r.staleness, computeMs: c1 - c0, commMs: c2 - c1 }, c2);
      if (r.stopping) {
        stoppedEarly = step + 1 < cfgMsg.stepsPerWorker;
        break;
      }
    }
    await reporter.flush();
    const done: DoneMsg = {
      worker: { rank, steps, samples, bytesSent: client.bytesSent + group.bytesSent, bytesReceived: client.bytesReceived + group.bytesReceived, computeSeconds: computeMs / 1000, commSeconds: commMs / 1000, slowFactor: slow, stoppedEarly },
    };
    await control.send(MsgType.DONE, done);
  } finally {
    tp.dispose();
    client.close();
    model.dispose();
  }
  // the peer group stays open until the process ends, as in an allreduce run (a peer that
  // closes early looks lost to the others)
}
