import { f32Frame } from "../transport/frames.js";
import { MsgType } from "../transport/header.js";
import { ErrorCode, PsError } from "../util/errors.js";
import { type Coordinator, from } from "./coordinator.js";
import type { RoleLauncher } from "./launcher.js";
import type { ConfigMsg, MapMsg, ReadyMsg, RestartAck } from "./messages.js";

/** The coordinator's side of a shard restart: its own sockets to the shard (the evaluator). */
export interface RestartableShards {
  shardDown(k: number): void;
  /** the shard serves again at `endpoint`: restore what the coordinator holds it to, resend what was in flight */
  shardUp(k: number, endpoint: string): Promise<void>;
}

/** What a restart needs to know of the workers' membership (--on-worker-failure, worker-failures.ts). */
export interface WorkerMembership {
  /** rank is out of the run (lost, its replacement not joined yet) */
  isLost(rank: number): boolean;
  /** stop replacements that are joining now; they start again after the restart */
  interruptJoins(): void;
}

export interface RestartRecord {
  shard: number;
  /** checkpoint step the new process was restored from; null: none existed, it started from the initial weights */
  restoredFrom: number | null;
  lostUpdates: number;
  /** checkpoints skipped as corrupt, with why */
  skipped: string[];
  seconds: number;
}

/**
 * Restarts a server shard that died during training (a local run with --checkpoint-every):
 *
 *  1. the coordinator's and the workers' sockets to the shard are dropped ("down"); each worker
 *     answers with the number of its gradients the shard had acknowledged (a worker lost
 *     meanwhile is not waited for: the new process learns it has left);
 *  2. a new process is started; its CONFIG says: restore the newest valid checkpoint, set the
 *     clocks to the workers', bind the dead shard's endpoint;
 *  3. once it is READY, the coordinator re-arms its evaluation hold on it and resends what it had
 *     in flight, then the workers are told "up" and resend theirs.
 *
 * Restarts run one at a time, and never while a replacement worker joins (Coordinator.exclusive):
 * a replacement that is joining when a shard dies is stopped and started again after the restart.
 * Any failure on the way fails the run with an error naming the shard.
 */
export class ShardRestarter {
  readonly records: RestartRecord[] = [];
  private readonly perShard = new Map<number, number>();
  private chain: Promise<void> = Promise.resolve();
  private active = false;
  /** the restart under way: its shard, and whether the process it started has died too */
  private current: { k: number; dead: boolean } | null = null;

  constructor(
    private readonly coordinator: Coordinator,
    private readonly launcher: RoleLauncher,
    private readonly cfgMsg: ConfigMsg,
    private readonly init: Float32Array,
    private readonly map: MapMsg,
    private readonly shards: RestartableShards,
    private readonly logFile: (k: number) => string,
    private readonly log: (msg: string, fields?: Record<string, unknown>) => void,
    private readonly membership: WorkerMembership = { isLost: () => false, interruptJoins: () => undefined },
  ) {}

  /** Restarts are taken only while training runs (from START to the last DONE). */
  setActive(on: boolean): void {
    this.active = on;
  }

  get restarts(): number {
    return this.records.length;
  }

  get lostUpdates(): number {
    return this.records.reduce((a, r) => a + r.lostUpdates, 0);
  }

  /** Wait for restarts under way (before the end of the run reads the shards). */
  settled(): Promise<void> {
    return this.chain;
  }

  /** Server shard k died; true when a restart was started (the caller fails the run otherwise). */
  onExit(k: number): boolean {
    const n = (this.perShard.get(k) ?? 0) + 1;
    if (!this.active || n > this.cfgMsg.config.maxRestarts) return false;
    this.perShard.set(k, n);
    // The new process of a restart under way died: that restart gives way to the next one.
    if (this.current?.k === k) this.current.dead = true;
    // Its heartbeats stop now: the new process registers again with its HELLO.
    this.coordinator.forget("server", k);
    this.shards.shardDown(k);
    const restart = this.coordinator.exclusive(() => this.restart(k)).catch((err: unknown) => {
      const msg = err instanceof Error ? err.message : String(err);
      this.coordinator.fail(new PsError(ErrorCode.PEER_LOST, `server shard ${k} could not be restarted: ${msg}`));
    });
    this.chain = this.chain.then(() => restart);
    // A replacement joining now would wait on the dead shard: it starts again after the restart.
    this.membership.interruptJoins();
    return true;
  }

  private async restart(k: number): Promise<void> {
    const cur = { k, dead: false };
    this.current = cur;
    try {
      await this.restartOnce(k, cur);
    } finally {
      this.current = null;
    }
  }

  private async restartOnce(k: number, cur: { dead: boolean }): Promise<void> {
    const t0 = performance.now();
    const { config } = this.cfgMsg;
    const entry = this.map.servers.find((s) => s.shard === k);
    if (!entry) throw new Error(`no endpoint recorded for server shard ${k}`);
    this.log("server shard restarting", { shard: k });

    const down: MapMsg = { servers: [], restart: { shard: k, phase: "down" } };
    // The workers registered now (not lost, no replacement half-joined: see exclusive) answer.
    const asked = this.coordinator.workerRanks();
    await this.coordinator.broadcast("worker", MsgType.MAP, down);
    const clocks = new Array<number | null>(config.workers).fill(null);
    const deadline = Date.now() + config.timeoutMs;
    const waiting = () => asked.filter((r) => clocks[r] === null && !this.membership.isLost(r));
    const isAck = (ev: { peer: { role: string }; body: unknown }) => ev.peer.role === "worker" && (ev.body as RestartAck | null)?.shard === k;
    const noAnswer = () => new PsError(ErrorCode.TIMEOUT, `no answer to shard ${k}'s restart within ${config.timeoutMs} ms from ${waiting().map((r) => `worker ${r}`).join(", ")}`);
    for (;;) {
      const ev = await this.coordinator.nextUntil([MsgType.ACK], isAck, deadline, () => waiting().length === 0, noAnswer);
      if (!ev) break;
      const a = ev.body as RestartAck;
      if (!Number.isInteger(a.clock) || a.clock < 0) throw new PsError(ErrorCode.BAD_MESSAGE, `worker ${ev.peer.rank} answered shard ${k}'s restart with clock ${String(a.clock)}`);
      clocks[ev.peer.rank] = a.clock;
    }
    // Lost workers (and any that did not answer before it was lost) are out of the run for the new process.
    const left = [...Array(config.workers).keys()].filter((r) => this.membership.isLost(r));
    for (const r of left) clocks[r] = null;

    this.launcher.start("server", k, this.logFile(k));
    // The new process's messages; null when it died meanwhile (the next restart takes over).
    const until = Date.now() + config.timeoutMs;
    const fromNew = (type: MsgType, what: string) =>
      this.coordinator.nextUntil([type], from("server", k), until, () => cur.dead, () =>
        new PsError(ErrorCode.TIMEOUT, `no ${what} from the new process of server shard ${k} within ${config.timeoutMs} ms`),
      );
    const hello = await fromNew(MsgType.HELLO, "HELLO");
    if (!hello) return;
    const range = this.cfgMsg.ranges[k]!;
    const cfg: ConfigMsg = { ...this.cfgMsg, restore: { endpoint: entry.endpoint, workerClocks: clocks, left } };
    await this.coordinator.send("server", k, MsgType.CONFIG, cfg, [f32Frame(this.init.subarray(range.start, range.end))]);
    const ready = await fromNew(MsgType.READY, "READY");
    if (!ready) return;
    const body = ready.body as ReadyMsg;
    const endpoint = body.endpoint ?? entry.endpoint;

    await this.shards.shardUp(k, endpoint);
    const up: MapMsg = { servers: [], restart: { shard: k, phase: "up", endpoint } };
    await this.coordinator.broadcast("worker", MsgType.MAP, up);
    const rec: RestartRecord = {
      shard: k,
      restoredFrom: body.restoredFrom ?? null,
      lostUpdates: body.lostUpdates ?? 0,
      skipped: body.skipped ?? [],
      seconds: (performance.now() - t0) / 1000,
    };
    this.records.push(rec);
    this.log("server shard restarted", rec as unknown as Record<string, unknown>);
  }
}
