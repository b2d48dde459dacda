import type { Dealer } from "zeromq";
import { roleProof } from "../transport/curve-keys.js";
import { messages } from "../transport/receive.js";
import { curveKeys, handshakeProblem, newDealer } from "../transport/sockets.js";
import { ErrorCode, PsError } from "../util/errors.js";
import { parseJsonFrame } from "../transport/frames.js";
import { decodeHeader, DType, type Header, MsgType, typeName } from "../transport/header.js";
import { controlFrames, type HelloMsg, type Role } from "./messages.js";

export interface ControlMessage {
  header: Header;
  body: unknown;
  frames: Buffer[];
}

/**
 * A role process's line to the coordinator: hello, config, ready, progress, done, heartbeats,
 * and the coordinator's map/start/stop. Messages are queued until someone asks for them, so
 * no message is lost between two awaits.
 */
export class ControlClient {
  private readonly socket: Dealer;
  private readonly queue: ControlMessage[] = [];
  private waiters: ((m: ControlMessage | Error) => void)[] = [];
  private heartbeat: NodeJS.Timeout | null = null;
  private closed = false;
  private runId = 0;
  /** called for STOP whenever it arrives, even while nobody waits for a message */
  onStop: (() => void) | null = null;
  /** called for MAP whenever it arrives; returns true when it took the message (a shard restart) */
  onMap: ((m: ControlMessage) => boolean) | null = null;

  constructor(
    readonly endpoint: string,
    readonly role: Role,
    readonly rank: number,
    private readonly timeoutMs: number,
  ) {
    this.socket = newDealer("coordinator", { linger: 2000, sendTimeout: timeoutMs });
    this.socket.connect(endpoint);
    void this.receiveLoop();
  }

  setRunId(runId: number): void {
    this.runId = runId;
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const [head, ...rest] of messages(this.socket)) {
        const header = decodeHeader(head);
        const body = header.dtype === DType.JSON ? parseJsonFrame(rest[0], typeName(header.type)) : null;
        const msg: ControlMessage = { header, body, frames: rest };
        if (header.type === MsgType.STOP && this.onStop) this.onStop();
        if (header.type === MsgType.MAP && this.onMap?.(msg)) continue;
        const w = this.waiters.shift();
        if (w) w(msg);
        else this.queue.push(msg);
      }
    } catch (err) {
      if (this.closed) return;
      const e = err instanceof Error ? err : new Error(String(err));
      for (const w of this.waiters.splice(0)) w(e);
    }
  }

  /** The next message of one of `types`, within the deadline (others are kept for later). */
  async next(types: readonly MsgType[], timeoutMs = this.timeoutMs, what = "a message"): Promise<ControlMessage> {
    const i = this.queue.findIndex((m) => types.includes(m.header.type));
    if (i >= 0) return this.queue.splice(i, 1)[0]!;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new PsError(ErrorCode.TIMEOUT, `${this.role} ${this.rank}: no ${what} from the coordinator at ${this.endpoint} within ${timeoutMs} ms${handshakeProblem(this.socket) ? ` (${handshakeProblem(this.socket)})` : ""}`);
      const m = await new Promise<ControlMessage | Error | null>((resolve) => {
        const timer = setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve(null);
        }, remaining);
        const waiter = (x: ControlMessage | Error) => {
          clearTimeout(timer);
          resolve(x);
        };
        this.waiters.push(waiter);
      });
      if (m === null) continue;
      if (m instanceof Error) throw m;
      if (types.includes(m.header.type)) return m;
      this.queue.push(m);
    }
  }

  /** Take a queued message of this type if one is there, without waiting. */
  poll(type: MsgType): ControlMessage | null {
    const i = this.queue.findIndex((m) => m.header.type === type);
    return i >= 0 ? this.queue.splice(i, 1)[0]! : null;
  }

  async send(type: MsgType, body: unknown = null, extra: Buffer[] = []): Promise<void> {
    await this.socket.send(controlFrames(type, this.runId, this.rank, body, extra));
  }

  async hello(): Promise<ControlMessage> {
    const keys = curveKeys();
    const hello: HelloMsg = { role: this.role, rank: this.rank, pid: process.pid, ...(keys ? { proof: roleProof(keys, this.role, this.rank) } : {}) };
    await this.send(MsgType.HELLO, hello);
    return this.next([MsgType.CONFIG], this.timeoutMs, "CONFIG");
  }

  startHeartbeat(ms: number): void {
    this.heartbeat = setInterval(() => {
      this.send(MsgType.HEARTBEAT).catch(() => undefined);
    }, ms);
    this.heartbeat.unref();
  }

  close(): void {
    this.closed = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.socket.close();
  }
}
