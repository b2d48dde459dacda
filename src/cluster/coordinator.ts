import type { Router } from "zeromq";
import { checkRoleProof } from "../transport/curve-keys.js";
import { messages } from "../transport/receive.js";
import { bindSocket, curveKeys, newBoundRouter, noteRoleRefused, refusalHint } from "../transport/sockets.js";
import { ErrorCode, PsError } from "../util/errors.js";
import { parseJsonFrame } from "../transport/frames.js";
import { decodeHeader, DType, type Header, makeHeader, MsgType, typeName } from "../transport/header.js";
import { controlFrames, type FailMsg, type HelloMsg, isObject, type Role } from "./messages.js";

export interface PeerInfo {
  role: Role;
  rank: number;
  pid: number;
  routingId: Buffer;
  lastSeen: number;
}

export interface ControlEvent {
  peer: PeerInfo;
  header: Header;
  body: unknown;
  frames: Buffer[];
}

/** Which events a waiter takes (beyond their type). */
export type EventFilter = (ev: ControlEvent) => boolean;

/** Events from one role process. */
export function from(role: Role, rank: number): EventFilter {
  return (ev) => ev.peer.role === role && ev.peer.rank === rank;
}

export function peerName(role: Role, rank: number): string {
  return role === "server" ? `server shard ${rank}` : `worker ${rank}`;
}

/**
 * The coordinator's control plane: a ROUTER that every role process connects to. It registers
 * peers by (role, rank), routes their messages to whoever waits for them, watches heartbeats,
 * and turns any lost peer into one error that names it (`failure` rejects; nothing hangs).
 */
export class Coordinator {
  private readonly router: Router;
  private readonly peers = new Map<string, PeerInfo>();
  private readonly expected = new Set<string>();
  private readonly queue: ControlEvent[] = [];
  /** callers of next(), each with the message types (and peers) it takes, oldest first */
  private waiters: { types: readonly MsgType[]; match: EventFilter | undefined; take: (e: ControlEvent) => void }[] = [];
  /** membership changes (a shard restart, a replacement joining) run one at a time */
  private exclusiveChain: Promise<unknown> = Promise.resolve();
  private watchdog: NodeJS.Timeout | null = null;
  private failWith: ((e: Error) => void) | null = null;
  /** rejects with the first fatal error of the run (a peer failed, exited or went silent) */
  readonly failure: Promise<never>;
  failed: Error | null = null;
  endpoint = "";
  private closed = false;
  /**
   * Worker failures: called when a worker fails, exits or goes silent; returning true means the
   * run goes on without it (--on-worker-failure shrink|wait), false fails the run as before.
   */
  onWorkerLost: ((rank: number, err: Error) => boolean) | null = null;
  /** a server shard's report of a read held past the heartbeat timeout (MsgType.STALL) */
  onStall: ((peer: PeerInfo, body: unknown) => void) | null = null;

  constructor(
    private readonly runId: number,
    private readonly timeoutMs: number,
    /** the largest frame a role process may send (0: no limit); a larger one drops its connection */
    maxMessageBytes = 0,
  ) {
    this.router = newBoundRouter("coordinator", { linger: 0, mandatory: false, ...(maxMessageBytes > 0 ? { maxMessageSize: maxMessageBytes } : {}) });
    this.failure = new Promise<never>((_, reject) => {
      this.failWith = reject;
    });
    this.failure.catch(() => undefined);
  }

  async bind(address: string): Promise<string> {
    await bindSocket(this.router, address);
    this.endpoint = this.router.lastEndpoint ?? address;
    void this.receiveLoop();
    return this.endpoint;
  }

  expect(role: Role, rank: number): void {
    this.expected.add(`${role}:${rank}`);
  }

  /** Fail the run with `err` (first failure wins). */
  fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.failWith?.(err);
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const [id, head, ...rest] of messages(this.router)) {
        if (id === undefined) continue;
        let header: Header;
        let body: unknown = null;
        try {
          header = decodeHeader(head);
          if (header.dtype === DType.JSON) body = parseJsonFrame(rest[0], typeName(header.type));
        } catch {
          continue; // not one of ours: ignore (role processes only send well-formed messages)
        }
        if (header.type === MsgType.HELLO) {
          this.register(id, body);
          continue;
        }
        const peer = [...this.peers.values()].find((p) => p.routingId.equals(id));
        if (!peer) continue;
        peer.lastSeen = Date.now();
        if (header.type === MsgType.HEARTBEAT) continue;
        if (header.type === MsgType.FAIL) {
          const f = body as FailMsg;
          this.lose(peer, new PsError(ErrorCode.PEER_LOST, `${peerName(peer.role, peer.rank)} failed: ${isObject(f) ? String(f.message) : "unknown error"}`));
          continue;
        }
        if (header.type === MsgType.STALL) {
          this.onStall?.(peer, body);
          continue;
        }
        this.dispatch({ peer, header, body, frames: rest });
      }
    } catch (err) {
      if (!this.closed) this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private register(id: Buffer, body: unknown): void {
    if (!isObject(body)) return;
    const h = body as unknown as HelloMsg;
    if ((h.role !== "server" && h.role !== "worker") || !Number.isInteger(h.rank)) return;
    const key = `${h.role}:${h.rank}`;
    if (!this.expected.has(key)) return;
    // With CURVE the allowlist admits the client's key; the proof binds it to the role it claims.
    const keys = curveKeys();
    if (keys && !checkRoleProof(keys, h.role, h.rank, h.proof)) {
      noteRoleRefused(`${h.role} ${h.rank}`);
      return;
    }
    this.peers.set(key, { role: h.role, rank: h.rank, pid: h.pid, routingId: Buffer.from(id), lastSeen: Date.now() });
    this.dispatch({ peer: this.peers.get(key)!, header: makeHeader(MsgType.HELLO), body, frames: [] });
  }

  /** Hand an event to the oldest waiter that takes it, or queue it. */
  private dispatch(ev: ControlEvent): void {
    const i = this.waiters.findIndex((w) => w.types.includes(ev.header.type) && (!w.match || w.match(ev)));
    if (i >= 0) this.waiters.splice(i, 1)[0]!.take(ev);
    else this.queue.push(ev);
  }

  /** Wait for every expected peer's HELLO; the error names the ones that never came. */
  async waitForHellos(timeoutMs = this.timeoutMs): Promise<void> {
    const seen = new Set<string>();
    await this.collect(MsgType.HELLO, this.expected.size, timeoutMs, (ev) => seen.add(`${ev.peer.role}:${ev.peer.rank}`), () =>
      [...this.expected].filter((k) => !seen.has(k)),
    );
  }

  /**
   * Wait for `count` messages of `type`; `missing()` names who has not sent one when the
   * deadline passes. Messages of other types stay queued.
   */
  async collect(type: MsgType, count: number, timeoutMs: number, each: (ev: ControlEvent) => void, missing: () => string[]): Promise<void> {
    let got = 0;
    const deadline = Date.now() + timeoutMs;
    while (got < count) {
      const remaining = deadline - Date.now();
      const ev = remaining > 0 ? await this.next([type], remaining) : null;
      if (!ev) {
        const names = missing().map((k) => {
          const [role, rank] = k.split(":");
          return peerName(role as Role, Number(rank));
        });
        throw new PsError(ErrorCode.TIMEOUT, `no ${typeName(type)} within ${timeoutMs} ms from ${names.join(", ") || "?"}${refusalHint()}`);
      }
      each(ev);
      got++;
    }
  }

  /**
   * The next event of one of `types` (and, with `match`, one it accepts: others stay for other
   * callers), or null at the deadline; rejects when the run fails.
   */
  async next(types: readonly MsgType[], timeoutMs: number, match?: EventFilter): Promise<ControlEvent | null> {
    const i = this.queue.findIndex((e) => types.includes(e.header.type) && (!match || match(e)));
    if (i >= 0) return this.queue.splice(i, 1)[0]!;
    if (this.failed) throw this.failed;
    // Several callers may wait at once for different types (the training loop for progress, an
    // evaluation for a snapshot) or peers (a shard restart and a replacement worker, each for
    // its own HELLO): each event goes to the oldest waiter that takes it.
    const waiter = { types, match, take: (_: ControlEvent) => undefined as void };
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      new Promise<ControlEvent | null>((resolve) => {
        waiter.take = resolve;
        this.waiters.push(waiter);
        timer = setTimeout(() => {
          // Leave the list before resolving, so no event can be handed to a finished wait.
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve(null);
        }, timeoutMs);
      }),
      this.failure,
    ]).finally(() => {
      clearTimeout(timer);
      this.waiters = this.waiters.filter((w) => w !== waiter);
    });
  }

  /**
   * The next event of one of `types` that `match` takes, polling until `until` (a Date.now()
   * time): null as soon as `cancelled()` holds (checked before each poll of at most 250 ms),
   * `late()`'s error once the deadline has passed; rejects when the run fails.
   */
  async nextUntil(
    types: readonly MsgType[],
    match: EventFilter,
    until: number,
    cancelled: () => boolean,
    late: () => Error,
  ): Promise<ControlEvent | null> {
    for (;;) {
      if (cancelled()) return null;
      const remaining = until - Date.now();
      if (remaining <= 0) throw late();
      const ev = await this.next(types, Math.min(remaining, 250), match);
      if (ev) return ev;
    }
  }

  /**
   * Run `f` when no other membership change runs: a shard restart and a replacement worker's
   * join must not interleave (each tells the workers or the shards who is where).
   */
  exclusive<T>(f: () => Promise<T>): Promise<T> {
    const run = this.exclusiveChain.then(f, f);
    this.exclusiveChain = run.catch(() => undefined);
    return run;
  }

  async send(role: Role, rank: number, type: MsgType, body: unknown = null, extra: Buffer[] = []): Promise<void> {
    const peer = this.peers.get(`${role}:${rank}`);
    if (!peer) throw new PsError(ErrorCode.PEER_LOST, `${peerName(role, rank)} is not registered`);
    await this.router.send([peer.routingId, ...controlFrames(type, this.runId, -1, body, extra)]);
  }

  async broadcast(role: Role | null, type: MsgType, body: unknown = null): Promise<void> {
    for (const p of this.peers.values()) if (role === null || p.role === role) await this.send(p.role, p.rank, type, body);
  }

  /** A peer is lost: a worker may be let go (onWorkerLost), anything else fails the run. */
  private lose(peer: PeerInfo, err: Error): void {
    if (peer.role === "worker" && this.onWorkerLost?.(peer.rank, err)) return;
    this.fail(err);
  }

  /** A role process was lost outside the control channel (it exited): the same rule as lose(). */
  lost(role: Role, rank: number, err: Error): void {
    if (role === "worker" && this.onWorkerLost?.(rank, err)) return;
    this.fail(err);
  }

  /** Drop the queued events `match` takes (those of a process that was stopped). */
  drop(match: EventFilter): void {
    for (let i = this.queue.length - 1; i >= 0; i--) if (match(this.queue[i]!)) this.queue.splice(i, 1);
  }

  /** Drop a lost worker: no more heartbeats are expected from it, no messages go to it. */
  forget(role: Role, rank: number): void {
    this.peers.delete(`${role}:${rank}`);
  }

  /** Registered workers (a lost one is forgotten; its replacement registers again). */
  workerRanks(): number[] {
    return [...this.peers.values()].filter((p) => p.role === "worker").map((p) => p.rank);
  }

  peer(role: Role, rank: number): PeerInfo | undefined {
    return this.peers.get(`${role}:${rank}`);
  }

  /** Fail the run when a registered peer has been silent for longer than the timeout. */
  startWatchdog(intervalMs: number, silenceMs: number): void {
    let lastTick = Date.now();
    this.watchdog = setInterval(() => {
      const now = Date.now();
      // A late tick means this process was busy (an evaluation): heartbeats that came meanwhile
      // are still queued, unread. Look again next tick, once the receive loop has read them.
      const late = now - lastTick > 2 * intervalMs;
      lastTick = now;
      if (late) return;
      for (const p of this.peers.values()) {
        if (now - p.lastSeen > silenceMs) {
          this.lose(p, new PsError(ErrorCode.PEER_LOST, `${peerName(p.role, p.rank)} (pid ${p.pid}) sent no heartbeat for ${now - p.lastSeen} ms`));
        }
      }
    }, intervalMs);
    this.watchdog.unref();
  }

  close(): void {
    this.closed = true;
    if (this.watchdog) clearInterval(this.watchdog);
    this.router.close();
  }
}
