import type { ControlClient } from "../cluster/control-client.js";
import { type ConfigMsg, type ElasticMsg, isEvalStep, type ReformMsg, type ResumeMsg, type SnapshotMsg } from "../cluster/messages.js";
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
  /** elastic (--on-worker-failure shrink): the peer group's generation, the committed states, the verdicts seen */
  private readonly elastic: boolean;
  private gen = 0;
  private readonly commits = new ElasticCommits();
  private readonly resumed = new Map<number, boolean>();
  /** bytes moved by the groups closed so far */
  private closedBytes = { sent: 0, received: 0 };

  private constructor(
    private readonly control: ControlClient,
    private readonly cfgMsg: ConfigMsg,
    private group: PeerGroup,
    private allreducer: Allreducer,
    readonly weights: Float32Array,
    private readonly gradient: Float32Array,
    params: readonly ParamSpec[],
  ) {
    this.optimizer = createOptimizer(cfgMsg.config, weights.length);
    this.elastic = cfgMsg.config.onWorkerFailure === "shrink";
    // One view per trainable tensor, in the model's order: the fusion buffer packs them.
    for (const p of params) this.views.push(gradient.subarray(p.offset, p.offset + p.size));
  }

  /** This worker's rank in the current peer group (its process rank until a re-formation). */
  get groupRank(): number {
    return this.group.rank;
  }

  get groupSize(): number {
    return this.group.size;
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
    const allreducer = newAllreducer(group, cfgMsg);
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
    if (this.elastic) this.commits.commit(clock, this.weights, this.optimizer);
    try {
      await this.allreducer.allreduceTensors(this.views, "sum");
    } catch (err) {
      if (!this.elastic) throw err;
      return this.reform(clock, err);
    }
    // The mean over the workers in the group now (fewer after a re-formation).
    this.optimizer.apply(this.weights, gradient, 1 / this.group.size, learningRate(cfg, clock));
    const g = clock + 1;
    if (!isEvalStep(g, this.cfgMsg.evalInterval, this.cfgMsg.stepsPerWorker)) return { stopping: false, staleness: 0, waited: false };
    const verdict = await this.evaluation(g);
    if (verdict === "reform") {
      if (this.elastic) this.commits.commit(g, this.weights, this.optimizer);
      return this.reform(g, new Error("the coordinator asked for a re-formation during an evaluation"));
    }
    return { stopping: verdict, staleness: 0, waited: false };
  }

  /**
   * Exact-step evaluation: rank 0 of the group hands over the weights, everyone waits for the
   * verdict (stop or go on). An elastic run may come to the same step twice (after a rollback):
   * a verdict already received for it stands. "reform": a re-formation was asked for meanwhile.
   */
  private async evaluation(g: number): Promise<boolean | "reform"> {
    const cfg = this.cfgMsg.config;
    for (let m = this.control.poll(MsgType.RESUME); m; m = this.control.poll(MsgType.RESUME)) this.noteResume(m.body, g);
    const known = this.resumed.get(g);
    if (known !== undefined) return known;
    if (this.group.rank === 0) {
      const snap: SnapshotMsg = { step: g };
      await this.control.send(MsgType.SNAPSHOT, snap, [f32Frame(this.weights)]);
    }
    const waitMs = Math.max(cfg.timeoutMs * 20, 600_000);
    const deadline = Date.now() + waitMs;
    for (;;) {
      const types = this.elastic ? [MsgType.RESUME, MsgType.ELASTIC] : [MsgType.RESUME];
      const m = await this.control.next(types, Math.max(1, deadline - Date.now()), `RESUME after the evaluation at step ${g}`);
      if (m.header.type === MsgType.ELASTIC) {
        if (((m.body as ElasticMsg | null)?.gen ?? 0) > this.gen) return "reform";
        continue;
      }
      this.noteResume(m.body, g);
      const v = this.resumed.get(g);
      if (v !== undefined) return v;
    }
  }

  private noteResume(body: unknown, g: number): void {
    const r = body as ResumeMsg | null;
    this.resumed.set(typeof r?.step === "number" ? r.step : g, r?.stop === true);
  }

  /**
   * Elastic re-formation (--on-worker-failure shrink): the group lost a member. Report the step
   * this worker holds a committed state for, get the new membership from the coordinator, roll
   * back to the agreed step, and join a fresh group of the survivors (new ranks, new endpoints).
   * The caller redoes its steps from `redoFrom`.
   */
  private async reform(nextStep: number, cause: unknown): Promise<StepResult> {
    const cfg = this.cfgMsg.config;
    this.closedBytes = { sent: this.closedBytes.sent + this.group.bytesSent, received: this.closedBytes.received + this.group.bytesReceived };
    this.group.close();
    const report: ElasticMsg = { gen: this.gen, step: nextStep };
    await this.control.send(MsgType.ELASTIC, report);
    const why = cause instanceof Error ? cause.message : String(cause);
    let reform: ReformMsg | null = null;
    const deadline = Date.now() + cfg.timeoutMs * 2;
    while (!reform) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new PsError(ErrorCode.TIMEOUT, `worker ${this.control.rank}: no new membership from the coordinator within ${cfg.timeoutMs * 2} ms after: ${why}`);
      const m = await this.control.next([MsgType.REFORM], remaining, "REFORM");
      const body = m.body as ReformMsg | null;
      if (body && body.gen > this.gen) reform = body;
    }
    // Requests for this generation that were already queued are answered by the report above.
    while (this.control.poll(MsgType.ELASTIC)) {
      /* drop */
    }
    this.commits.restore(reform.rollbackTo, this.weights, this.optimizer);
    this.gen = reform.gen;
    this.group = await joinPeerGroup(this.control, {
      rank: reform.rank,
      size: reform.size,
      runId: this.cfgMsg.runId,
      runTag: this.cfgMsg.runTag,
      transport: cfg.transport,
      timeoutMs: cfg.timeoutMs,
      maxMessageBytes: this.weights.byteLength + 64 * 1024,
      name: `peer-g${reform.gen}-${reform.rank}`,
      shmGroup: `g${reform.gen}`,
    });
    this.allreducer = newAllreducer(this.group, this.cfgMsg);
    // Every survivor restored the same committed bits; the broadcast makes sure of it.
    await this.allreducer.broadcast(this.weights, 0);
    let stopping = false;
    if (isEvalStep(reform.rollbackTo, this.cfgMsg.evalInterval, this.cfgMsg.stepsPerWorker)) {
      // The rollback lands on an evaluation step: its verdict, or the evaluation itself, is due first.
      const verdict = await this.evaluation(reform.rollbackTo);
      if (verdict === "reform") return this.reform(reform.rollbackTo, new Error("another worker was lost"));
      stopping = verdict;
    }
    return { stopping, staleness: 0, waited: false, redoFrom: reform.rollbackTo };
  }

  /** What the coordinator needs at the end: the final weights, from rank 0 of the group. */
  finalFrames(): Buffer[] {
    return this.group.rank === 0 ? [f32Frame(this.weights)] : [];
  }

  get bytesSent(): number {
    return this.closedBytes.sent + this.group.bytesSent;
  }

  get bytesReceived(): number {
    return this.closedBytes.received + this.group.bytesReceived;
  }

  get collectives(): Record<string, number> {
    return { ...this.allreducer.calls };
  }

  close(): void {
    this.group.close();
  }
}

function newAllreducer(group: PeerGroup, cfgMsg: ConfigMsg): Allreducer {
  const cfg = cfgMsg.config;
  return new Allreducer(group, { algo: cfg.allreduceAlgo, segmentBytes: cfg.allreduceSegmentBytes, smallBytes: cfg.allreduceSmallBytes, fusionBytes: cfg.fusionBytes });
}

/**
 * The states an elastic worker can roll back to: weights and optimizer state at the start of the
 * last two steps (a survivor is at most one step ahead of the step that failed). Two copies of
 * the weights and of the optimizer state, written once per step.
 */
class ElasticCommits {
  private readonly slots: { step: number; weights: Float32Array; tensors: Record<string, Float32Array>; scalars: Record<string, number> }[] = [];

  commit(step: number, weights: Float32Array, opt: ShardOptimizer): void {
    if (this.slots.some((s) => s.step === step)) return;
    let slot = this.slots.length < 2 ? undefined : this.slots.reduce((a, b) => (a.step < b.step ? a : b));
    if (!slot) {
      slot = { step, weights: new Float32Array(weights.length), tensors: {}, scalars: {} };
      this.slots.push(slot);
    }
    slot.step = step;
    slot.weights.set(weights);
    const st = opt.state();
    for (const [k, t] of Object.entries(st.tensors)) (slot.tensors[k] ??= new Float32Array(t.length)).set(t);
    slot.scalars = { ...st.scalars };
  }

  restore(step: number, weights: Float32Array, opt: ShardOptimizer): void {
    const slot = this.slots.find((s) => s.step === step);
    if (!slot) {
      throw new PsError(ErrorCode.PEER_LOST, `elastic rollback to step ${step}: this worker holds states for steps ${this.slots.map((s) => s.step).join(", ") || "none"} only`);
    }
    weights.set(slot.weights);
    // States of later steps belong to the history that was rolled back.
    for (const s of this.slots) if (s.step > step) s.step = -1;
    opt.restore(new Map(Object.entries(slot.tensors)), slot.scalars);
  }
}
