import type { Coordinator } from "../cluster/coordinator.js";
import type { ElasticMsg, MapMsg, ReadyMsg, ReformMsg } from "../cluster/messages.js";
import { type MsgType as MsgTypeT, MsgType } from "../transport/header.js";
import { ErrorCode, PsError } from "../util/errors.js";

export interface ReformOptions {
  /** the generation being formed (the initial group is generation 0) */
  gen: number;
  /** the workers still in the run, by their process rank */
  ranks: number[];
  timeoutMs: number;
  /** a worker that finishes meanwhile (it had done its last step) is left out */
  isDone: (rank: number) => boolean;
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

export interface Reformed {
  gen: number;
  /** process ranks in the order of their new group ranks */
  members: number[];
  rollbackTo: number;
}

/**
 * Elastic allreduce, the coordinator's half (docs/allreduce.md, "Elastic"): after a worker is
 * lost, every survivor reports the step it holds a committed state for (ELASTIC); all roll back
 * to the earliest of them, which is the step the failed collective belonged to (no survivor can
 * be more than one step ahead: the next collective needs everyone). The survivors get new ranks
 * 0..n-1 in the order of their old ones (REFORM), bind fresh endpoints (READY) and get the new
 * peer list (MAP), as at the start of the run.
 */
export async function reformPeerGroup(coordinator: Coordinator, o: ReformOptions): Promise<Reformed | null> {
  let ranks = o.ranks.filter((r) => !o.isDone(r));
  if (ranks.length === 0) return null;
  const ask: ElasticMsg = { gen: o.gen };
  // A worker waiting for an evaluation's verdict is not in a collective: this tells it to join in.
  for (const r of ranks) await coordinator.send("worker", r, MsgType.ELASTIC, ask).catch(() => undefined);

  const steps = new Map<number, number>();
  const collect = async (type: MsgTypeT, what: string, take: (rank: number, body: unknown) => boolean) => {
    const deadline = Date.now() + o.timeoutMs;
    const got = new Set<number>();
    for (;;) {
      ranks = ranks.filter((r) => got.has(r) || !o.isDone(r));
      const missing = ranks.filter((r) => !got.has(r));
      if (missing.length === 0) return;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new PsError(
          ErrorCode.TIMEOUT,
          `elastic re-formation ${o.gen}: no ${what} within ${o.timeoutMs} ms from ${missing.map((r) => `worker ${r}`).join(", ")}`,
        );
      }
      const ev = await coordinator.next([type], Math.min(remaining, 250));
      if (ev && ev.peer.role === "worker" && ranks.includes(ev.peer.rank) && take(ev.peer.rank, ev.body)) got.add(ev.peer.rank);
    }
  };
  await collect(MsgType.ELASTIC, "ELASTIC report", (rank, body) => {
    const m = body as ElasticMsg | null;
    if (m?.gen !== o.gen - 1 || typeof m.step !== "number") return false; // a stale report
    steps.set(rank, m.step);
    return true;
  });
  if (ranks.length === 0) return null;
  const members = [...ranks].sort((a, b) => a - b);
  const rollbackTo = Math.min(...members.map((r) => steps.get(r)!));
  o.log("elastic re-formation", { gen: o.gen, members, rollbackTo, steps: Object.fromEntries(steps) });
  for (let i = 0; i < members.length; i++) {
    const reform: ReformMsg = { gen: o.gen, rank: i, size: members.length, rollbackTo };
    await coordinator.send("worker", members[i]!, MsgType.REFORM, reform);
  }
  const peers = new Array<string>(members.length);
  ranks = members;
  await collect(MsgType.READY, "READY", (rank, body) => {
    const ep = (body as ReadyMsg | null)?.endpoint;
    if (typeof ep !== "string") return false;
    peers[members.indexOf(rank)] = ep;
    return true;
  });
  if (ranks.length !== members.length) {
    throw new PsError(ErrorCode.PEER_LOST, `elastic re-formation ${o.gen}: worker ${members.filter((r) => !ranks.includes(r)).join(", ")} finished while the group re-formed`);
  }
  const map: MapMsg = { servers: [], peers };
  for (const r of members) await coordinator.send("worker", r, MsgType.MAP, map);
  return { gen: o.gen, members, rollbackTo };
}
