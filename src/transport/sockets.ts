/**
 * The one place where ps-train creates ZeroMQ sockets and contexts (test/transport/sockets.test.ts
 * checks that no other source file does). Without CURVE keys the sockets are exactly what the
 * callers ask for. With keys (enableCurve) every socket is encrypted and authenticated:
 * - a binding socket (coordinator ROUTER, shard ROUTER, allreduce PULL) is a CURVE server with
 *   this process's key pair, and its context has a ZAP handler that accepts only clients whose
 *   public key is on the allowlist;
 * - a connecting socket (control DEALER, worker DEALER, allreduce PUSH) is a CURVE client with
 *   this process's key pair that expects the public key of the role it connects to.
 */
import { Context, context as defaultContext, Dealer, Pull, Push, Router, type Socket, type SocketOptions } from "zeromq";
import { ADMITS, CURVE_KEYS_ENV, CURVE_ROLES, type CurveKeys, type CurveRole, loadCurveKeys } from "./curve-keys.js";
import { type ZapDenial, ZapHandler } from "./zap-handler.js";

/** The ZAP domain of a CURVE server socket bound by `role`: the handler admits ADMITS[role]. */
export function zapDomain(role: CurveRole): string {
  return `ps-train/${role}`;
}

function admitsOf(domain: string): readonly CurveRole[] | null {
  const role = CURVE_ROLES.find((r) => zapDomain(r) === domain);
  return role ? ADMITS[role] : null;
}

export interface SecurityStats {
  /** connections the ZAP handlers let in */
  zapAllowed: number;
  /** connections refused by a ZAP handler (a key not on the allowlist) */
  zapDenied: number;
  /** handshakes a binding socket saw fail before ZAP (e.g. a client without CURVE) */
  handshakeFailed: number;
  /** coordinator: HELLOs refused because they did not prove the key of the role they claimed */
  roleRefused: number;
}

export type SecurityLog = (event: string, fields: Record<string, unknown>) => void;

let curve: CurveKeys | null = null;
let log: SecurityLog = () => undefined;
const zaps = new Map<Context, Promise<ZapHandler>>();
/** the handlers of `zaps` that are up, for their counters */
const settled = new Map<Context, ZapHandler>();
const counts = { handshakeFailed: 0, closedZapAllowed: 0, closedZapDenied: 0, roleRefused: 0 };
/** the last handshake failure each connecting socket saw, for the error that names its peer */
const clientFailures = new WeakMap<Socket, string>();

/**
 * Turn CURVE on for every socket this process creates from now on, with `keys` (its own role's
 * pair). Starts the ZAP handler of the default context; resolves once it is bound.
 */
export async function enableCurve(keys: CurveKeys, securityLog?: SecurityLog): Promise<void> {
  if (curve) throw new Error(`CURVE is already on (as ${curve.role})`);
  curve = keys;
  if (securityLog) log = securityLog;
  await zapFor(defaultContext);
}

/**
 * Turn CURVE on as `role` when the environment names a key folder (PS_TRAIN_CURVE_KEYS, set by
 * --curve-keys and inherited by every process a launcher or agent starts); a no-op otherwise, or
 * when it is already on. Returns whether CURVE is on.
 */
export async function enableCurveFromEnv(role: CurveRole, securityLog?: SecurityLog, env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  const dir = env[CURVE_KEYS_ENV];
  if (curve) return true;
  if (dir === undefined || dir.trim() === "") return false;
  await enableCurve(loadCurveKeys(dir, role), securityLog);
  return true;
}

/** Turn CURVE off again and stop every ZAP handler (tests; a process normally keeps it to the end). */
export async function disableCurve(): Promise<void> {
  curve = null;
  refusals.clear();
  await Promise.all([...zaps.keys()].map((ctx) => closeContextSecurity(ctx)));
  log = () => undefined;
}

/** This process's keys while CURVE is on. */
export function curveKeys(): CurveKeys | null {
  return curve;
}

export function securityStats(): SecurityStats {
  let allowed = counts.closedZapAllowed;
  let denied = counts.closedZapDenied;
  for (const h of settled.values()) {
    allowed += h.allowed;
    denied += h.denied;
  }
  return { zapAllowed: allowed, zapDenied: denied, handshakeFailed: counts.handshakeFailed, roleRefused: counts.roleRefused };
}

/** The coordinator refused a HELLO whose role the client's key does not prove (logged, counted). */
export function noteRoleRefused(claim: string): void {
  counts.roleRefused++;
  logRefusal(`role ${claim}`, "HELLO refused: no proof of the claimed role's key", { claim });
}

/**
 * For an error about a peer that never showed up: how many clients this process's CURVE sockets
 * refused, which is the likely reason ("" when none or CURVE is off).
 */
export function refusalHint(): string {
  if (!curve) return "";
  const s = securityStats();
  const parts: string[] = [];
  if (s.zapDenied > 0) parts.push(`${s.zapDenied} refused by the allowlist (a key not listed, or listed for a role this socket does not admit)`);
  if (s.roleRefused > 0) parts.push(`${s.roleRefused} HELLOs that did not prove the key of the role they claimed`);
  if (s.handshakeFailed > 0) parts.push(`${s.handshakeFailed} failed CURVE handshakes (no or wrong keys)`);
  return parts.length ? ` (CURVE refused connections here: ${parts.join(", ")}; see the log)` : "";
}

function zapFor(ctx: Context): Promise<ZapHandler> {
  const keys = curve;
  if (!keys) throw new Error("CURVE is off");
  let p = zaps.get(ctx);
  if (!p) {
    const handler = new ZapHandler(ctx === defaultContext ? undefined : ctx, keys.allowlist, admitsOf, (d: ZapDenial) =>
      logRefusal(`zap ${d.domain} ${d.client}`, "CURVE client denied", { address: d.address || undefined, socket: d.domain, client: d.client, reason: d.reason }),
    );
    p = handler.start().then(
      () => {
        settled.set(ctx, handler);
        return handler;
      },
      (err: unknown) => {
        zaps.delete(ctx); // the next binding socket tries again
        throw err;
      },
    );
    zaps.set(ctx, p);
  }
  return p;
}

/**
 * A client that keeps reconnecting would log a line per attempt: log the first refusal of each
 * kind, then at most one line per kind every REFUSAL_LOG_MS with how many were not logged.
 */
const REFUSAL_LOG_MS = 10_000;
const refusals = new Map<string, { at: number; quiet: number }>();

function logRefusal(kind: string, event: string, fields: Record<string, unknown>): void {
  const now = Date.now();
  const r = refusals.get(kind);
  if (r && now - r.at < REFUSAL_LOG_MS) {
    r.quiet++;
    return;
  }
  if (refusals.size > 1000) refusals.clear();
  refusals.set(kind, { at: now, quiet: 0 });
  log(event, r && r.quiet > 0 ? { ...fields, notLogged: r.quiet } : fields);
}

/** Stop the ZAP handler of a context made by newContext (before the context's sockets are gone). */
export async function closeContextSecurity(ctx: Context): Promise<void> {
  const p = zaps.get(ctx);
  if (!p) return;
  zaps.delete(ctx);
  await p.then(
    (h) => {
      counts.closedZapAllowed += h.allowed;
      counts.closedZapDenied += h.denied;
      settled.delete(ctx);
      h.close();
    },
    () => undefined,
  );
}

function serverOptions(): Record<string, unknown> {
  if (!curve) return {};
  return { curveServer: true, curveSecretKey: curve.secretKey, curvePublicKey: curve.publicKey, zapDomain: zapDomain(curve.role) };
}

function clientOptions(peer: CurveRole): Record<string, unknown> {
  if (!curve) return {};
  return { curveServerKey: curve.serverKeys[peer], curvePublicKey: curve.publicKey, curveSecretKey: curve.secretKey };
}

function watchServer<S extends Socket>(socket: S, what: string): S {
  if (!curve) return socket;
  const count = (e: { address: string; error: Error }) => {
    counts.handshakeFailed++;
    logRefusal(`handshake ${what} ${e.error.message}`, "CURVE handshake failed", { socket: what, address: e.address, reason: e.error.message });
  };
  socket.events.on("handshake:error:protocol", count);
  socket.events.on("handshake:error:other", count);
  return socket;
}

function watchClient<S extends Socket>(socket: S): S {
  if (!curve) return socket;
  const note = (e: { error: Error }) => clientFailures.set(socket, `CURVE handshake failed: ${e.error.message}`);
  socket.events.on("handshake:error:auth", note);
  socket.events.on("handshake:error:protocol", note);
  socket.events.on("handshake:error:other", note);
  return socket;
}

/** Why a connecting socket has not got through, when its handshake failed ("" otherwise). */
export function handshakeProblem(socket: Socket): string {
  return clientFailures.get(socket) ?? "";
}

/**
 * Bind a socket made here. With CURVE on, the ZAP handler of its context is bound first, so no
 * connection is ever accepted unchecked.
 */
export async function bindSocket(socket: Socket, address: string): Promise<void> {
  if (curve) await zapFor(socket.context);
  await socket.bind(address);
}

/** A context with its own I/O threads (the allreduce group); call closeContextSecurity when done. */
export function newContext(ioThreads: number): Context {
  return new Context({ ioThreads });
}

/** A ROUTER that binds (coordinator, server shard). */
export function newBoundRouter(what: string, options: SocketOptions<Router> = {}): Router {
  return watchServer(new Router({ ...options, ...serverOptions() }), what);
}

/** A PULL that binds (allreduce receive side). */
export function newBoundPull(what: string, options: SocketOptions<Pull> = {}): Pull {
  return watchServer(new Pull({ ...options, ...serverOptions() }), what);
}

/** A DEALER that connects to a socket bound by `peer`. */
export function newDealer(peer: CurveRole, options: SocketOptions<Dealer> = {}): Dealer {
  return watchClient(new Dealer({ ...options, ...clientOptions(peer) }));
}

/** A PUSH that connects to a socket bound by `peer`. */
export function newPush(peer: CurveRole, options: SocketOptions<Push> = {}): Push {
  return watchClient(new Push({ ...options, ...clientOptions(peer) }));
}

/**
 * A PULL and a PUSH for a process that measures its own loopback link (the pipeline planner's
 * bandwidth probe): a few megabytes of constant bytes to itself over an endpoint bound for the
 * measurement alone, so without CURVE whatever this process's keys.
 */
export function newSelfProbePair(timeoutMs: number): { pull: Pull; push: Push } {
  return { pull: new Pull({ linger: 0, receiveTimeout: timeoutMs }), push: new Push({ linger: 0, sendTimeout: timeoutMs }) };
}
