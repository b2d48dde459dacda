import type { Dealer } from "zeromq";
import type { CurveRole } from "./curve-keys.js";
import { handshakeProblem, newDealer } from "./sockets.js";
import { ErrorCode, PsError } from "../util/errors.js";
import { processCollector } from "./young-gc.js";
import { decodeHeader, encodeHeader, type Header, HEADER_BYTES, MsgType, typeName } from "./header.js";
import { isEagain } from "./receive.js";

/** The peer answered with an ERROR message. */
export class RemoteError extends Error {
  override readonly name = "RemoteError";
  constructor(
    readonly peer: string,
    readonly reason: string,
    message: string,
  ) {
    super(`${peer} refused the request: ${message}`);
  }
}

export interface Reply {
  header: Header;
  frames: Buffer[];
}

/**
 * A DEALER connected to one peer, used request/reply with one request in flight.
 * Every request has a deadline; a reply to an earlier, timed-out request is recognised by its
 * sequence number and dropped.
 */
export class PeerClient {
  private readonly socket: Dealer;
  private seq = 0;
  private busy = false;
  private readonly headerBuf = Buffer.allocUnsafe(HEADER_BYTES);
  bytesSent = 0;
  bytesReceived = 0;
  private collectedAt = 0;

  constructor(
    /** names the peer in errors: "server shard 1 (ipc://...)" */
    readonly peerName: string,
    readonly endpoint: string,
    private readonly timeoutMs: number,
    /** the role that bound the peer's socket: with CURVE, whose public key to expect */
    peerRole: CurveRole = "server",
  ) {
    this.socket = newDealer(peerRole, { linger: 0, receiveTimeout: timeoutMs, sendTimeout: timeoutMs });
    this.socket.connect(endpoint);
  }

  async request(header: Header, payload: readonly Buffer[] = [], timeoutMs = this.timeoutMs): Promise<Reply> {
    if (this.busy) throw new Error(`PeerClient(${this.peerName}): a request is already in flight`);
    this.busy = true;
    try {
      // The previous reply has been copied out by now: free it young (see young-gc.ts).
      processCollector.note(this.bytesReceived - this.collectedAt);
      this.collectedAt = this.bytesReceived;
      header.seq = ++this.seq >>> 0;
      // zeromq.js copies frames of <= 128 bytes at send time, so reusing headerBuf is safe.
      encodeHeader(header, this.headerBuf);
      let bytes = HEADER_BYTES;
      for (const p of payload) bytes += p.byteLength;
      try {
        await this.socket.send([this.headerBuf, ...payload]);
      } catch (err) {
        throw this.transportError(header, err, "send");
      }
      this.bytesSent += bytes;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) throw this.timeout(header, timeoutMs);
        this.socket.receiveTimeout = remaining;
        let frames: Buffer[];
        try {
          frames = await this.socket.receive();
        } catch (err) {
          // EAGAIN before the deadline is not a timeout (zeromq.js under CURVE, see receive.ts): wait on.
          if (isEagain(err) && deadline - Date.now() > 5) {
            await new Promise((r) => setImmediate(r));
            continue;
          }
          throw this.transportError(header, err, "receive", timeoutMs);
        }
        let got = 0;
        for (const f of frames) got += f.byteLength;
        this.bytesReceived += got;
        const [head, ...rest] = frames;
        const h = decodeHeader(head);
        if (h.seq !== header.seq) continue; // late reply to a request that already timed out
        if (h.type === MsgType.ERROR) {
          const text = rest[0]?.toString("utf8") ?? "error";
          const reason = rest[1]?.toString("utf8") ?? "error";
          throw new RemoteError(this.peerName, reason, text);
        }
        return { header: h, frames: rest };
      }
    } finally {
      this.busy = false;
    }
  }

  /** Fire-and-forget (no reply expected). */
  async send(header: Header, payload: readonly Buffer[] = []): Promise<void> {
    header.seq = 0;
    try {
      await this.socket.send([encodeHeader(header), ...payload]);
    } catch (err) {
      throw this.transportError(header, err, "send");
    }
    let bytes = HEADER_BYTES;
    for (const p of payload) bytes += p.byteLength;
    this.bytesSent += bytes;
  }

  close(): void {
    this.socket.close();
  }

  private timeout(header: Header, ms: number): PsError {
    return new PsError(
      ErrorCode.TIMEOUT,
      `no reply from ${this.peerName} at ${this.endpoint} to ${typeName(header.type)} (clock ${header.clock}) within ${ms} ms${this.why()}`,
    );
  }

  /** a CURVE handshake failure explains a silence better than the timeout does */
  private why(): string {
    const p = handshakeProblem(this.socket);
    return p ? ` (${p})` : "";
  }

  private transportError(header: Header, err: unknown, op: string, ms?: number): Error {
    const code = (err as { code?: string }).code;
    if (code === "EAGAIN" && ms !== undefined) return this.timeout(header, ms);
    if (code === "EAGAIN") return new PsError(ErrorCode.TIMEOUT, `could not ${op} ${typeName(header.type)} to ${this.peerName} at ${this.endpoint} within ${this.timeoutMs} ms${this.why()}`);
    const msg = err instanceof Error ? err.message : String(err);
    return new PsError(ErrorCode.PEER_LOST, `${op} ${typeName(header.type)} to ${this.peerName} at ${this.endpoint} failed: ${msg}`);
  }
}
