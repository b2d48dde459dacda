/**
 * The data plane between neighbouring pipeline stages. Each stage binds one PULL socket; the
 * previous stage PUSHes activations into it and the next stage PUSHes gradients of those
 * activations. A message is the 40-byte header (transport/header.ts) and one raw float32 frame:
 *
 *   type   ACTIVATION (forward, to stage k+1) or ACTIVATION_GRAD (backward, to stage k-1)
 *   rank   the sending worker        clock  the training step      version  the micro-batch
 *   rangeStart/rangeEnd  the micro-batch's samples [a, b) within the step's batch
 *   flags  STOPPING on an empty ACTIVATION: the first stage ends the run here (no payload)
 *
 * A receiver checks every field against what it waits for: the run, the sender (the neighbour
 * on that side), the step, the micro-batch and the payload length (samples x per-sample size).
 * Every wait has a deadline, and its error names the stage that sent nothing.
 */
import type { Pull, Push } from "zeromq";
import { messages } from "../transport/receive.js";
import { bindSocket, newBoundPull, newPush } from "../transport/sockets.js";
import { f32Frame, f32View } from "../transport/frames.js";
import { decodeHeader, DType, encodeHeader, Flag, type Header, makeHeader, MsgType, typeName, WireError } from "../transport/header.js";
import { ErrorCode, PsError } from "../util/errors.js";

export interface Neighbour {
  rank: number;
  endpoint: string;
  /** names it in errors: "worker 4 (replica 1, stage 1)" */
  name: string;
}

export interface StageMessage {
  header: Header;
  data: Float32Array;
}

type Waiter = { key: string; resolve: (m: StageMessage) => void; reject: (e: Error) => void };

export class StageLink {
  private readonly pull: Pull;
  private toPrev: Push | null = null;
  private toNext: Push | null = null;
  private prev: Neighbour | null = null;
  private next: Neighbour | null = null;
  private readonly inbox = new Map<string, StageMessage>();
  private waiters: Waiter[] = [];
  private failure: Error | null = null;
  private closed = false;
  bytesSent = 0;
  bytesReceived = 0;
  readonly errors: Record<string, number> = {};

  constructor(
    private readonly runId: number,
    private readonly rank: number,
    /** names this stage in errors */
    private readonly self: string,
    private readonly timeoutMs: number,
    maxMessageBytes: number,
  ) {
    this.pull = newBoundPull(self, { linger: 0, maxMessageSize: maxMessageBytes, receiveHighWaterMark: 0 });
  }

  async bind(address: string): Promise<string> {
    await bindSocket(this.pull, address);
    const ep = this.pull.lastEndpoint;
    if (!ep) throw new Error(`${this.self}: bound socket reports no endpoint`);
    void this.receiveLoop();
    return ep;
  }

  connect(prev: Neighbour | null, next: Neighbour | null): void {
    this.prev = prev;
    this.next = next;
    if (prev) {
      this.toPrev = newPush("worker", { linger: 0, sendTimeout: this.timeoutMs, sendHighWaterMark: 0 });
      this.toPrev.connect(prev.endpoint);
    }
    if (next) {
      this.toNext = newPush("worker", { linger: 0, sendTimeout: this.timeoutMs, sendHighWaterMark: 0 });
      this.toNext.connect(next.endpoint);
    }
  }

  /** Send an activation forward or its gradient back, for micro-batch `micro` = samples [a, b) of step `clock`. */
  async send(type: typeof MsgType.ACTIVATION | typeof MsgType.ACTIVATION_GRAD, clock: number, micro: number, a: number, b: number, data: Float32Array, flags = 0): Promise<void> {
    const forward = type === MsgType.ACTIVATION;
    const sock = forward ? this.toNext : this.toPrev;
    const peer = forward ? this.next : this.prev;
    if (!sock || !peer) throw new Error(`${this.self}: no ${forward ? "next" : "previous"} stage to send ${typeName(type)} to`);
    const header = makeHeader(type, { runId: this.runId, rank: this.rank, clock, version: micro, rangeStart: a, rangeEnd: b, dtype: DType.F32, flags, byteLength: data.byteLength });
    try {
      await sock.send([encodeHeader(header), f32Frame(data)]);
    } catch (err) {
      const code = (err as { code?: string }).code;
      const why = code === "EAGAIN" ? `not taken within ${this.timeoutMs} ms` : err instanceof Error ? err.message : String(err);
      throw new PsError(code === "EAGAIN" ? ErrorCode.TIMEOUT : ErrorCode.PEER_LOST, `${this.self}: ${typeName(type)} of step ${clock} to ${peer.name} at ${peer.endpoint}: ${why}`);
    }
    this.bytesSent += 40 + data.byteLength;
  }

  /** The stop marker: the first stage tells the next that there is no step `clock`. */
  async sendStop(clock: number): Promise<void> {
    await this.send(MsgType.ACTIVATION, clock, 0, 0, 0, new Float32Array(0), Flag.STOPPING);
  }

  /**
   * Wait for micro-batch `micro` of step `clock` from the neighbour on that side (ACTIVATION from
   * the previous stage, ACTIVATION_GRAD from the next), samples [a, b) of `perSample` values each.
   * Resolves to null when the previous stage sent the stop marker instead.
   */
  async receive(type: typeof MsgType.ACTIVATION | typeof MsgType.ACTIVATION_GRAD, clock: number, micro: number, a: number, b: number, perSample: number): Promise<Float32Array | null> {
    const peer = type === MsgType.ACTIVATION ? this.prev : this.next;
    if (!peer) throw new Error(`${this.self}: no neighbour sends ${typeName(type)}`);
    const msg = await this.wait(keyOf(type, clock, micro), `${typeName(type)} of step ${clock}, micro-batch ${micro}`, peer);
    const h = msg.header;
    if ((h.flags & Flag.STOPPING) !== 0 && type === MsgType.ACTIVATION) return null;
    if (h.rangeStart !== a || h.rangeEnd !== b || msg.data.length !== (b - a) * perSample) {
      throw new PsError(
        ErrorCode.BAD_MESSAGE,
        `${peer.name} sent ${typeName(type)} of step ${clock}, micro-batch ${micro} for samples [${h.rangeStart}, ${h.rangeEnd}) with ${msg.data.length} values; ${this.self} expected samples [${a}, ${b}) x ${perSample}`,
      );
    }
    return msg.data;
  }

  private wait(key: string, what: string, peer: Neighbour): Promise<StageMessage> {
    const got = this.inbox.get(key);
    if (got) {
      this.inbox.delete(key);
      return Promise.resolve(got);
    }
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<StageMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new PsError(ErrorCode.TIMEOUT, `${this.self}: no ${what} from ${peer.name} at ${peer.endpoint} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      const waiter: Waiter = {
        key,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.waiters.push(waiter);
    });
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const frames of messages(this.pull)) {
        for (const f of frames) this.bytesReceived += f.byteLength;
        try {
          this.accept(frames);
        } catch (err) {
          if (!(err instanceof WireError)) throw err;
          this.errors[err.reason] = (this.errors[err.reason] ?? 0) + 1;
          // A malformed message from a neighbour fails the step that waits for it: say why now
          // rather than when the deadline passes.
          this.fail(new PsError(ErrorCode.BAD_MESSAGE, `${this.self} received a bad pipeline message: ${err.message}`));
        }
      }
    } catch (err) {
      if (!this.closed) this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private accept(frames: Buffer[]): void {
    const [head, ...payload] = frames;
    const h = decodeHeader(head);
    if (h.runId !== this.runId) throw new WireError("run-id", `run id ${h.runId} is not this run's (${this.runId})`);
    if (h.type !== MsgType.ACTIVATION && h.type !== MsgType.ACTIVATION_GRAD) throw new WireError("unexpected-type", `a pipeline stage does not accept ${typeName(h.type)} messages`);
    const from = h.type === MsgType.ACTIVATION ? this.prev : this.next;
    if (!from || h.rank !== from.rank) throw new WireError("rank", `${typeName(h.type)} from rank ${h.rank}, expected ${from ? `rank ${from.rank}` : "none"}`);
    if (h.dtype !== DType.F32) throw new WireError("dtype", `${typeName(h.type)} dtype ${h.dtype} is not float32`);
    if (payload.length !== 1) throw new WireError("frames", `${typeName(h.type)} carries exactly one tensor frame, got ${payload.length}`);
    const frame = payload[0]!;
    if (frame.byteLength !== h.byteLength) throw new WireError("payload-length", `payload of ${frame.byteLength} bytes, header says ${h.byteLength}`);
    // Copy out of the frame: it belongs to libzmq, and the data waits for its micro-batch.
    const data = Float32Array.from(f32View(frame));
    const key = keyOf(h.type, h.clock, h.version);
    const i = this.waiters.findIndex((w) => w.key === key);
    if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve({ header: h, data });
    else this.inbox.set(key, { header: h, data });
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w.reject(err);
  }

  close(): void {
    this.closed = true;
    this.pull.close();
    this.toPrev?.close();
    this.toNext?.close();
  }
}

function keyOf(type: number, clock: number, micro: number): string {
  return `${type}:${clock}:${micro}`;
}
