import { ErrorCode, PsError } from "../util/errors.js";
import type { Header } from "./header.js";
import { PeerClient, type Reply } from "./peer-client.js";

/**
 * A PeerClient to a server shard that survives the shard's restart (docs/reliability.md).
 * down(): the shard died; the socket is closed (dropping whatever it still queued) and any reply
 * that was on its way is ignored from now on. up(): the restarted shard is serving; a fresh
 * socket connects and every request that was in flight, or began meanwhile, is sent again.
 */
export class ShardPeer {
  private client: PeerClient;
  private generation = 0;
  private upWait: { promise: Promise<void>; resolve: () => void } | null = null;
  private retiredSent = 0;
  private retiredReceived = 0;
  private closed = false;

  constructor(
    readonly peerName: string,
    private endpointNow: string,
    private readonly timeoutMs: number,
  ) {
    this.client = new PeerClient(peerName, endpointNow, timeoutMs);
  }

  get endpoint(): string {
    return this.endpointNow;
  }

  get isDown(): boolean {
    return this.upWait !== null;
  }

  down(): void {
    if (this.upWait || this.closed) return;
    this.generation++;
    let resolve = (): void => undefined;
    const promise = new Promise<void>((r) => {
      resolve = r;
    });
    this.upWait = { promise, resolve };
    this.retire();
  }

  /** The shard is back at `endpoint`; `first` runs on the new socket before anything is sent again. */
  async up(endpoint: string, first?: (c: PeerClient) => Promise<void>): Promise<void> {
    if (this.closed) return;
    const c = new PeerClient(this.peerName, endpoint, this.timeoutMs);
    if (first) await first(c);
    this.client = c;
    this.endpointNow = endpoint;
    const w = this.upWait;
    this.upWait = null;
    w?.resolve();
  }

  async request(header: Header, payload: readonly Buffer[] = [], timeoutMs = this.timeoutMs): Promise<Reply> {
    for (;;) {
      if (this.upWait) await this.waitUp(header, timeoutMs);
      const gen = this.generation;
      try {
        const r = await this.client.request(header, payload, timeoutMs);
        if (gen === this.generation) return r;
      } catch (err) {
        if (gen === this.generation) throw err;
      }
      // The shard went down while this request was out: send it again to its successor.
    }
  }

  private async waitUp(header: Header, timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.upWait!.promise,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new PsError(ErrorCode.TIMEOUT, `${this.peerName} did not come back from its restart within ${timeoutMs} ms (request clock ${header.clock})`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  private retire(): void {
    this.retiredSent += this.client.bytesSent;
    this.retiredReceived += this.client.bytesReceived;
    this.client.close();
  }

  get bytesSent(): number {
    return this.retiredSent + (this.upWait ? 0 : this.client.bytesSent);
  }

  get bytesReceived(): number {
    return this.retiredReceived + (this.upWait ? 0 : this.client.bytesReceived);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.upWait) this.client.close();
    this.upWait?.resolve();
  }
}
