import { f32Frame } from "../transport/frames.js";
import { MsgType } from "../transport/header.js";
import { ErrorCode, PsError } from "../util/errors.js";
import type { Coordinator } from "./coordinator.js";
import type { RoleLauncher } from "./launcher.js";
import type { ConfigMsg, MapMsg, ReadyMsg, RestartAck } from "./messages.js";

/** The coordinator's side of a shard restart: its own sockets to the shard (the evaluator). */
export interface RestartableShards {
  shardDown(k: number): void;
  /** the shard serves again at `endpoint`: restore what the coordinator holds it to, resend what was in flight */
  shardUp(k: number, endpoint: string): Promise<void>;
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
 *     answers with the number of its gradients the shard had acknowledged;
 *  2. a new process is started; its CONFIG says: restore the newest valid checkpoint, set the
 *     clocks to the workers', bind the dead shard's endpoint;
 *  3. once it is READY, the coordinator re-arms its evaluation hold on it and resends what it had
 *     in flight, then the workers are told "up" and resend theirs.
 *
 * Restarts run one at a time. Any failure on the way fails the run with an error naming the shard.
 */
export class ShardRestarter {
  readonly records: RestartRecord[] = [];
  private readonly perShard = new Map<number, number>();
  private chain: Promise<void> = Promise.resolve();
  private active = false;

  constructor(
    private readonly coordinator: Coordinator,
    private readonly launcher: RoleLauncher,
    private readonly cfgMsg: ConfigMsg,
    private readonly init: Float32Array,
    private readonly map: MapMsg,
    private readonly shards: RestartableShards,
    private readonly logFile: (k: number) => string,
    private readonly log: (msg: string, fields?: Record<string, unknown>) => void,
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
    this.shards.shardDown(k);
    this.chain = this.chain
      .then(() => this.restart(k))
      .catch((err: unknown) => {
        const msg = err instanceof Error ? err.message : String(err);
        this.coordinator.fail(new PsError(ErrorCode.PEER_LOST, `server shard ${k} could not be restarted: ${msg}`));
      });
    return true;
  }

  private async restart(k: number): Promise<void> {
    const t0 = performance.now();
    const { config } = this.cfgMsg;
    const entry = this.map.servers.find((s) => s.shard === k);
    if (!entry) throw new Error(`no endpoint recorded for server shard ${k}`);
    this.log("server shard restarting", { shard: k });

    const down: MapMsg = { servers: [], restart: { shard: k, phase: "down" } };
    await this.coordinator.broadcast("worker", MsgType.MAP, down);
    const clocks = new Array<number>(config.workers).fill(0);
    const seen = new Set<number>();
    await this.coordinator.collect(
      MsgType.ACK,
      config.workers,
      config.timeoutMs,
      (ev) => {
        const a = ev.body as RestartAck | null;
        if (ev.peer.role !== "worker" || a?.shard !== k || !Number.isInteger(a.clock) || a.clock < 0)
          throw new PsError(ErrorCode.BAD_MESSAGE, `unexpected answer to shard ${k}'s restart from ${ev.peer.role} ${ev.peer.rank}`);
        clocks[ev.peer.rank] = a.clock;
        seen.add(ev.peer.rank);
      },
      () => [...Array(config.workers).keys()].filter((r) => !seen.has(r)).map((r) => `worker:${r}`),
    );

    this.launcher.start("server", k, this.logFile(k));
    const hello = await this.coordinator.next([MsgType.HELLO], config.timeoutMs);
    if (!hello || hello.peer.role !== "server" || hello.peer.rank !== k) throw new PsError(ErrorCode.TIMEOUT, `no HELLO from the new process of server shard ${k} within ${config.timeoutMs} ms`);
    const range = this.cfgMsg.ranges[k]!;
    const cfg: ConfigMsg = { ...this.cfgMsg, restore: { endpoint: entry.endpoint, workerClocks: clocks } };
    await this.coordinator.send("server", k, MsgType.CONFIG, cfg, [f32Frame(this.init.subarray(range.start, range.end))]);
    const ready = await this.coordinator.next([MsgType.READY], config.timeoutMs);
    if (!ready || ready.peer.role !== "server" || ready.peer.rank !== k) throw new PsError(ErrorCode.TIMEOUT, `server shard ${k}'s new process was not READY within ${config.timeoutMs} ms`);
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
