import type { WorkerFailurePolicy } from "../config/train-config.js";
import { MsgType } from "../transport/header.js";
import { asError, ErrorCode, PsError } from "../util/errors.js";
import { type Coordinator, from } from "./coordinator.js";
import type { RoleLauncher } from "./launcher.js";
import type { ConfigMsg, MapMsg, MembersMsg } from "./messages.js";

/** One worker failure as summary.json records it. */
export interface WorkerFailureRecord {
  rank: number;
  /** steps the worker had reported when it was lost */
  atStep: number;
  policy: WorkerFailurePolicy;
  error: string;
  /** wait: the replacement joined and took the rank */
  replaced?: boolean;
  replacementPid?: number;
}

export interface WorkerFailuresOptions {
  policy: WorkerFailurePolicy;
  workers: number;
  maxReplacements: number;
  replaceTimeoutMs: number;
  coordinator: Coordinator;
  launcher: RoleLauncher;
  /** the log file of rank's n-th replacement */
  logFile: (rank: number, n: number) => string;
  /** steps rank has reported so far */
  stepOf: (rank: number) => number;
  /** rank has sent DONE */
  isDone: (rank: number) => boolean;
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

/**
 * --on-worker-failure: what the coordinator does when a worker dies, fails or goes silent once
 * training has started. abort fails the run (the error names the worker); shrink lets the others
 * go on (the shards, or the allreduce peer group, stop counting on it); wait does the same until
 * a replacement started for the same rank has joined, within --replace-timeout.
 * Before training starts every failure aborts: there is nothing to go on with yet.
 */
export class WorkerFailures {
  readonly records: WorkerFailureRecord[] = [];
  /** ranks out of the run: lost and not (yet) replaced */
  private readonly lost = new Set<number>();
  private readonly replacing = new Set<number>();
  private readonly replacements = new Map<number, number>();
  /** ranks whose replacement process is started and not yet in the run, with its join's token */
  private readonly joining = new Map<number, number>();
  private joinTokens = 0;
  private armed = false;
  private wake: (() => void) | null = null;
  private wakeup: Promise<void>;
  private chain: Promise<void> = Promise.resolve();
  private replaceChain: Promise<void> = Promise.resolve();
  private cfgMsg: ConfigMsg | null = null;
  private map: MapMsg | null = null;
  /** tell whoever must stop waiting for a lost rank (the shards, or the allreduce survivors) */
  onLeft: ((rank: number) => Promise<void>) | null = null;

  constructor(private readonly o: WorkerFailuresOptions) {
    this.wakeup = new Promise((resolve) => (this.wake = resolve));
    o.coordinator.onWorkerLost = (rank, err) => this.lose(rank, err);
  }

  /** Training has started: from now on a lost worker is handled by the policy. */
  arm(cfgMsg: ConfigMsg, map: MapMsg): void {
    this.cfgMsg = cfgMsg;
    this.map = map;
    this.armed = true;
  }

  /** Training is over: a worker lost from now on fails the run only under abort. */
  disarm(): void {
    this.armed = false;
  }

  get policy(): WorkerFailurePolicy {
    return this.o.policy;
  }

  /** Resolves at the next change of membership (a worker lost or a replacement joined). */
  changed(): Promise<void> {
    return this.wakeup;
  }

  private signal(): void {
    const w = this.wake;
    this.wakeup = new Promise((resolve) => (this.wake = resolve));
    w?.();
  }

  isLost(rank: number): boolean {
    return this.lost.has(rank);
  }

  /** Every rank has finished: done, or lost and not being replaced. */
  finished(isDone: (rank: number) => boolean): boolean {
    for (let r = 0; r < this.o.workers; r++) if (!isDone(r) && !(this.lost.has(r) && !this.replacing.has(r))) return false;
    return true;
  }

  /** Ranks still taking part (not lost). */
  liveRanks(): number[] {
    const out: number[] = [];
    for (let r = 0; r < this.o.workers; r++) if (!this.lost.has(r)) out.push(r);
    return out;
  }

  /** The coordinator lost worker `rank`: true when the run goes on without it. */
  private lose(rank: number, err: Error): boolean {
    const { coordinator, launcher } = this.o;
    if (this.o.policy === "abort" || !launcher.release) return false;
    if (this.armed === false && !this.o.isDone(rank)) return false;
    launcher.release("worker", rank);
    coordinator.forget("worker", rank);
    if (this.o.isDone(rank)) return true; // it had finished its work: nothing is missing
    if (this.lost.has(rank) && !this.replacing.has(rank)) return true;
    this.replacing.delete(rank);
    this.lost.add(rank);
    const rec: WorkerFailureRecord = { rank, atStep: this.o.stepOf(rank), policy: this.o.policy, error: err.message };
    this.records.push(rec);
    this.o.log("worker lost", { rank, atStep: rec.atStep, policy: this.o.policy, error: err.message });
    if (this.o.policy === "wait") {
      const n = (this.replacements.get(rank) ?? 0) + 1;
      if (n > this.o.maxReplacements) {
        const how = n === 1 ? "may not be replaced" : `was lost again after ${n - 1} replacement${n === 2 ? "" : "s"}`;
        coordinator.fail(new PsError(ErrorCode.PEER_LOST, `worker ${rank} ${how} (--max-replacements ${this.o.maxReplacements}): ${err.message}`));
        return true;
      }
      this.replacements.set(rank, n);
      this.replacing.add(rank);
    } else if (this.lost.size === this.o.workers) {
      coordinator.fail(new PsError(ErrorCode.PEER_LOST, `no worker is left (--on-worker-failure shrink); the last one lost: ${err.message}`));
      return true;
    }
    // The shards (or the peer group) stop waiting for it first, in the order of the failures;
    // under shrink the survivors then learn who is left, to share the data from their next epoch.
    this.chain = this.chain
      .then(() => this.onLeft?.(rank))
      .then(() => (this.o.policy === "shrink" ? this.announceMembers() : undefined))
      .catch((e: unknown) => this.failRun(e));
    if (this.o.policy === "wait") this.queueReplacement(rank, this.replacements.get(rank)!, rec);
    this.signal();
    return true;
  }

  /**
   * One replacement joins at a time, and never during a shard restart (Coordinator.exclusive):
   * both tell the workers and the shards who is where.
   */
  private queueReplacement(rank: number, n: number, rec: WorkerFailureRecord): void {
    const { coordinator } = this.o;
    this.replaceChain = this.replaceChain
      .then(() => this.chain)
      .then(() => coordinator.exclusive(() => this.replace(rank, n, rec)))
      .catch((e: unknown) => this.failRun(e));
  }

  /**
   * A server shard died: a replacement that is joining now would wait on it (its JOIN, its first
   * pull). Stop it and start it again once the restart is done; this does not count as a
   * replacement of the rank.
   */
  interruptJoins(): void {
    for (const [rank] of this.joining) {
      this.joining.delete(rank);
      this.o.launcher.release?.("worker", rank);
      this.o.coordinator.forget("worker", rank);
      this.o.coordinator.drop(from("worker", rank));
      const rec = this.records.filter((r) => r.rank === rank).pop()!;
      this.o.log("replacement interrupted by a shard restart; it starts again after it", { rank });
      // It may have joined some shards already: they stop counting on it until the next one joins.
      this.chain = this.chain.then(() => this.onLeft?.(rank)).catch((e: unknown) => this.failRun(e));
      this.queueReplacement(rank, this.replacements.get(rank)!, rec);
    }
  }

  /** Start a replacement for `rank` and bring it into the run: HELLO, CONFIG, MAP, READY, START. */
  private async replace(rank: number, n: number, rec: WorkerFailureRecord): Promise<void> {
    // A replacement that is itself lost before it joins makes this task stale: the next one takes
    // over; so does one interrupted by a shard restart (interruptJoins).
    const token = ++this.joinTokens;
    const stale = () => this.replacements.get(rank) !== n || !this.replacing.has(rank) || this.joining.get(rank) !== token;
    this.joining.set(rank, token);
    try {
      await this.join(rank, n, rec, stale);
    } finally {
      if (this.joining.get(rank) === token) this.joining.delete(rank);
    }
  }

  private async join(rank: number, n: number, rec: WorkerFailureRecord, stale: () => boolean): Promise<void> {
    const { coordinator, launcher } = this.o;
    if (stale()) return;
    const t0 = Date.now();
    const deadline = t0 + this.o.replaceTimeoutMs;
    const late = (what: string) =>
      new PsError(ErrorCode.TIMEOUT, `worker ${rank}'s replacement sent no ${what} within ${this.o.replaceTimeoutMs} ms (--replace-timeout); the run cannot go on with rank ${rank} missing under --on-worker-failure wait`);
    const waitFor = (type: MsgType, what: string) => coordinator.nextUntil([type], from("worker", rank), deadline, stale, () => late(what));
    this.o.log("starting a replacement", { rank, replacement: n });
    launcher.start("worker", rank, this.o.logFile(rank, n));
    const hello = await waitFor(MsgType.HELLO, "HELLO");
    if (!hello) return;
    rec.replacementPid = hello.peer.pid;
    await coordinator.send("worker", rank, MsgType.CONFIG, { ...this.cfgMsg!, replacement: true });
    await coordinator.send("worker", rank, MsgType.MAP, this.map!);
    if (!(await waitFor(MsgType.READY, "READY"))) return;
    if (stale()) return;
    await coordinator.send("worker", rank, MsgType.START);
    this.replacing.delete(rank);
    this.lost.delete(rank);
    rec.replaced = true;
    this.o.log("replacement joined", { rank, replacement: n, pid: hello.peer.pid, ms: Date.now() - t0 });
    this.signal();
  }

  private async announceMembers(): Promise<void> {
    const live = this.liveRanks();
    const msg: MembersMsg = { live };
    for (const r of live) if (!this.o.isDone(r)) await this.o.coordinator.send("worker", r, MsgType.MEMBERS, msg).catch(() => undefined);
  }

  /** Fail the run with whatever a chained step threw. */
  private failRun(e: unknown): void {
    this.o.coordinator.fail(asError(e));
  }

  /** Wait until every notification about lost ranks has been delivered. */
  async settled(): Promise<void> {
    await this.chain;
  }
}
