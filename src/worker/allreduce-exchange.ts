import type { ControlClient } from "../cluster/control-client.js";
import { type ConfigMsg, isEvalStep, type ResumeMsg, type SnapshotMsg } from "../cluster/messages.js";
import { Allreducer } from "../allreduce/allreducer.js";
import type { PeerGroup } from "../allreduce/peer-group.js";
import { joinPeerGroup } from "../allreduce/rendezvous.js";
import type { ParamSpec } from "../model/model-api.js";
import { learningRate } from "../ps/lr-schedule.js";
import { createOptimizer, type ShardOptimizer } from "../ps/optimizer.js";
import { f32Frame, f32View } from "../transport/frames.js";
import { MsgType } from "../transport/header.js";
import { ErrorCode, PsError } from "../util/errors.js";
import type { GradientExchange, StepResult } from "./exchange.js";

/**
 * Data parallelism without servers: the workers sum their gradients by allreduce (one fused
 * collective per fusion buffer) and each applies the same optimizer step to its own copy of the
 * weights. The mean gradient and the update are exactly those of a parameter-server sync run
 * (sum, then the optimizer with scale 1/N at the same learning-rate schedule); every worker
 * computes bit-identical weights because every worker gets bit-identical sums.
 */
export class AllreduceExchange implements GradientExchange {
  private readonly optimizer: ShardOptimizer;
  private readonly views: Float32Array[] = [];

  private constructor(
    private readonly control: ControlClient,
    private readonly cfgMsg: ConfigMsg,
    private readonly group: PeerGroup,
    private readonly allreducer: Allreducer,
    readonly weights: Float32Array,
    private readonly gradient: Float32Array,
    params: readonly ParamSpec[],
  ) {
    this.optimizer = createOptimizer(cfgMsg.config, weights.length);
    // One view per trainable tensor, in the model's order: the fusion buffer packs them.
    for (const p of params) this.views.push(gradient.subarray(p.offset, p.offset + p.size));
  }

  /**
   * Join the peer group and start from rank 0's weights (rank 0 got them from the coordinator
   * with CONFIG; a broadcast gives every worker the same bits).
   */
  static async join(control: ControlClient, cfgMsg: ConfigMsg, init: Buffer | undefined, weights: Float32Array, gradient: Float32Array, params: readonly ParamSpec[]): Promise<AllreduceExchange> {
    const cfg = cfgMsg.config;
    const rank = control.rank;
    if (rank === 0) {
      if (!init || init.byteLength !== weights.byteLength) throw new PsError(ErrorCode.BAD_MESSAGE, `worker 0: CONFIG carries ${init?.byteLength ?? 0} bytes of initial weights, the model needs ${weights.byteLength}`);
      weights.set(f32View(init));
    }
    const group = await joinPeerGroup(control, { rank, size: cfg.workers, runId: cfgMsg.runId, runTag: cfgMsg.runTag, transport: cfg.transport, timeoutMs: cfg.timeoutMs,
      // No collective sends more than the whole model in one frame (recursive doubling, the
      // broadcast); STALL reports are a few hundred bytes.
      maxMessageBytes: weights.byteLength + 64 * 1024,
    });
    const allreducer = new Allreducer(group, { algo: cfg.allreduceAlgo, segmentBytes: cfg.allreduceSegmentBytes, smallBytes: cfg.allreduceSmallBytes, fusionBytes: cfg.fusionBytes });
    try {
      await allreducer.broadcast(weights, 0);
    } catch (err) {
      group.close();
      throw err;
    }
    return new AllreduceExchange(control, cfgMsg, group, allreducer, weights, gradient, params);
  }

  async step(clock: number, gradient: Float32Array): Promise<StepResult> {
    if (gradient !== this.gradient) throw new Error("AllreduceExchange: step() takes the gradient buffer it was built with");
    const cfg = this.cfgMsg.config;
    await this.allreducer.allreduceTensors(this.views, "sum");
    this.optimizer.apply(this.weights, gradient, 1 / cfg.workers, learningRate(cfg, clock));
    let stopping = false;
    const g = clock + 1;
    if (isEvalStep(g, this.cfgMsg.evalInterval, this.cfgMsg.stepsPerWorker)) {
      // Exact-step evaluation: rank 0 hands over the weights, everyone waits for the verdict.
      if (this.control.rank === 0) {
        const snap: SnapshotMsg = { step: g };
        await this.control.send(MsgType.SNAPSHOT, snap, [f32Frame(this.weights)]);
      }
      const waitMs = Math.max(cfg.timeoutMs * 20, 600_000);
      const m = await this.control.next([MsgType.RESUME], waitMs, `RESUME after the evaluation at step ${g}`);
      stopping = (m.body as ResumeMsg).stop === true;
    }
    return { stopping, staleness: 0, waited: false };
  }

  /** What the coordinator needs at the end: rank 0's final weights. */
  finalFrames(): Buffer[] {
    return this.control.rank === 0 ? [f32Frame(this.weights)] : [];
  }

  get bytesSent(): number {
    return this.group.bytesSent;
  }

  get bytesReceived(): number {
    return this.group.bytesReceived;
  }

  get collectives(): Record<string, number> {
    return { ...this.allreducer.calls };
  }

  close(): void {
    this.group.close();
  }
}
