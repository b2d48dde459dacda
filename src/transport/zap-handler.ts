import { type Context, Router } from "zeromq";
import type { AllowedKey, CurveRole } from "./curve-keys.js";
import { messages } from "./receive.js";
import { z85Encode } from "./z85.js";

/** libzmq sends ZAP requests (RFC 27) of every CURVE server socket of a context to this endpoint. */
export const ZAP_ENDPOINT = "inproc://zeromq.zap.01";

export interface ZapDenial {
  /** the client's address as libzmq reports it (IP for tcp, empty for ipc) */
  address: string;
  /** the ZAP domain of the socket it tried: which role's socket */
  domain: string;
  /** the client's Z85 public key, or the mechanism it tried when it was not CURVE */
  client: string;
  reason: string;
}

const EMPTY = Buffer.alloc(0);

/**
 * The ZAP handler of one ZeroMQ context: a ROUTER on inproc://zeromq.zap.01 in that context that
 * answers libzmq's authentication requests, accepting a CURVE client only when its public key is
 * on the allowlist with a role that the socket's ZAP domain admits (ADMITS). It must be bound before any CURVE server socket of the context accepts a
 * connection: without a handler libzmq lets every client that knows the server key in.
 */
export class ZapHandler {
  private readonly router: Router;
  private closed = false;
  allowed = 0;
  denied = 0;

  constructor(
    context: Context | undefined,
    private readonly allowlist: ReadonlyMap<string, AllowedKey>,
    /** the roles whose keys a socket of this ZAP domain admits (null: an unknown domain, none) */
    private readonly admits: (domain: string) => readonly CurveRole[] | null,
    private readonly onDenied: (d: ZapDenial) => void,
  ) {
    this.router = new Router({ linger: 0, ...(context ? { context } : {}) });
  }

  /** Bind; a handler of this context that was just closed may hold the endpoint for a moment. */
  async start(timeoutMs = 2000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.router.bind(ZAP_ENDPOINT);
        break;
      } catch (err) {
        if ((err as { code?: string }).code !== "EADDRINUSE" || Date.now() > deadline) {
          this.router.close();
          throw new Error(`cannot start the ZAP handler on ${ZAP_ENDPOINT}: ${(err as Error).message}`, { cause: err });
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    void this.serve();
  }

  private async serve(): Promise<void> {
    try {
      for await (const frames of messages(this.router)) {
        // [routing id, "", version, request id, domain, address, identity, mechanism, credentials...]
        const [id, , version, requestId, domainFrame, address, , mechanism, key] = frames;
        if (!id || !requestId) continue;
        const domain = domainFrame?.toString() ?? "";
        const mech = mechanism?.toString() ?? "";
        const client = mech === "CURVE" && key?.length === 32 ? z85Encode(key) : mech || "?";
        const entry = mech === "CURVE" ? this.allowlist.get(client) : undefined;
        const admitted = this.admits(domain);
        let text: string;
        if (version?.toString() !== "1.0") text = "unsupported ZAP version";
        else if (mech !== "CURVE") text = `mechanism ${client} is not allowed`;
        else if (entry === undefined) text = `public key ${client} is not on the allowlist`;
        else if (admitted === null) text = `unknown ZAP domain ${JSON.stringify(domain)}`;
        else if (!admitted.includes(entry.role)) text = `a ${entry.role} key may not connect here (admits ${admitted.join(", ")})`;
        else text = "OK";
        const ok = text === "OK";
        if (ok) this.allowed++;
        else this.deny(address, domain, client, text);
        // The user id (the key's role) goes with every message of the connection.
        const [status, user] = ok ? ["200", entry?.role ?? ""] : ["400", ""];
        await this.router.send([id, EMPTY, "1.0", requestId, status, text, user, EMPTY]);
      }
    } catch (err) {
      // Requests then go unanswered and handshakes fail closed; say why once.
      if (!this.closed) this.onDenied({ address: "", domain: "", client: "", reason: `ZAP handler stopped: ${err instanceof Error ? err.message : String(err)}` });
    }
  }

  private deny(address: Buffer | undefined, domain: string, client: string, reason: string): void {
    this.denied++;
    this.onDenied({ address: address?.toString() ?? "", domain, client, reason });
  }

  close(): void {
    this.closed = true;
    this.router.close();
  }
}
