import { Router } from "zeromq";
import type { ControlClient } from "../cluster/control-client.js";
import type { ConfigMsg } from "../cluster/messages.js";
import { shardWorkers } from "../config/train-config.js";
import { createMode } from "../modes/index.js";
import { bindAddress } from "../transport/endpoint.js";
import { f32View } from "../transport/frames.js";
import { processCollector } from "../transport/young-gc.js";
import { encodeHeader, MsgType } from "../transport/header.js";
import type { KeyRange } from "./key-range.js";
import { ServerShard } from "./server-shard.js";

/**
 * The server-shard process: binds a ROUTER (workers and the coordinator connect DEALERs),
 * reports the endpoint it actually bound, then serves until the coordinator says STOP.
 */
export async function runServer(control: ControlClient, cfgMsg: ConfigMsg, initFrame: Buffer | undefined): Promise<void> {
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
  });

  // Bounded queues, and no frame larger than this shard's range plus slack for JSON bodies: a
  // peer that sends more is disconnected by libzmq before the frame is allocated.
  const router = new Router({ linger: 0, receiveHighWaterMark: 1000, sendHighWaterMark: 1000, mandatory: false, maxMessageSize: maxShardFrameBytes(range) });
  await router.bind(bindAddress(cfg.transport, cfgMsg.runTag, `server-${shardIndex}`));
  const endpoint = router.lastEndpoint;
  if (!endpoint) throw new Error(`server ${shardIndex}: bound socket reports no endpoint`);

  let stopping = false;
  control.onStop = () => {
    stopping = true;
    router.close();
  };
  await control.send(MsgType.READY, { endpoint });

  try {
    await serveShard(router, shard);
  } catch (err) {
    if (!stopping) throw err;
  }
}

/** The largest frame a shard accepts: its whole range as float32, plus 64 KiB for control bodies. */
export function maxShardFrameBytes(range: KeyRange): number {
  return (range.end - range.start) * 4 + 64 * 1024;
}

/** Serve one shard on a bound ROUTER until the socket is closed. */
export async function serveShard(router: Router, shard: ServerShard): Promise<void> {
  for await (const [from, ...frames] of router) {
    if (from === undefined) continue;
    const out = shard.handle(from, frames);
    for (const o of out) await router.send([o.to, encodeHeader(o.header), ...o.frames]);
    let got = 0;
    for (const f of frames) got += f.byteLength;
    processCollector.note(got);
    // Let the event loop turn: Node hands freed frames' bytes back to V8's external-memory count
    // from setImmediate, and a loop that always finds the next message ready would starve it
    // (16 MiB round, 2 workers, 2 shards: 0 full GCs per round instead of ~1, 27 -> 20 ms).
    await new Promise((resolve) => setImmediate(resolve));
  }
}
