import { DEFAULTS, type ModeName, type OptimizerConfig } from "../../src/config/train-config.js";
import { createMode } from "../../src/modes/index.js";
import { ServerShard } from "../../src/ps/server-shard.js";
import { DType, encodeHeader, type Header, makeHeader, MsgType } from "../../src/transport/header.js";
import type { ShmFiles } from "../../src/transport/shm.js";

export const RUN_ID = 0xabc123;

export function sgd(lr = 0.1): OptimizerConfig {
  return { ...DEFAULTS, optimizer: "sgd", lr, momentum: 0, lrSchedule: "constant", warmupSteps: 0 };
}

export function makeShard(opts: { mode: ModeName; staleness?: number; workers: number; size?: number; start?: number; optimizer?: OptimizerConfig; shm?: ShmFiles }): ServerShard {
  const size = opts.size ?? 4;
  const start = opts.start ?? 0;
  return new ServerShard({
    shard: 0,
    runId: RUN_ID,
    range: { start, end: start + size },
    workers: opts.workers,
    mode: createMode(opts.mode, opts.staleness ?? 0),
    optimizer: opts.optimizer ?? sgd(),
    init: new Float32Array(size),
    ...(opts.shm ? { shm: opts.shm } : {}),
  });
}

export function frames(h: Partial<Header> & { type: MsgType }, payload: Buffer[] = []): Buffer[] {
  const { type, ...rest } = h;
  return [encodeHeader(makeHeader(type, { runId: RUN_ID, ...rest })), ...payload];
}

export function pushPull(rank: number, clock: number, g: Float32Array, opts: { start?: number; version?: number; seq?: number } = {}): Buffer[] {
  const start = opts.start ?? 0;
  return frames(
    { type: MsgType.PUSH_PULL, rank, clock, version: opts.version ?? 0, rangeStart: start, rangeEnd: start + g.length, dtype: DType.F32, byteLength: g.byteLength, seq: opts.seq ?? 1 },
    [Buffer.from(g.buffer, g.byteOffset, g.byteLength)],
  );
}

export const peer = (n: number): Buffer => Buffer.from([n]);
