import type { Router } from "zeromq";
import type { ControlClient } from "../cluster/control-client.js";
import { heartbeatTimeoutOf, shardWorkers } from "../config/train-config.js";
import type { ConfigMsg, ReadyMsg } from "../cluster/messages.js";
import { createMode } from "../modes/index.js";
import { bindAddress } from "../transport/endpoint.js";
import { messages } from "../transport/receive.js";
import { bindSocket, newBoundRouter } from "../transport/sockets.js";
import { f32View } from "../transport/frames.js";
import { processCollector } from "../transport/young-gc.js";
import { ShmFiles, shmDir } from "../transport/shm.js";
import { encodeHeader, MsgType } from "../transport/header.js";
import { checkpointDir, latestCheckpoint, writeCheckpoint } from "./checkpoint.js";
import type { KeyRange } from "./key-range.js";
import { ServerShard } from "./server-shard.js";

/**
 * The server-shard process: binds a ROUTER (workers and the coordinator connect DEALERs),
 * reports the endpoint it actually bound, then serves until the coordinator says STOP.
 * Checkpoints go to `checkpointRoot`/checkpoints/shard-k: the run directory in a local run, the
 * agent's folder for the attempt in cluster mode.
 */
export async function runServer(control: ControlClient, cfgMsg: ConfigMsg, initFrame: Buffer | undefined, checkpointRoot: string): Promise<void> {
  const shardIndex = control.rank;
  const range = cfgMsg.ranges[shardIndex];
  if (!range) throw new Error(`server ${shardIndex}: no key range in the config`);
  if (!initFrame) throw new Error(`server ${shardIndex}: CONFIG carried no initial weights`);
  const cfg = cfgMsg.config;
  const shard = new ServerShard({
    shard: shardIndex,
    runId: cfgMsg.runId,
    range,
    // in a pipeline, a shard serves one stage: its workers are that stage's replicas
    workers: shardWorkers(cfg),
    mode: createMode(cfg.mode, cfg.staleness),
    optimizer: { ...cfg, totalSteps: cfgMsg.stepsPerWorker },
    init: f32View(initFrame),
    gradClip: cfg.gradClip,
    checkpointEvery: cfg.checkpointEvery,
    ...(cfg.transport === "shm" ? { shm: new ShmFiles(shmDir(cfgMsg.runTag)) } : {}),
  });
  const ckptDir = checkpointDir(checkpointRoot, shardIndex);
  const restore = cfgMsg.restore;
  let skipped: string[] = [];
  if (restore) skipped = restoreShard(shard, ckptDir, shardIndex, range, cfg.optimizer, restore.step, restore.workerClocks ?? null, restore.left ?? []);
  const checkpoint = () => {
    const st = shard.state();
    writeCheckpoint(
      ckptDir,
      {
        runTag: cfgMsg.runTag,
        shard: shardIndex,
        range,
        step: st.step,
        version: st.version,
        appliedGradients: st.appliedGradients,
        clocks: st.clocks,
        optimizer: { name: cfg.optimizer, scalars: st.optimizerScalars, lrStep: st.lrStep },
      },
      st.tensors,
      cfg.checkpointKeep,
    );
    shard.checkpoints++;
  };

  // Bounded queues, and no frame larger than this shard's range plus slack for JSON bodies: a
  // peer that sends more is disconnected by libzmq before the frame is allocated.
  const router = newBoundRouter(`server shard ${shardIndex}`, { linger: 0, receiveHighWaterMark: 1000, sendHighWaterMark: 1000, mandatory: false, maxMessageSize: maxShardFrameBytes(range) });
  // A restarted shard binds its predecessor's endpoint, so that every DEALER reconnects by itself.
  await bindSocket(router, restore?.endpoint ?? bindAddress(cfg.transport, cfgMsg.runTag, `server-${shardIndex}`));
  const endpoint = router.lastEndpoint;
  if (!endpoint) throw new Error(`server ${shardIndex}: bound socket reports no endpoint`);

  // Stall reports: a read held past the heartbeat timeout is reported to the coordinator once per
  // clock it waits at, naming the ranks it waits for (docs/reliability.md, "Worker failures").
  const stallAfterMs = heartbeatTimeoutOf(cfg);
  let reported = "";
  const stallTimer = setInterval(() => {
    const r = shard.stallReport(Date.now(), stallAfterMs);
    if (!r) return;
    const key = `${r.clock}:${r.waitingOn.map((w) => w.rank).join(",")}`;
    if (key === reported) return;
    reported = key;
    control.send(MsgType.STALL, r).catch(() => undefined);
  }, Math.max(10, Math.min(cfg.heartbeatMs, stallAfterMs / 2)));
  stallTimer.unref();

  let stopping = false;
  control.onStop = () => {
    stopping = true;
    router.close();
  };
  const ready: ReadyMsg = { endpoint, restoredFrom: shard.restoredFrom, lostUpdates: shard.lostUpdates, skipped };
  await control.send(MsgType.READY, ready);

  try {
    await serveShard(router, shard, cfg.checkpointEvery > 0 ? checkpoint : undefined);
  } catch (err) {
    if (!stopping) throw err;
  } finally {
    clearInterval(stallTimer);
  }
}

/** The largest frame a shard accepts: its whole range as float32, plus 64 KiB for control bodies. */
export function maxShardFrameBytes(range: KeyRange): number {
  return (range.end - range.start) * 4 + 64 * 1024;
}

/**
 * Load the newest valid checkpoint (at exactly `step` for --resume) into `shard`; without one, a
 * restarted shard starts again from the initial weights (every gradient so far is lost).
 * Returns the checkpoints skipped as corrupt, with why.
 */
function restoreShard(
  shard: ServerShard,
  dir: string,
  k: number,
  range: KeyRange,
  optimizer: string,
  step: number | undefined,
  workerClocks: (number | null)[] | null,
  left: number[],
): string[] {
  const { ckpt, skipped } = latestCheckpoint(dir, step);
  if (!ckpt) {
    if (step !== undefined) throw new Error(`server ${k}: no valid checkpoint at step ${step} in ${dir}${skipped.length ? ` (${skipped.join("; ")})` : ""}`);
    const fresh = shard.state();
    shard.restore({ ...fresh, tensors: new Map(fresh.tensors.map(([n, t]) => [n, Float32Array.from(t)])) }, workerClocks, left);
    shard.restoredFrom = null;
    return skipped;
  }
  const h = ckpt.header;
  if (h.shard !== k || h.range.start !== range.start || h.range.end !== range.end || h.optimizer.name !== optimizer)
    throw new Error(`server ${k}: ${ckpt.file} is of shard ${h.shard} [${h.range.start}, ${h.range.end}) with ${h.optimizer.name}, not of this shard [${range.start}, ${range.end}) with ${optimizer}`);
  shard.restore({ step: h.step, version: h.version, appliedGradients: h.appliedGradients, clocks: h.clocks, optimizerScalars: h.optimizer.scalars, tensors: ckpt.tensors }, workerClocks, left);
  return skipped;
}

/**
 * Serve one shard on a bound ROUTER until the socket is closed. `checkpoint` is called whenever
 * the shard has crossed a checkpoint boundary, after that message's replies went out and before
 * the next message is read, so the state it saves is the state at the boundary.
 */
export async function serveShard(router: Router, shard: ServerShard, checkpoint?: () => void): Promise<void> {
  for await (const [from, ...frames] of messages(router)) {
    if (from === undefined) continue;
    const out = shard.handle(from, frames);
    for (const o of out) await router.send([o.to, encodeHeader(o.header), ...o.frames]);
    if (shard.takeCheckpointDue() && checkpoint) checkpoint();
    let got = 0;
    for (const f of frames) got += f.byteLength;
    processCollector.note(got);
    // Let the event loop turn: Node hands freed frames' bytes back to V8's external-memory count
    // from setImmediate, and a loop that always finds the next message ready would starve it
    // (16 MiB round, 2 workers, 2 shards: 0 full GCs per round instead of ~1, 27 -> 20 ms).
    await new Promise((resolve) => setImmediate(resolve));
  }
}
