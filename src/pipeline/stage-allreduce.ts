/**
 * --parallelism model|hybrid with --comm allreduce: no parameter server. The replicas of each
 * stage form their own allreduce peer group (replica r of stage k is worker r·K + k), sum their
 * stage's gradient and apply the same optimizer step to their own copy of the stage's weights,
 * which is what a sync shard of that stage would apply (the mean over R replicas, learning rate
 * at the step). Every worker starts from the coordinator's initial weights (CONFIG).
 *
 * Evaluation (exact steps, as an allreduce data-parallel run): after every global step g with
 * isEvalStep, the stages of replica 0 send their weights (SNAPSHOT {step, start, end} + their key
 * range as float32), and every worker waits for the coordinator's RESUME {stop}.
 */
import type { ControlClient } from "../cluster/control-client.js";
import { type ConfigMsg, isEvalStep, type MapMsg, type ReadyMsg, type ResumeMsg, type SnapshotMsg } from "../cluster/messages.js";
import { Allreducer } from "../allreduce/allreducer.js";
import { PeerGroup } from "../allreduce/peer-group.js";
import type { KeyRange } from "../ps/key-range.js";
import { learningRate } from "../ps/lr-schedule.js";
import { createOptimizer, type ShardOptimizer } from "../ps/optimizer.js";
import { bindAddress } from "../transport/endpoint.js";
import { f32Frame } from "../transport/frames.js";
import { MsgType } from "../transport/header.js";
import { ErrorCode, PsError } from "../util/errors.js";

export class StageAllreduce {
  private readonly optimizer: ShardOptimizer;

  private constructor(
    private readonly control: ControlClient,
    private readonly cfgMsg: ConfigMsg,
    private readonly group: PeerGroup | null,
    private readonly allreducer: Allreducer | null,
    private readonly keys: KeyRange,
    private readonly weights: Float32Array,
  ) {
    this.optimizer = createOptimizer(cfgMsg.config, keys.end - keys.start);
  }

  /**
   * Join the stage's peer group through the coordinator (READY {endpoint} → MAP {peers} with
   * every worker's endpoint; this stage's replicas are picked from it).
   */
  static async join(control: ControlClient, cfgMsg: ConfigMsg, stage: number, replica: number, keys: KeyRange, weights: Float32Array): Promise<StageAllreduce> {
    const cfg = cfgMsg.config;
    const K = cfg.stages;
    const R = cfg.replicas;
    const group = new PeerGroup({ rank: replica, size: R, runId: cfgMsg.runId, timeoutMs: cfg.timeoutMs, socketBufferBytes: 0, maxMessageBytes: (keys.end - keys.start) * 4 + 64 * 1024 });
    try {
      const endpoint = await group.bind(bindAddress(cfg.transport, cfgMsg.runTag, `stage-peer-${control.rank}`));
      const ready: ReadyMsg = { endpoint };
      await control.send(MsgType.READY, ready);
      const m = await control.next([MsgType.MAP], cfg.timeoutMs, "stage peer MAP");
      const peers = (m.body as MapMsg).peers;
      if (!Array.isArray(peers) || peers.length !== cfg.workers) throw new PsError(ErrorCode.BAD_MESSAGE, `worker ${control.rank}: the coordinator's MAP has no endpoint list for ${cfg.workers} workers`);
      group.connect(Array.from({ length: R }, (_, r) => peers[r * K + stage]!));
      await group.barrier();
    } catch (err) {
      group.close();
      throw err;
    }
    return new StageAllreduce(control, cfgMsg, group, R > 1 ? new Allreducer(group, { algo: cfg.allreduceAlgo, segmentBytes: cfg.allreduceSegmentBytes, smallBytes: cfg.allreduceSmallBytes, fusionBytes: cfg.fusionBytes }) : null, keys, weights);
  }

  /** Sum the stage's gradient over the replicas and apply the step; returns whether the run stops here. */
  async step(clock: number, gradient: Float32Array, replica: number, stage: number): Promise<boolean> {
    const cfg = this.cfgMsg.config;
    const g = gradient.subarray(this.keys.start, this.keys.end);
    if (this.allreducer) await this.allreducer.allreduce(g, "sum");
    this.optimizer.apply(this.weights.subarray(this.keys.start, this.keys.end), g, 1 / cfg.replicas, learningRate(cfg, clock));
    const next = clock + 1;
    if (!isEvalStep(next, this.cfgMsg.evalInterval, this.cfgMsg.stepsPerWorker)) return false;
    if (replica === 0) {
      const snap: SnapshotMsg & { start: number; end: number; stage: number } = { step: next, start: this.keys.start, end: this.keys.end, stage };
      await this.control.send(MsgType.SNAPSHOT, snap, [f32Frame(this.weights.subarray(this.keys.start, this.keys.end))]);
    }
    const waitMs = Math.max(cfg.timeoutMs * 20, 600_000);
    const m = await this.control.next([MsgType.RESUME], waitMs, `RESUME after the evaluation at step ${next}`);
    return (m.body as ResumeMsg).stop === true;
  }

  /** Replica 0's stages send their final weights with DONE. */
  finalFrames(replica: number): Buffer[] {
    return replica === 0 ? [f32Frame(this.weights.subarray(this.keys.start, this.keys.end))] : [];
  }

  get bytesSent(): number {
    return this.group?.bytesSent ?? 0;
  }

  get bytesReceived(): number {
    return this.group?.bytesReceived ?? 0;
  }

  /** The group stays open until the process ends (a peer that closes early looks lost). */
  close(): void {}
}
