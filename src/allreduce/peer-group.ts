import type { Context, Pull, Push } from "zeromq";
import { messages } from "../transport/receive.js";
import { bindSocket, closeContextSecurity, newBoundPull, newContext, newPush } from "../transport/sockets.js";
import { WireError } from "../transport/header.js";
import { SHM_MIN_BYTES, type ShmFiles } from "../transport/shm.js";
import { ErrorCode, PsError } from "../util/errors.js";
import { ReceiveCollector, YOUNG_GC_BYTES } from "../transport/young-gc.js";
import { AR_HEADER_BYTES, type ArHeader, decodeArHeader, encodeArHeader, Phase, phaseName } from "./wire.js";

export interface PeerGroupOptions {
  rank: number;
  size: number;
  runId: number;
  /** deadline for any single wait on a peer (a message, a full send queue), in ms */
  timeoutMs: number;
  /**
   * A peer whose connection dropped may still have messages in flight: they are given this long
   * to arrive before the group fails naming that peer (default min(timeoutMs, 1000)).
   */
  lostGraceMs?: number;
  /** kernel socket buffer (SO_SNDBUF / SO_RCVBUF) of every connection; 0 = the OS default */
  socketBufferBytes?: number;
  /** libzmq I/O threads of this group's own context (0: share the process's default context; default 2) */
  ioThreads?: number;
  /**
   * the largest frame a peer may send (libzmq drops the connection of a peer that sends more,
   * before allocating it); default unlimited. Training sets it to the model's size plus slack.
   */
  maxMessageBytes?: number;
  /** a minor GC after every this many bytes received, to free libzmq's buffers young (transport/young-gc.ts); 0 = off */
  youngGcBytes?: number;
  /**
   * --transport shm: collectives' tensors go through the run's shared-memory files (see send()),
   * named after `group`, which every member of this group uses and no other group of the run
   */
  shm?: { files: ShmFiles; group: string };
}

/** Measured by bench:allreduce --young-gc: 16 MiB between minor GCs (see transport/young-gc.ts). */
export const DEFAULT_YOUNG_GC_BYTES = YOUNG_GC_BYTES;

/**
 * The group's sockets get a context of their own with two libzmq I/O threads, so sending to the
 * next rank and receiving from the previous one proceed in parallel. Measured with
 * bench:allreduce --io-threads 0,2, three alternating runs, 16 MiB ring at N=2: busbw 1.71, 1.85,
 * 1.65 GB/s with the default context (one I/O thread) vs 2.31, 2.42, 1.84 with two; N=4 the same
 * within noise.
 */
export const DEFAULT_IO_THREADS = 2;

/** Where a message belongs: a receiver knows exactly which one it expects next from a peer. */
export interface Slot {
  phase: Phase;
  op: number;
  step: number;
  seg: number;
}

interface Incoming {
  h: ArHeader;
  payload: Buffer | null;
  /** the payload is in the sender's shared-memory file (read when the message is taken) */
  file: boolean;
}

interface Waiter {
  src: number;
  slot: Slot;
  /** Date.now() past which the wait has timed out */
  deadline: number;
  resolve: (m: Incoming) => void;
  reject: (e: Error) => void;
  /** the receive's own rejection, for the deadline (the waiter is gone by then) */
  expire: (e: Error) => void;
}

interface StallReport {
  from: number;
  waitingOn: number;
  what: string;
  verdict?: string | undefined;
}

function describe(s: Slot): string {
  return `${phaseName(s.phase)} step ${s.step} segment ${s.seg} of collective #${s.op}`;
}

/**
 * One rank's endpoints in a group of peers that exchange tensors directly: a PULL socket that
 * every peer sends to, and a PUSH socket to each peer. Messages from one peer arrive in the order
 * it sent them, so each receive names the one message it expects and anything else is a protocol
 * error. Every wait has a deadline, and a failure names the rank that caused it:
 * - a peer whose process dies drops its connections: every rank sees the disconnect and fails
 *   its collective within `lostGraceMs`, naming that rank;
 * - a peer that stays connected but sends nothing (hung, stopped): a rank whose wait times out
 *   asks every peer what it is waiting for, and names the ranks that did not answer.
 */
export class PeerGroup {
  readonly rank: number;
  readonly size: number;
  readonly runId: number;
  readonly timeoutMs: number;
  private readonly lostGraceMs: number;
  private readonly socketBufferBytes: number;
  private readonly context: Context | undefined;
  private readonly collector: ReceiveCollector;
  private readonly pull: Pull;
  private readonly pushes: (Push | null)[];
  private readonly queues: Incoming[][];
  private waiter: Waiter | null = null;
  private readonly gone = new Map<number, number>();
  private goneTimer: NodeJS.Timeout | null = null;
  /**
   * One watchdog for every receive's deadline: a setTimeout/clearTimeout pair per receive cost
   * ~25 µs of a 4 KiB exchange here (median of 6 alternating rounds, 153 → 127 µs per exchange).
   */
  private watchdog: NodeJS.Timeout | null = null;
  private readonly stalls = new Map<number, StallReport>();
  private stallSent = false;
  private readonly hbuf = Buffer.allocUnsafe(AR_HEADER_BYTES);
  private opCounter = 0;
  private collectedAt = 0;
  private readonly shm: { files: ShmFiles; group: string } | null;
  /** --transport shm: per peer, the collective last written to / read from its file and the byte offset reached in it */
  private readonly fileOut: { op: number; at: number }[];
  private readonly fileIn: { op: number; at: number }[];
  /** per sender, the buffer its file payloads are read into (valid until the next receive from it) */
  private readonly fileScratch: (Buffer | null)[];
  private readonly maxMessageBytes: number;
  private closed = false;
  failed: Error | null = null;
  endpoint = "";
  bytesSent = 0;
  bytesReceived = 0;
  readonly rejected: Record<string, number> = {};

  constructor(opts: PeerGroupOptions) {
    if (!Number.isInteger(opts.size) || opts.size < 1) throw new Error(`peer group size ${opts.size} must be a positive integer`);
    if (!Number.isInteger(opts.rank) || opts.rank < 0 || opts.rank >= opts.size) throw new Error(`rank ${opts.rank} is outside the group of ${opts.size}`);
    this.rank = opts.rank;
    this.size = opts.size;
    this.runId = opts.runId;
    this.timeoutMs = opts.timeoutMs;
    this.lostGraceMs = opts.lostGraceMs ?? Math.min(opts.timeoutMs, 1000);
    this.socketBufferBytes = opts.socketBufferBytes ?? 0;
    this.collector = new ReceiveCollector(opts.youngGcBytes ?? DEFAULT_YOUNG_GC_BYTES);
    const io = opts.ioThreads ?? DEFAULT_IO_THREADS;
    this.context = io > 0 ? newContext(io) : undefined;
    this.pull = newBoundPull(`allreduce rank ${opts.rank}`, {
      ...(this.context ? { context: this.context } : {}),
      linger: 0,
      receiveHighWaterMark: 0,
      ...(this.socketBufferBytes > 0 ? { receiveBufferSize: this.socketBufferBytes } : {}),
      ...(opts.maxMessageBytes !== undefined && opts.maxMessageBytes > 0 ? { maxMessageSize: opts.maxMessageBytes } : {}),
    });
    this.pushes = Array.from({ length: opts.size }, () => null);
    this.queues = Array.from({ length: opts.size }, () => []);
    this.shm = opts.shm ?? null;
    this.fileOut = Array.from({ length: opts.size }, () => ({ op: -1, at: 0 }));
    this.fileIn = Array.from({ length: opts.size }, () => ({ op: -1, at: 0 }));
    this.fileScratch = Array.from({ length: opts.size }, () => null);
    this.maxMessageBytes = opts.maxMessageBytes !== undefined && opts.maxMessageBytes > 0 ? opts.maxMessageBytes : Infinity;
  }

  /**
   * The file that `src` writes its payloads to `dst` in, for collective `op`. Two per pair, by the
   * collective's parity: a rank starts collective c + 2 only after finishing c + 1, which needs
   * every rank's part in it, so every rank has finished (read everything of) c by then. Offsets
   * within a collective only grow. Broadcasts (a root finishes one without hearing from anyone)
   * keep their frames.
   */
  private fileName(src: number, dst: number, op: number): string {
    return `ar-${this.shm!.group}-${src}-${dst}-${op & 1}`;
  }

  /** Bind the receiving socket (`tcp://host:*` binds an ephemeral port); returns the endpoint peers connect to. */
  async bind(address: string): Promise<string> {
    await bindSocket(this.pull, address);
    this.endpoint = this.pull.lastEndpoint ?? address;
    void this.receiveLoop();
    return this.endpoint;
  }

  /** Connect to every peer (endpoints indexed by rank); messages queue until the connection is up. */
  connect(endpoints: readonly string[]): void {
    if (endpoints.length !== this.size) throw new Error(`expected ${this.size} peer endpoints, got ${endpoints.length}`);
    endpoints.forEach((ep, r) => {
      if (r === this.rank) return;
      // linger: what was sent before close() still goes out (the last collective's messages).
      const buffers = this.socketBufferBytes > 0 ? { sendBufferSize: this.socketBufferBytes } : {};
      const push = newPush("worker", { ...(this.context ? { context: this.context } : {}), linger: this.timeoutMs, sendTimeout: this.timeoutMs, sendHighWaterMark: 0, ...buffers });
      push.events.on("disconnect", () => this.peerGone(r));
      push.connect(ep);
      this.pushes[r] = push;
    });
  }

  /** The number of the next collective; every rank calls collectives in the same order. */
  nextOp(): number {
    return this.opCounter++;
  }

  async send(dst: number, slot: Slot, payload: Float32Array | Buffer | null): Promise<void> {
    if (this.failed) throw this.failed;
    const push = this.pushes[dst];
    if (!push) throw new Error(`rank ${this.rank}: no connection to rank ${dst}`);
    const bytes = payload ? payload.byteLength : 0;
    // --transport shm: the payload is written to this pair's file (a copy: `payload` is free
    // again at once) and the message carries only the header, whose length says how much.
    const viaFile = this.shm !== null && payload !== null && bytes >= SHM_MIN_BYTES && slot.phase !== Phase.BROADCAST;
    if (viaFile) this.shm.files.write(this.fileName(this.rank, dst, slot.op), payload, advance(this.fileOut[dst]!, slot.op, bytes));
    encodeArHeader({ ...slot, runId: this.runId, src: this.rank, byteLength: bytes }, this.hbuf);
    // Frames over 128 bytes go out zero-copy: the caller must not change `payload` until the
    // peer has provably received it (see ring.ts); the header is copied here.
    const frames: Buffer[] = [this.hbuf];
    if (payload && bytes > 0 && !viaFile) frames.push(payload instanceof Buffer ? payload : Buffer.from(payload.buffer, payload.byteOffset, bytes));
    try {
      await push.send(frames);
    } catch (err) {
      const e = this.failed ?? new PsError(ErrorCode.TIMEOUT, `rank ${this.rank}: rank ${dst} took no message for ${this.timeoutMs} ms (${describe(slot)}): ${err instanceof Error ? err.message : String(err)}`);
      this.fail(e);
      throw e;
    }
    this.bytesSent += AR_HEADER_BYTES + bytes;
  }

  /**
   * The payload of the message `slot` from `src` (null when it carried none). Rejects when
   * anything else comes from `src`, when the deadline passes, or when a peer is lost.
   */
  recv(src: number, slot: Slot): Promise<Buffer | null> {
    if (this.failed) return Promise.reject(this.failed);
    const q = this.queues[src]!;
    if (q.length > 0) return Promise.resolve(this.take(src, q.shift()!, slot));
    if (this.waiter) return Promise.reject(new Error(`rank ${this.rank}: a receive is already pending`));
    if (!this.watchdog) {
      this.watchdog = setInterval(() => this.checkDeadline(), Math.max(5, Math.min(250, this.timeoutMs / 8)));
      this.watchdog.unref();
    }
    return new Promise<Buffer | null>((resolve, reject) => {
      this.waiter = {
        src,
        slot,
        deadline: Date.now() + this.timeoutMs,
        resolve: (m) => {
          this.waiter = null;
          try {
            resolve(this.take(src, m, slot));
          } catch (e) {
            reject(e as Error);
          }
        },
        reject: (e) => {
          this.waiter = null;
          reject(e);
        },
        expire: reject,
      };
    });
  }

  /** The pending receive's deadline has passed: find out who is missing, then fail it. */
  private checkDeadline(): void {
    const w = this.waiter;
    if (!w || Date.now() < w.deadline) return;
    this.waiter = null;
    this.onTimeout(w.src, w.slot).then(w.expire, w.expire);
  }

  /**
   * Called by a collective between messages: frees received buffers that are no longer used
   * (a minor GC every youngGcBytes received). Not inside recv(): the last buffer must be dead.
   */
  async collectGarbage(): Promise<void> {
    const collected = this.collector.note(this.bytesReceived - this.collectedAt);
    this.collectedAt = this.bytesReceived;
    // Node hands the freed buffers' bytes back to V8 from setImmediate: let the event loop turn.
    if (collected) await new Promise((resolve) => setImmediate(resolve));
  }

  get youngCollections(): number {
    return this.collector.collections;
  }

  private take(src: number, m: Incoming, slot: Slot): Buffer | null {
    const h = m.h;
    if (h.phase !== slot.phase || h.op !== slot.op || h.step !== slot.step || h.seg !== slot.seg) {
      const e = new PsError(
        ErrorCode.BAD_MESSAGE,
        `rank ${this.rank}: rank ${src} sent ${describe(h)} where ${describe(slot)} was due (do all ranks call the same collectives in the same order?)`,
      );
      this.fail(e);
      throw e;
    }
    return m.file ? this.readFile(src, h) : m.payload;
  }

  /** A payload that `src` wrote to its file for this rank: read at the offset reached in it. */
  private readFile(src: number, h: ArHeader): Buffer {
    const at = advance(this.fileIn[src]!, h.op, h.byteLength);
    let scratch = this.fileScratch[src];
    if (!scratch || scratch.byteLength < h.byteLength) scratch = this.fileScratch[src] = Buffer.allocUnsafeSlow(h.byteLength);
    const view = scratch.subarray(0, h.byteLength);
    try {
      this.shm!.files.read(this.fileName(src, this.rank, h.op), view, at);
    } catch (err) {
      const e = new PsError(ErrorCode.BAD_MESSAGE, `rank ${this.rank}: rank ${src}'s message ${describe(h)} names shared memory that cannot be read: ${(err as Error).message}`);
      this.fail(e);
      throw e;
    }
    return view;
  }

  /** Dissemination barrier: ceil(log2 N) rounds, every rank returns once all have entered. */
  async barrier(): Promise<void> {
    const op = this.nextOp();
    for (let d = 1, step = 0; d < this.size; d *= 2, step++) {
      const slot = { phase: Phase.BARRIER, op, step, seg: 0 };
      await this.send((this.rank + d) % this.size, slot, null);
      await this.recv((this.rank - d + this.size) % this.size, slot);
    }
  }

  fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.waiter?.reject(err);
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const [head, payload] of messages(this.pull)) {
        let h: ArHeader;
        // --transport shm: a header with a length and no payload frame: the payload is in the sender's file
        let inFile = false;
        try {
          h = decodeArHeader(head, this.size);
          if (h.runId !== this.runId) throw new WireError("run-id", `run id ${h.runId}, expected ${this.runId}`);
          if (h.src === this.rank) throw new WireError("rank", "message claims to come from this rank");
          inFile = this.shm !== null && payload === undefined && h.byteLength > 0 && h.phase !== Phase.BROADCAST && h.phase !== Phase.STALL;
          if (inFile && h.byteLength > this.maxMessageBytes) throw new WireError("payload-length", `payload of ${h.byteLength} bytes in shared memory, more than ${this.maxMessageBytes}`);
          if (!inFile && h.byteLength !== (payload?.byteLength ?? 0)) throw new WireError("payload-length", `payload of ${payload?.byteLength ?? 0} bytes, header says ${h.byteLength}`);
        } catch (err) {
          const reason = err instanceof WireError ? err.reason : "malformed";
          this.rejected[reason] = (this.rejected[reason] ?? 0) + 1;
          continue;
        }
        this.bytesReceived += AR_HEADER_BYTES + h.byteLength;
        if (h.phase === Phase.STALL) {
          this.onStall(h, payload);
          continue;
        }
        const m: Incoming = { h, payload: payload && payload.byteLength > 0 ? aligned(payload) : null, file: inFile };
        const w = this.waiter;
        if (w && w.src === h.src && this.queues[h.src]!.length === 0) w.resolve(m);
        else this.queues[h.src]!.push(m);
      }
    } catch (err) {
      if (!this.closed) this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private peerGone(r: number): void {
    if (this.closed || this.gone.has(r)) return;
    this.gone.set(r, Date.now());
    this.goneTimer ??= setInterval(() => this.checkGone(), Math.max(10, this.lostGraceMs / 4));
    this.goneTimer.unref();
  }

  /** A lost peer fails whatever this rank is waiting for, once its last messages had time to arrive. */
  private checkGone(): void {
    if (!this.waiter) return;
    const now = Date.now();
    for (const [r, t] of this.gone) {
      if (now - t < this.lostGraceMs) continue;
      const w = this.waiter;
      const verdict = `rank ${r} disconnected (its process exited or its host went away) while rank ${this.rank} was waiting for ${w.src === r ? "it" : `rank ${w.src}`}: ${describe(w.slot)}`;
      // Tell the others first: a peer that has not seen the disconnect (its connection to the
      // lost rank was not up yet) would otherwise blame this rank when it exits.
      this.reportStall(w.src, w.slot, verdict);
      this.fail(new PsError(ErrorCode.PEER_LOST, `rank ${this.rank}: ${verdict}`));
      return;
    }
  }

  private reportStall(waitingOn: number, slot: Slot, verdict?: string): void {
    const report: StallReport = { from: this.rank, waitingOn, what: describe(slot), verdict };
    const body = Buffer.from(JSON.stringify(report));
    encodeArHeader({ phase: Phase.STALL, op: slot.op, step: 0, seg: 0, runId: this.runId, src: this.rank, byteLength: body.byteLength }, this.hbuf);
    const frames = [Buffer.from(this.hbuf), body];
    for (const p of this.pushes) p?.send(frames).catch(() => undefined);
  }

  private onStall(h: ArHeader, payload: Buffer | undefined): void {
    let report: StallReport;
    try {
      report = JSON.parse(payload?.toString("utf8") ?? "") as StallReport;
    } catch {
      this.rejected["json"] = (this.rejected["json"] ?? 0) + 1;
      return;
    }
    report.from = h.src;
    this.stalls.set(h.src, report);
    // Another rank's verdict ends this rank's wait with the same explanation.
    if (report.verdict) {
      this.fail(new PsError(ErrorCode.PEER_LOST, `rank ${this.rank}: collective aborted by rank ${h.src}: ${report.verdict}`));
      return;
    }
    // Answer once with what this rank waits for, so the asker can tell who is really missing.
    if (this.waiter && !this.stallSent) {
      this.stallSent = true;
      this.reportStall(this.waiter.src, this.waiter.slot);
    }
  }

  /** The wait for `src` timed out: find out which ranks are really missing, then fail. */
  private async onTimeout(src: number, slot: Slot): Promise<Error> {
    if (this.failed) return this.failed;
    const waitLine = `no message from rank ${src} for ${this.timeoutMs} ms (${describe(slot)})`;
    if (this.size > 2) {
      this.reportStall(src, slot);
      this.stallSent = true;
      await new Promise((r) => setTimeout(r, Math.min(this.lostGraceMs, 1000)));
    }
    if (this.failed) return this.failed;
    const answered = new Map(this.stalls);
    const silent: number[] = [];
    for (let r = 0; r < this.size; r++) if (r !== this.rank && !answered.has(r)) silent.push(r);
    let verdict: string;
    if (this.size <= 2 || silent.length === 0) {
      verdict = answered.size > 0 ? `${waitLine}; every rank is waiting (${[...answered.values()].map((s) => `${s.from} on ${s.waitingOn}`).join(", ")})` : waitLine;
    } else {
      const waiting = [this.rank, ...answered.keys()].sort((a, b) => a - b);
      verdict = `rank${silent.length > 1 ? "s" : ""} ${silent.join(", ")} sent nothing for ${this.timeoutMs} ms and did not answer (hung or stopped?); rank${waiting.length > 1 ? "s" : ""} ${waiting.join(", ")} were waiting`;
    }
    const err = new PsError(ErrorCode.TIMEOUT, `rank ${this.rank}: ${verdict}`);
    this.reportStall(src, slot, verdict);
    this.fail(err);
    return err;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.goneTimer) clearInterval(this.goneTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.waiter?.reject(new Error(`rank ${this.rank}: peer group closed`));
    for (const p of this.pushes) p?.close();
    this.pull.close();
    this.shm?.files.close();
    if (this.context) void closeContextSecurity(this.context);
  }
}

/**
 * A peer's file offset for `bytes` more of collective `op`: where they start (0 for the first
 * payload of a new collective), and the cursor moves past them.
 */
function advance(cursor: { op: number; at: number }, op: number, bytes: number): number {
  if (cursor.op !== op) {
    cursor.op = op;
    cursor.at = 0;
  }
  const at = cursor.at;
  cursor.at += bytes;
  return at;
}

/** libzmq may deliver a frame at any byte offset; float32 views need 4-byte alignment. */
function aligned(b: Buffer): Buffer {
  if (b.byteOffset % 4 === 0) return b;
  const c = Buffer.allocUnsafeSlow(b.byteLength);
  b.copy(c);
  return c;
}
