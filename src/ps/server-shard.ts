import type { OptimizerConfig } from "../config/train-config.js";
import { type HistogramJson, IntHistogram } from "../metrics/histogram.js";
import type { ConsistencyMode, ShardClocks } from "../modes/mode.js";
import { allFinite, f32Copy, f32View } from "../transport/frames.js";
import { decodeHeader, DType, Flag, type Header, makeHeader, MsgType, typeName, WireError } from "../transport/header.js";
import { decodeShmRef, encodeShmRef, gradientFile, type ShmFiles, weightsFile } from "../transport/shm.js";
import type { KeyRange } from "./key-range.js";
import { addInto } from "../util/f32-kernels.js";
import { allocF32, freeF32, simdEnabled } from "../util/simd.js";
import { asyncStepScale, learningRate } from "./lr-schedule.js";
import { createOptimizer, type ShardOptimizer } from "./optimizer.js";

/** A message to send: to the peer with routing id `to`. */
export interface Outgoing {
  to: Buffer;
  header: Header;
  frames: Buffer[];
}

export interface ServerShardOptions {
  shard: number;
  runId: number;
  range: KeyRange;
  workers: number;
  mode: ConsistencyMode;
  optimizer: OptimizerConfig;
  /** the initial weights of this shard's range */
  init: Float32Array;
  /** clip each pushed gradient to this L2 norm; 0 or absent: off */
  gradClip?: number;
  /** a checkpoint is due every this many server updates (sync: aggregates; else gradients); 0 or absent: never */
  checkpointEvery?: number;
  /** --transport shm: the run's shared-memory files; workers may then push and read through them */
  shm?: ShmFiles;
}

/** What a checkpoint holds of a shard (see checkpoint.ts for the file). */
export interface ShardState {
  step: number;
  version: number;
  appliedGradients: number;
  clocks: number[];
  lrStep: number;
  optimizerScalars: Record<string, number>;
  tensors: [string, Float32Array][];
}

interface PendingRead {
  to: Buffer;
  rank: number;
  clock: number;
  seq: number;
  since: number;
  /** staleness of the push that came with this read, echoed in the reply's status field */
  staleness: number;
}

/** Which ranks a held read waits for (the stall report of docs/reliability.md). */
export interface StallReport {
  shard: number;
  /** the oldest held read: its rank, the clock it reads at, and how long it has waited */
  reader: number;
  clock: number;
  waitedMs: number;
  /** the live ranks whose pushes that read waits for, each with the clock it has reached */
  waitingOn: { rank: number; clock: number }[];
}

export interface ShardStats {
  shard: number;
  version: number;
  appliedGradients: number;
  clocks: number[];
  /** ranks that left the run (worker failures) */
  left: number[];
  staleness: HistogramJson;
  /** for every answered read: reader's clock minus the slowest worker's clock */
  readGap: HistogramJson;
  readsWaited: number;
  readWaitSeconds: number;
  errors: Record<string, number>;
  bytesReceived: number;
  bytesSent: number;
  applySeconds: number;
  /** gradients refused because they hold NaN or Infinity */
  rejectedGradients: number;
  /** gradients scaled down to --grad-clip */
  clippedGradients: number;
  /** checkpoints written by this shard process */
  checkpoints: number;
  /** the checkpoint step this shard process was restored from; null: it started fresh */
  restoredFrom: number | null;
  /** gradients applied before a crash and lost with it (pushed since the restored checkpoint) */
  lostUpdates: number;
}

/**
 * One parameter-server shard: the weights of one key range, their optimizer state, the
 * per-worker clocks, and the consistency mode that decides when pushes apply and reads answer.
 * It is a pure state machine (messages in, messages out) so that it is tested without sockets.
 */
export class ServerShard implements ShardClocks {
  readonly weights: Float32Array;
  readonly workers: number;
  version = 0;
  appliedGradients = 0;
  private readonly clocks: Int32Array;
  /** ranks still in the run: a rank that left is not waited for (sync, SSP, snapshots) */
  private readonly live: boolean[];
  /** sync: the first clock whose aggregate a rank takes part in (a replacement joins at a later clock) */
  private readonly joinAt: Int32Array;
  /** sync: gradients summed into `accum` for the current clock */
  private summed = 0;
  private readonly optimizer: ShardOptimizer;
  private readonly accum: Float32Array;
  /** sync: the next rank whose gradient is added to the aggregate, and those that came early */
  private nextRank = 0;
  private readonly early: (Float32Array | null)[];
  private readonly earlyCopies: (Float32Array | undefined)[] = [];
  /** sync after a restart only: gradients of the round after the open one, from a worker a clock ahead */
  private readonly nextRound: (Float32Array | null)[];
  private pending: PendingRead[] = [];
  private paused = false;
  /** reads for clocks >= holdFrom are held (a pause at an exact step); null: none */
  private holdFrom: number | null = null;
  private pendingSnapshots: { to: Buffer; seq: number; clock: number }[] = [];
  private stopping = false;
  private readonly replies: ReplyBuffers<Buffer>;
  /** --transport shm: weights slots in shared-memory files, for the ranks that read that way */
  private readonly shmReplies: ReplyBuffers<number> | null;
  /** ranks whose last request asked for the answer through shared memory */
  private readonly shmReader: boolean[];
  private readonly scratch: Float32Array;
  readonly staleness = new IntHistogram();
  readonly readGap = new IntHistogram();
  private readsWaited = 0;
  private readWaitMs = 0;
  private applyMs = 0;
  readonly errors: Record<string, number> = {};
  bytesReceived = 0;
  bytesSent = 0;
  rejectedGradients = 0;
  clippedGradients = 0;
  checkpoints = 0;
  restoredFrom: number | null = null;
  lostUpdates = 0;
  private checkpointDue = false;
  /** ranks whose first message after a restart may carry a weights version this process never had */
  private readonly rejoining = new Set<number>();

  constructor(private readonly opts: ServerShardOptions) {
    const n = opts.range.end - opts.range.start;
    if (opts.init.length !== n) throw new RangeError(`shard ${opts.shard}: initial weights have ${opts.init.length} values, range has ${n}`);
    // Weights, aggregate and gradient copies live in the SIMD kernels' memory (util/simd.ts).
    this.weights = allocF32(n);
    this.weights.set(opts.init);
    this.workers = opts.workers;
    this.clocks = new Int32Array(opts.workers);
    this.live = new Array<boolean>(opts.workers).fill(true);
    this.joinAt = new Int32Array(opts.workers);
    this.optimizer = createOptimizer(opts.optimizer, n);
    this.accum = opts.mode.pushPolicy === "aggregate" ? allocF32(n) : new Float32Array(0);
    this.early = new Array<Float32Array | null>(opts.workers).fill(null);
    this.nextRound = new Array<Float32Array | null>(opts.workers).fill(null);
    this.scratch = allocF32(n);
    this.replies = new ReplyBuffers<Buffer>(
      () => Buffer.allocUnsafeSlow(n * 4),
      (buf, w) => buf.set(new Uint8Array(w.buffer, w.byteOffset, w.byteLength)),
    );
    const shm = opts.shm;
    let slots = 0;
    this.shmReplies = shm ? new ReplyBuffers(() => slots++, (slot, w) => shm.write(weightsFile(opts.shard, slot), w)) : null;
    this.shmReader = new Array<boolean>(opts.workers).fill(false);
  }

  /** Give the arrays' memory back (the shard is not used again). */
  dispose(): void {
    for (const a of [this.weights, this.accum, this.scratch, ...this.earlyCopies]) if (a) freeF32(a);
    this.optimizer.dispose();
  }

  clockOf(rank: number): number {
    return this.clocks[rank] ?? 0;
  }

  /** the slowest live worker's clock (ranks that left are not waited for) */
  minClock(): number {
    let m = Infinity;
    for (let i = 0; i < this.clocks.length; i++) if (this.live[i]) m = Math.min(m, this.clocks[i]!);
    return m === Infinity ? this.maxClock() : m;
  }

  private maxClock(): number {
    let m = 0;
    for (let i = 0; i < this.clocks.length; i++) m = Math.max(m, this.clocks[i]!);
    return m;
  }

  isLive(rank: number): boolean {
    return this.live[rank] === true;
  }

  /** sync: does `rank` take part in the aggregate of the clock now being summed? */
  private contributes(rank: number): boolean {
    return this.live[rank] === true && this.joinAt[rank]! <= this.version;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  get pendingReads(): number {
    return this.pending.length;
  }

  /** The position that names a checkpoint: sync, global steps (= version); async/SSP, applied gradients. */
  get step(): number {
    return this.opts.mode.pushPolicy === "aggregate" ? this.version : this.appliedGradients;
  }

  /** True once per crossed checkpoint boundary (the caller writes state() then). */
  takeCheckpointDue(): boolean {
    const due = this.checkpointDue;
    this.checkpointDue = false;
    return due;
  }

  /** The state a checkpoint holds. Taken between messages, it is consistent with the clocks. */
  state(): ShardState {
    const opt = this.optimizer.state();
    return {
      step: this.step,
      version: this.version,
      appliedGradients: this.appliedGradients,
      clocks: Array.from(this.clocks),
      lrStep: this.lrStep(),
      optimizerScalars: opt.scalars,
      tensors: [["weights", this.weights], ...Object.entries(opt.tensors)],
    };
  }

  private lrStep(): number {
    return this.opts.mode.pushPolicy === "aggregate" ? this.version : Math.floor(this.appliedGradients / this.workers);
  }

  /**
   * Load a checkpoint. `workerClocks` (a restart after a crash): the gradients each worker has
   * had acknowledged by the shard; those pushed after the checkpoint are lost and counted, and
   * the clocks are set to where the workers are, so that they go on from there. A worker with
   * no clock there (null) keeps the checkpoint's. `left`: workers lost from the run meanwhile
   * (--on-worker-failure); they are not waited for, as after WORKER_LEFT.
   */
  restore(
    st: { step: number; version: number; appliedGradients: number; clocks: readonly number[]; optimizerScalars: Record<string, number>; tensors: ReadonlyMap<string, Float32Array> },
    workerClocks: readonly (number | null)[] | null = null,
    left: readonly number[] = [],
  ): void {
    const w = st.tensors.get("weights");
    if (!w || w.length !== this.weights.length) throw new Error(`shard ${this.opts.shard}: checkpoint holds ${w?.length ?? 0} weights, the range has ${this.weights.length}`);
    if (st.clocks.length !== this.workers) throw new Error(`shard ${this.opts.shard}: checkpoint has clocks of ${st.clocks.length} workers, the run has ${this.workers}`);
    this.weights.set(w);
    this.optimizer.restore(st.tensors, st.optimizerScalars);
    this.version = st.version;
    this.appliedGradients = st.appliedGradients;
    this.clocks.set(st.clocks);
    this.restoredFrom = st.step;
    for (const r of left) if (r >= 0 && r < this.workers) this.live[r] = false;
    if (workerClocks) {
      let lost = 0;
      for (let r = 0; r < this.workers; r++) {
        if (!this.live[r]) continue;
        // A gradient in the checkpoint whose answer the worker never got is pushed again.
        const c = workerClocks[r] ?? st.clocks[r]!;
        lost += Math.max(0, c - st.clocks[r]!);
        this.clocks[r] = c;
        this.rejoining.add(r);
      }
      this.lostUpdates += lost;
      if (this.opts.mode.pushPolicy === "aggregate") this.rejoinBarrier();
      // The others count the lost gradients as if they had been applied, so versions stay monotone.
      else this.version = st.version + lost;
    }
  }

  /**
   * Sync after a restart: the barrier goes on at the slowest worker's clock m (version = m, the
   * rounds completed). A worker one clock ahead got its answer for round m from the dead
   * process just before it died: its gradient of round m is lost (counted), and stands in the
   * round as zero, so the round closes with the others' resent gradients.
   */
  private rejoinBarrier(): void {
    const m = this.minClock();
    this.version = m;
    const zero = new Float32Array(this.weights.length);
    for (let r = 0; r < this.workers; r++) {
      const c = this.clocks[r]!;
      if (c === m || !this.live[r]) continue;
      if (c !== m + 1) throw new Error(`shard ${this.opts.shard}: sync workers resume ${c - m} clocks apart (worker ${r} at ${c}, slowest at ${m})`);
      this.early[r] = this.holdEarly(r, zero);
    }
  }

  /** Handle one message from `from`; returns the replies to send now (possibly to other peers). */
  handle(from: Buffer, frames: Buffer[], now = Date.now()): Outgoing[] {
    for (const f of frames) this.bytesReceived += f.byteLength;
    let header: Header | undefined;
    try {
      const [head, ...payload] = frames;
      header = decodeChecked(head, this.opts.runId);
      return this.dispatch(from, header, payload, now);
    } catch (err) {
      if (!(err instanceof WireError)) throw err;
      this.errors[err.reason] = (this.errors[err.reason] ?? 0) + 1;
      return [this.errorReply(from, header, err)];
    }
  }

  private dispatch(from: Buffer, h: Header, payload: Buffer[], now: number): Outgoing[] {
    switch (h.type) {
      case MsgType.PUSH_PULL: {
        this.checkWorker(h, this.shmFlag());
        this.checkLive(h);
        const staleness = this.push(h, payload);
        // A worker sends its next request only after it has received our last reply in full.
        this.releaseReply(h.rank, h);
        return this.read(from, h.rank, this.clocks[h.rank]!, h.seq, now, staleness);
      }
      case MsgType.PUSH: {
        this.checkWorker(h, this.shmFlag());
        this.checkLive(h);
        this.push(h, payload);
        this.releaseReply(h.rank, h);
        return [this.reply(from, MsgType.ACK, h.seq, []), ...this.release(now)];
      }
      case MsgType.PULL: {
        this.checkWorker(h, this.shmFlag());
        this.checkLive(h);
        this.expectNoPayload(h, payload);
        if (h.clock !== this.clocks[h.rank])
          throw new WireError("clock", `worker ${h.rank} read at clock ${h.clock} but has pushed ${this.clocks[h.rank]} gradients`);
        this.checkPullFields(h);
        this.releaseReply(h.rank, h);
        return this.read(from, h.rank, h.clock, h.seq, now);
      }
      case MsgType.SNAPSHOT:
        this.checkCoordinator(h);
        if ((h.flags & Flag.AT_CLOCK) !== 0 && this.minClock() < h.clock && !this.stopping) {
          this.pendingSnapshots.push({ to: from, seq: h.seq, clock: h.clock });
          return [];
        }
        return [this.weightsReply(from, h.seq, 0)];
      case MsgType.PAUSE:
        this.checkCoordinator(h);
        if ((h.flags & Flag.AT_CLOCK) !== 0) this.holdFrom = h.clock;
        else this.paused = true;
        return [this.reply(from, MsgType.ACK, h.seq, [])];
      case MsgType.RESUME: {
        this.checkCoordinator(h);
        this.paused = false;
        this.holdFrom = (h.flags & Flag.AT_CLOCK) !== 0 ? h.clock : null;
        return [this.reply(from, MsgType.ACK, h.seq, []), ...this.releaseReads(now)];
      }
      case MsgType.STOP: {
        this.checkCoordinator(h);
        this.stopping = true;
        this.paused = false;
        return [this.reply(from, MsgType.ACK, h.seq, []), ...this.release(now)];
      }
      case MsgType.WORKER_LEFT: {
        this.checkCoordinator(h);
        const rank = leftRank(h, payload[0]);
        if (!Number.isInteger(rank) || rank < 0 || rank >= this.workers) throw new WireError("rank", `WORKER_LEFT names rank ${rank}, not a worker of this run`);
        return [this.reply(from, MsgType.ACK, h.seq, []), ...this.workerLeft(rank, now)];
      }
      case MsgType.JOIN: {
        this.checkWorker(h, Flag.AT_CLOCK);
        this.expectNoPayload(h, payload);
        if ((h.flags & Flag.AT_CLOCK) === 0) return [this.clockReply(from, h.seq, this.joinClock())];
        const ok = this.join(h.rank, h.clock);
        if (!ok) throw new WireError("join-late", `worker ${h.rank} cannot join at clock ${h.clock}: this shard is at version ${this.version}`);
        // A registration moved to a later clock may have closed the aggregate in progress.
        return [this.clockReply(from, h.seq, h.clock), ...this.release(now)];
      }
      case MsgType.STATS:
        this.checkCoordinator(h);
        return [this.reply(from, MsgType.STATS, h.seq, [Buffer.from(JSON.stringify(this.stats()))], DType.JSON)];
      default:
        throw new WireError("unexpected-type", `a server shard does not accept ${typeName(h.type)} messages`);
    }
  }

  /** A worker's request: its rank is one of the run's, its status 0, and no flags but `allowedFlags`. */
  private checkWorker(h: Header, allowedFlags = 0): void {
    if (!Number.isInteger(h.rank) || h.rank < 0 || h.rank >= this.workers)
      throw new WireError("rank", `rank ${h.rank} is not a worker of this run (0..${this.workers - 1})`);
    if ((h.flags & ~allowedFlags) !== 0) throw new WireError("flags", `${typeName(h.type)} from a worker carries flags ${h.flags}${allowedFlags ? ` (only ${allowedFlags} is allowed)` : ", none is allowed"}`);
    if (h.status !== 0) throw new WireError("status", `a request carries status 0, got ${h.status}`);
  }

  /** the flags a worker's PUSH/PUSH_PULL/PULL may carry: SHM when this shard has the run's shared-memory files */
  private shmFlag(): number {
    return this.opts.shm ? Flag.SHM : 0;
  }

  /**
   * A worker's next request: it has read our last answer to it, so that answer's buffer or slot
   * may be reused. Its answers go the way this request asks (shared memory or frames).
   */
  private releaseReply(rank: number, h: Header): void {
    this.replies.release(rank);
    this.shmReplies?.release(rank);
    this.shmReader[rank] = (h.flags & Flag.SHM) !== 0;
  }

  private checkPullFields(h: Header): void {
    const { start, end } = this.opts.range;
    if (h.rangeStart !== start || h.rangeEnd !== end)
      throw new WireError("range", `range [${h.rangeStart}, ${h.rangeEnd}) is not this shard's range [${start}, ${end})`);
    if (h.dtype !== DType.NONE) throw new WireError("dtype", `PULL carries no tensor, got dtype ${h.dtype}`);
  }

  private checkLive(h: Header): void {
    if (!this.live[h.rank]) throw new WireError("left", `worker ${h.rank} has left the run`);
  }

  /**
   * `rank` is gone (its process died or went silent): drop what it left here and stop waiting
   * for it. A gradient of the current clock already summed stays in (the mean divides by the
   * gradients actually summed); one held early is dropped.
   */
  workerLeft(rank: number, now = Date.now()): Outgoing[] {
    if (!this.live[rank]) return [];
    this.live[rank] = false;
    this.early[rank] = null;
    this.pending = this.pending.filter((r) => r.rank !== rank);
    this.replies.release(rank);
    this.shmReplies?.release(rank);
    if (this.opts.mode.pushPolicy === "aggregate") this.advanceAggregate();
    return this.release(now);
  }

  /** The clock a replacement may take the rank at: after the aggregate in progress (sync), the slowest live clock otherwise. */
  joinClock(): number {
    return this.opts.mode.pushPolicy === "aggregate" ? this.version + 1 : this.minClock();
  }

  /**
   * A replacement takes `rank` from `clock` on; false when this shard is already past that clock
   * (sync). The reads and snapshots this may release are sent with the next release().
   */
  join(rank: number, clock: number): boolean {
    // A rank that is live and has pushed since it joined is not replaced; one that has not (an
    // earlier round of the same replacement's join) may be registered again at a later clock.
    if (this.live[rank] && this.clocks[rank] !== this.joinAt[rank]) return this.clocks[rank] === clock;
    const sync = this.opts.mode.pushPolicy === "aggregate";
    if (sync && clock <= this.version) return false;
    // Registered again at a later clock, the rank may have been the one the aggregate in progress
    // waited for (its first registration was at this clock): the round closes without it now.
    const wasIn = sync && this.contributes(rank);
    this.live[rank] = true;
    this.clocks[rank] = clock;
    this.joinAt[rank] = clock;
    if (wasIn) this.advanceAggregate();
    return true;
  }

  /** The oldest read held longer than `afterMs`, and the live ranks it waits for; null when none. */
  stallReport(now: number, afterMs: number): StallReport | null {
    if (this.paused || this.stopping) return null;
    let oldest: PendingRead | null = null;
    for (const r of this.pending) {
      if (this.holdFrom !== null && r.clock >= this.holdFrom) continue; // held for an evaluation, not stalled
      if (oldest === null || r.since < oldest.since) oldest = r;
    }
    if (oldest === null || now - oldest.since < afterMs) return null;
    const waitingOn: { rank: number; clock: number }[] = [];
    const sync = this.opts.mode.pushPolicy === "aggregate";
    const min = this.minClock();
    for (let r = 0; r < this.workers; r++) {
      if (!this.live[r]) continue;
      const c = this.clocks[r]!;
      // sync: the ranks that have not pushed the clock being aggregated; SSP: the slowest ranks
      const behind = sync ? this.contributes(r) && c <= this.version : c === min && c < oldest.clock;
      if (behind) waitingOn.push({ rank: r, clock: c });
    }
    return { shard: this.opts.shard, reader: oldest.rank, clock: oldest.clock, waitedMs: now - oldest.since, waitingOn };
  }

  private clockReply(to: Buffer, seq: number, clock: number): Outgoing {
    const o = this.reply(to, MsgType.ACK, seq, []);
    o.header.clock = clock;
    return o;
  }

  private checkCoordinator(h: Header): void {
    if (h.rank !== -1) throw new WireError("rank", `${typeName(h.type)} is only accepted from the coordinator (rank -1), got rank ${h.rank}`);
    if ((h.flags & ~Flag.AT_CLOCK) !== 0) throw new WireError("flags", `${typeName(h.type)} accepts only the AT_CLOCK flag, got ${h.flags}`);
    if (h.status !== 0) throw new WireError("status", `a request carries status 0, got ${h.status}`);
  }

  private expectNoPayload(h: Header, payload: Buffer[]): void {
    if (payload.length !== 0 || h.byteLength !== 0)
      throw new WireError("payload-length", `${typeName(h.type)} carries no payload, got ${payload.length} frames / ${h.byteLength} bytes`);
  }

  private holdEarly(rank: number, g: Float32Array): Float32Array {
    const buf = (this.earlyCopies[rank] ??= allocF32(g.length));
    buf.set(g);
    return buf;
  }

  /** Apply or aggregate one gradient; returns the staleness it was applied at. */
  private push(h: Header, payload: Buffer[]): number {
    const { start, end } = this.opts.range;
    if (h.rangeStart !== start || h.rangeEnd !== end)
      throw new WireError("range", `range [${h.rangeStart}, ${h.rangeEnd}) is not this shard's range [${start}, ${end})`);
    if (h.dtype !== DType.F32) throw new WireError("dtype", `gradient dtype ${h.dtype} is not float32`);
    if (payload.length !== 1) throw new WireError("frames", `a push carries exactly one tensor frame, got ${payload.length}`);
    const frame = payload[0]!;
    const expected = (end - start) * 4;
    const viaShm = (h.flags & Flag.SHM) !== 0;
    if (viaShm) {
      const slot = decodeShmRef(frame);
      if (slot !== 0) throw new WireError("shm-ref", `a pushed gradient's shared-memory reference must name slot 0, got ${slot}`);
      if (h.byteLength !== expected) throw new WireError("payload-length", `gradient of ${h.byteLength} bytes in shared memory, expected ${expected}`);
    } else if (h.byteLength !== expected || frame.byteLength !== expected)
      throw new WireError("payload-length", `gradient of ${frame.byteLength} bytes (header says ${h.byteLength}), expected ${expected}`);
    if (h.clock !== this.clocks[h.rank])
      throw new WireError("clock", `worker ${h.rank} pushed clock ${h.clock}, expected ${this.clocks[h.rank]}`);
    // A worker's first push after a restart may carry a version of the process before the crash.
    const rejoin = this.rejoining.delete(h.rank);
    if (h.version > this.version && !rejoin) throw new WireError("version", `gradient computed from version ${h.version}, but the shard is at ${this.version}`);
    // With SIMD, the gradient is copied into the kernels' memory (0.28 ms per 8 MiB), where the
    // check, the sum and the update run 2-8x faster than on the frame in JavaScript.
    // A sync gradient ahead of its turn in the sum is copied straight into its rank's buffer.
    const aggregate = this.opts.mode.pushPolicy !== "apply";
    const ahead = aggregate && h.rank > this.nextRank && this.early[h.rank] === null;
    const into = ahead ? (this.earlyCopies[h.rank] ??= allocF32(expected / 4)) : this.scratch;
    let g: Float32Array;
    if (viaShm) {
      // straight from the worker's file into the kernels' memory: the one copy a frame also needs
      g = into.length === expected / 4 ? into : into.subarray(0, expected / 4);
      this.opts.shm!.read(gradientFile(h.rank, this.opts.shard), g);
      this.bytesReceived += expected;
    } else g = simdEnabled() ? f32Copy(frame, into) : f32View(frame, this.scratch);
    if (!allFinite(g)) {
      this.rejectedGradients++;
      throw new WireError("non-finite", `gradient from worker ${h.rank} at clock ${h.clock} contains NaN or Infinity`);
    }
    const clip = this.opts.gradClip ?? 0;
    if (clip > 0) {
      let ss = 0;
      for (let i = 0; i < g.length; i++) ss += g[i]! * g[i]!;
      const norm = Math.sqrt(ss);
      if (norm > clip) {
        // Scale in place: g is this message's own frame (or the scratch copy of it).
        const f = clip / norm;
        for (let i = 0; i < g.length; i++) g[i] = g[i]! * f;
        this.clippedGradients++;
      }
    }

    const t0 = performance.now();
    const staleness = Math.max(0, this.version - h.version);
    this.staleness.add(staleness);
    if (this.opts.mode.pushPolicy === "apply") {
      // By default one gradient is 1/N of a global step: scale the step (not the gradient) so
      // that Adam, which is invariant to the gradient's scale, also moves 1/N as far per arrival.
      const lr = learningRate(this.opts.optimizer, Math.floor(this.appliedGradients / this.workers));
      this.optimizer.apply(this.weights, g, 1, lr * asyncStepScale(this.opts.optimizer.asyncLrScale, this.workers, staleness));
      this.appliedGradients++;
      this.version++;
      if (this.everyCrossed(this.appliedGradients)) this.checkpointDue = true;
    } else {
      // Sum in rank order whatever the arrival order, so that a sync run's weights are the same
      // bit for bit from run to run (float addition is not associative). A gradient that arrives
      // ahead of its turn is copied into that rank's buffer (allocated once) until its turn comes:
      // keeping the received frame instead would let it outlive the minor GCs that free frames
      // young (transport/young-gc.ts), and such frames add up to full collections.
      if (h.rank < this.nextRank || this.early[h.rank] !== null) {
        // Only after a restart (rejoinBarrier): a worker a clock ahead pushes the next round
        // before this one has closed. Its gradient waits for that round.
        this.nextRound[h.rank] = Float32Array.from(g);
      } else {
        this.early[h.rank] = h.rank === this.nextRank || g === this.earlyCopies[h.rank] ? g : this.holdEarly(h.rank, g);
        this.advanceAggregate();
      }
    }
    this.applyMs += performance.now() - t0;
    this.clocks[h.rank]!++;
    return staleness;
  }

  /**
   * Sum the gradients of the current clock in rank order as far as they have come, skipping ranks
   * that left (or join later); apply their mean once every contributing rank's is in. Gradients
   * held for the next round (after a restart) then take their turn.
   */
  private advanceAggregate(): void {
    for (let r = this.nextRank; r < this.workers; r++) {
      if (!this.contributes(r)) {
        this.nextRank = r + 1;
        continue;
      }
      const next = this.early[r];
      if (!next) break;
      if (this.summed === 0) this.accum.set(next);
      else addInto(this.accum, next);
      this.summed++;
      this.early[r] = null;
      this.nextRank = r + 1;
    }
    if (this.nextRank === this.workers) {
      if (this.summed > 0) {
        this.optimizer.apply(this.weights, this.accum, 1 / this.summed, learningRate(this.opts.optimizer, this.version));
        this.appliedGradients += this.summed;
        this.version++;
        if (this.everyCrossed(this.version)) this.checkpointDue = true;
      }
      this.nextRank = 0;
      this.summed = 0;
      let held = false;
      for (let r = 0; r < this.workers; r++) {
        const g = this.nextRound[r];
        if (!g) continue;
        this.early[r] = g;
        this.nextRound[r] = null;
        held = true;
      }
      if (held) this.advanceAggregate();
    }
  }

  private everyCrossed(n: number): boolean {
    const every = this.opts.checkpointEvery ?? 0;
    return every > 0 && n % every === 0;
  }

  private read(to: Buffer, rank: number, clock: number, seq: number, now: number, staleness = 0): Outgoing[] {
    this.pending.push({ to, rank, clock, seq, since: now, staleness });
    return this.release(now);
  }

  /** Whatever the clocks, a pause or a stop now allow: held snapshots, then held reads. */
  private release(now: number): Outgoing[] {
    return [...this.releaseSnapshots(), ...this.releaseReads(now)];
  }

  /** Snapshots asked for at a clock that every worker has now reached. */
  private releaseSnapshots(): Outgoing[] {
    if (this.pendingSnapshots.length === 0) return [];
    const min = this.minClock();
    const out: Outgoing[] = [];
    this.pendingSnapshots = this.pendingSnapshots.filter((p) => {
      if (!this.stopping && p.clock > min) return true;
      out.push(this.weightsReply(p.to, p.seq, 0));
      return false;
    });
    return out;
  }

  /** Answer every pending read that the mode now allows (all of them once stopping). */
  private releaseReads(now: number): Outgoing[] {
    if (this.paused || this.pending.length === 0) return [];
    const out: Outgoing[] = [];
    const still: PendingRead[] = [];
    for (const r of this.pending) {
      const held = this.holdFrom !== null && r.clock >= this.holdFrom;
      if (this.stopping || (!held && this.opts.mode.canRead(this, r.rank, r.clock))) {
        this.readGap.add(Math.max(0, r.clock - this.minClock()));
        let flags = this.stopping ? Flag.STOPPING : 0;
        if (now > r.since) {
          this.readsWaited++;
          this.readWaitMs += now - r.since;
          flags |= Flag.WAITED;
        }
        out.push(this.weightsReply(r.to, r.seq, flags, r.clock, r.staleness, r.rank));
      } else still.push(r);
    }
    this.pending = still;
    return out;
  }

  /**
   * The weights at the current version, copied once per version into a reply buffer that every
   * reader of that version shares. zeromq.js sends large frames zero-copy, so a buffer handed to
   * send() is only rewritten once every worker that received it has sent its next message (it
   * then has the data). Snapshots for the coordinator get their own copy.
   */
  private weightsReply(to: Buffer, seq: number, flags: number, clock = 0, staleness = 0, reader = -1): Outgoing {
    if (reader >= 0 && this.shmReader[reader] && this.shmReplies) {
      const slot = this.shmReplies.forReader(reader, this.version, this.weights);
      this.bytesSent += this.weights.byteLength;
      return this.weightsOutgoing(to, seq, flags | Flag.SHM, clock, staleness, encodeShmRef(slot), this.weights.byteLength);
    }
    const buf = reader >= 0 ? this.replies.forReader(reader, this.version, this.weights) : copyOf(this.weights);
    return this.weightsOutgoing(to, seq, flags, clock, staleness, buf, buf.byteLength);
  }

  private weightsOutgoing(to: Buffer, seq: number, flags: number, clock: number, staleness: number, frame: Buffer, byteLength: number): Outgoing {
    const { start, end } = this.opts.range;
    const header = makeHeader(MsgType.WEIGHTS, {
      runId: this.opts.runId,
      rank: -1,
      clock,
      version: this.version,
      rangeStart: start,
      rangeEnd: end,
      dtype: DType.F32,
      flags,
      status: Math.min(0xffff, staleness),
      byteLength,
      seq,
    });
    this.bytesSent += frame.byteLength + 40;
    return { to, header, frames: [frame] };
  }

  private reply(to: Buffer, type: MsgType, seq: number, frames: Buffer[], dtype: DType = DType.NONE): Outgoing {
    let n = 0;
    for (const f of frames) n += f.byteLength;
    this.bytesSent += n + 40;
    return { to, header: makeHeader(type, { runId: this.opts.runId, rank: -1, seq, dtype, byteLength: n, version: this.version }), frames };
  }

  private errorReply(to: Buffer, h: Header | undefined, err: WireError): Outgoing {
    return this.reply(to, MsgType.ERROR, h?.seq ?? 0, [Buffer.from(err.message), Buffer.from(err.reason)], DType.UTF8);
  }

  stats(): ShardStats {
    return {
      shard: this.opts.shard,
      version: this.version,
      appliedGradients: this.appliedGradients,
      clocks: Array.from(this.clocks),
      left: this.live.flatMap((l, r) => (l ? [] : [r])),
      staleness: this.staleness.toJSON(),
      readGap: this.readGap.toJSON(),
      readsWaited: this.readsWaited,
      readWaitSeconds: this.readWaitMs / 1000,
      errors: { ...this.errors },
      bytesReceived: this.bytesReceived,
      bytesSent: this.bytesSent,
      applySeconds: this.applyMs / 1000,
      rejectedGradients: this.rejectedGradients,
      clippedGradients: this.clippedGradients,
      checkpoints: this.checkpoints,
      restoredFrom: this.restoredFrom,
      lostUpdates: this.lostUpdates,
    };
  }
}

function leftRank(h: Header, frame: Buffer | undefined): number {
  if (h.dtype !== DType.JSON || !frame) throw new WireError("payload-length", "WORKER_LEFT carries a JSON body {rank}");
  let body: unknown;
  try {
    body = JSON.parse(frame.toString("utf8"));
  } catch {
    throw new WireError("json", "WORKER_LEFT body is not JSON");
  }
  const rank = typeof body === "object" && body !== null ? (body as { rank?: unknown }).rank : undefined;
  return typeof rank === "number" ? rank : NaN;
}

function decodeChecked(head: Buffer | undefined, runId: number): Header {
  const h = decodeHeader(head);
  if (h.runId !== runId) throw new WireError("run-id", `run id ${h.runId} is not this run's (${runId})`);
  return h;
}

function copyOf(w: Float32Array): Buffer {
  const buf = Buffer.allocUnsafeSlow(w.byteLength);
  buf.set(new Uint8Array(w.buffer, w.byteOffset, w.byteLength));
  return buf;
}

interface ReplyBuffer<T> {
  buf: T;
  version: number;
  readers: number;
}

/**
 * Reply buffers (or shared-memory slots) reused across versions. Touching fresh memory costs
 * ~11 us per 4 KiB page on this kind of machine (a fresh 16 MiB buffer: ~45 ms), so buffers go
 * back to a free list instead of to the garbage collector.
 */
class ReplyBuffers<T> {
  private current: ReplyBuffer<T> | null = null;
  private readonly free: T[] = [];
  private readonly held = new Map<number, ReplyBuffer<T>>();

  constructor(
    private readonly make: () => T,
    private readonly fill: (buf: T, weights: Float32Array) => void,
  ) {}

  forReader(rank: number, version: number, weights: Float32Array): T {
    let cur = this.current;
    if (cur === null || cur.version !== version) {
      if (cur !== null && cur.readers === 0) this.free.push(cur.buf);
      const buf = this.free.pop() ?? this.make();
      this.fill(buf, weights);
      cur = { buf, version, readers: 0 };
      this.current = cur;
    }
    this.release(rank);
    cur.readers++;
    this.held.set(rank, cur);
    return cur.buf;
  }

  release(rank: number): void {
    const rb = this.held.get(rank);
    if (!rb) return;
    this.held.delete(rank);
    rb.readers--;
    if (rb.readers === 0 && rb !== this.current) this.free.push(rb.buf);
  }
}
