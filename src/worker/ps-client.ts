import type { KeyRange } from "../ps/key-range.js";
import { f32Frame, f32View } from "../transport/frames.js";
import { DType, Flag, makeHeader, MsgType } from "../transport/header.js";
import { RemoteError, type Reply } from "../transport/peer-client.js";
import { ErrorCode, PsError } from "../util/errors.js";
import { ShardPeer } from "../transport/shard-peer.js";
import { decodeShmRef, encodeShmRef, gradientFile, SHM_MIN_BYTES, type ShmFiles, weightsFile, weightsFilePrefix } from "../transport/shm.js";
import type { GradientExchange, StepResult } from "./exchange.js";

export interface ShardEndpoint {
  shard: number;
  endpoint: string;
  range: KeyRange;
}

/** staleness: the max over shards of the staleness the push was applied at */
export type PushPullResult = StepResult;

/**
 * A worker's view of the sharded parameter server: one DEALER per shard, and the flat weight
 * vector that replies are copied into (one memcpy per shard; nothing else is allocated per step).
 */
export class ParameterClient implements GradientExchange {
  private readonly clients: ShardPeer[];
  /** weights version of each shard that `weights` holds */
  readonly versions: number[];
  /** gradients each shard has acknowledged (answered) from this worker: the clock a restarted shard resumes it at */
  readonly acked: number[];
  /** tensor bytes that went through shared-memory files (--transport shm), counted as sent / received */
  private shmSent = 0;
  private shmReceived = 0;
  private readonly shmRef = encodeShmRef(0);
  private readonly shm: ShmFiles | null;

  /** the shared-memory files when shard k's tensors go through them (large enough ranges only), else null */
  private shmFor(k: number): ShmFiles | null {
    const s = this.shards[k]!;
    return (s.range.end - s.range.start) * 4 >= SHM_MIN_BYTES ? this.shm : null;
  }

  /** `shm`: the run's shared-memory files (--transport shm): gradients are written there and weights read from there */
  constructor(
    private readonly runId: number,
    private readonly rank: number,
    private readonly shards: readonly ShardEndpoint[],
    readonly weights: Float32Array,
    timeoutMs: number,
    shm: ShmFiles | null = null,
  ) {
    this.shm = shm;
    this.clients = shards.map((s) => new ShardPeer(`server shard ${s.shard}`, s.endpoint, timeoutMs));
    this.versions = shards.map(() => 0);
    this.acked = shards.map(() => 0);
  }

  /** Shard k died: forget whatever it might still answer; its requests wait for shardUp. */
  shardDown(k: number): void {
    this.clients[k]?.down();
    // a restarted shard writes its weights slots again: open them afresh
    const s = this.shards[k];
    if (this.shm && s) this.shm.forget(weightsFilePrefix(s.shard));
  }

  /** Shard k is serving again at `endpoint`: send it what was in flight. */
  async shardUp(k: number, endpoint: string): Promise<void> {
    await this.clients[k]?.up(endpoint);
  }

  /** One request to shard k; `acked[k]` moves to `clock` only when the answer is from the live shard. */
  private async requestShard(k: number, header: Parameters<ShardPeer["request"]>[0], payload: Buffer[], clock: number): Promise<Reply> {
    const r = await this.clients[k]!.request(header, payload);
    this.acked[k] = clock;
    return r;
  }

  /** Read the weights for `clock` from every shard (the first read, at clock 0). */
  async pull(clock: number): Promise<PushPullResult> {
    const replies = await Promise.all(
      this.shards.map((s, k) =>
        this.requestShard(k, makeHeader(MsgType.PULL, { runId: this.runId, rank: this.rank, clock, rangeStart: s.range.start, rangeEnd: s.range.end, flags: this.shmFor(k) ? Flag.SHM : 0 }), [], clock),
      ),
    );
    return this.absorb(replies);
  }

  /**
   * A replacement worker takes over its rank (--on-worker-failure wait): every shard proposes the
   * clock it can join at, the latest wins, every shard registers the rank from that clock on (a
   * sync shard already past it refuses, and the round starts again). Returns the join clock; the
   * weights for it are read with pull().
   */
  async join(attempts = 20): Promise<number> {
    const ask = (k: number, clock: number, commit: boolean) =>
      this.clients[k]!.request(makeHeader(MsgType.JOIN, { runId: this.runId, rank: this.rank, clock, flags: commit ? Flag.AT_CLOCK : 0 }));
    let lastRefusal = "";
    for (let i = 0; i < attempts; i++) {
      const proposals = await Promise.all(this.shards.map((_, k) => ask(k, 0, false)));
      const clock = Math.max(...proposals.map((r) => r.header.clock));
      // Every shard answers before the next round (each client has one request in flight at most).
      const commits = await Promise.allSettled(this.shards.map((_, k) => ask(k, clock, true)));
      const refused = commits.flatMap((c) => (c.status === "rejected" ? [c.reason as unknown] : []));
      if (refused.length === 0) return clock;
      for (const err of refused) if (!(err instanceof RemoteError) || err.reason !== "join-late") throw err;
      lastRefusal = (refused[0] as RemoteError).message;
    }
    throw new PsError(ErrorCode.TIMEOUT, `worker ${this.rank}: could not join the shards in ${attempts} rounds (${lastRefusal})`);
  }

  /**
   * Push the gradient computed at `clock` and read the weights for clock + 1, on every shard at
   * once. `computedOn`: the shard versions of the weights the gradient was computed on (the
   * staleness the shards record is measured from them), by default the versions held now.
   */
  async pushPull(clock: number, gradient: Float32Array, computedOn: readonly number[] = this.versions): Promise<PushPullResult> {
    const replies = await Promise.all(
      this.shards.map((s, k) => {
        const slice = gradient.subarray(s.range.start, s.range.end);
        const files = this.shmFor(k);
        const header = makeHeader(MsgType.PUSH_PULL, {
          runId: this.runId,
          rank: this.rank,
          clock,
          version: computedOn[k]!,
          rangeStart: s.range.start,
          rangeEnd: s.range.end,
          dtype: DType.F32,
          byteLength: slice.byteLength,
          flags: files ? Flag.SHM : 0,
        });
        if (!files) return this.requestShard(k, header, [f32Frame(slice)], clock + 1);
        // One request in flight per shard: the file is not rewritten before the shard has read it.
        files.write(gradientFile(this.rank, s.shard), slice);
        this.shmSent += slice.byteLength;
        return this.requestShard(k, header, [this.shmRef], clock + 1);
      }),
    );
    return this.absorb(replies);
  }

  step(clock: number, gradient: Float32Array): Promise<StepResult> {
    return this.pushPull(clock, gradient);
  }

  finalFrames(): Buffer[] {
    return [];
  }

  private absorb(replies: Reply[]): PushPullResult {
    let stopping = false;
    let staleness = 0;
    let waited = false;
    replies.forEach((r, k) => {
      const s = this.shards[k]!;
      const h = r.header;
      const frame = r.frames[0];
      const n = s.range.end - s.range.start;
      const viaShm = (h.flags & Flag.SHM) !== 0;
      if (h.type !== MsgType.WEIGHTS || frame === undefined || h.byteLength !== n * 4 || (!viaShm && frame.byteLength !== n * 4) || h.rangeStart !== s.range.start || h.rangeEnd !== s.range.end)
        throw new Error(`server shard ${s.shard} sent a malformed WEIGHTS reply`);
      if (viaShm) {
        if (!this.shm) throw new Error(`server shard ${s.shard} answered through shared memory, which this worker did not ask for`);
        this.shm.read(weightsFile(s.shard, decodeShmRef(frame)), this.weights.subarray(s.range.start, s.range.end));
        this.shmReceived += n * 4;
      } else {
        // Copy out of the received frame: it belongs to libzmq and must not be kept or re-sent.
        this.weights.set(f32View(frame), s.range.start);
      }
      this.versions[k] = h.version;
      stopping ||= (h.flags & Flag.STOPPING) !== 0;
      waited ||= (h.flags & Flag.WAITED) !== 0;
      staleness = Math.max(staleness, h.status);
    });
    return { stopping, staleness, waited };
  }

  get bytesSent(): number {
    return this.clients.reduce((a, c) => a + c.bytesSent, this.shmSent);
  }

  get bytesReceived(): number {
    return this.clients.reduce((a, c) => a + c.bytesReceived, this.shmReceived);
  }

  close(): void {
    for (const c of this.clients) c.close();
    this.shm?.close();
  }
}
