import type { ControlClient } from "../cluster/control-client.js";
import type { Coordinator } from "../cluster/coordinator.js";
import type { MapMsg, ReadyMsg } from "../cluster/messages.js";
import type { TransportName } from "../config/train-config.js";
import { bindAddress } from "../transport/endpoint.js";
import { MsgType } from "../transport/header.js";
import { ErrorCode, PsError } from "../util/errors.js";
import { PeerGroup } from "./peer-group.js";
import { ShmFiles, shmDir } from "../transport/shm.js";

export interface JoinOptions {
  rank: number;
  size: number;
  runId: number;
  runTag: string;
  transport: TransportName;
  timeoutMs: number;
  /** address to bind and advertise for tcp (default 127.0.0.1) */
  host?: string;
  socketBufferBytes?: number;
  ioThreads?: number;
  youngGcBytes?: number;
  maxMessageBytes?: number;
  /** the endpoint's name (default peer-RANK); an elastic re-formation binds fresh ones */
  name?: string;
  /** --transport shm: the name of this group's shared-memory files, the same on every member (default "peers"; a re-formed group takes its generation's) */
  shmGroup?: string;
}

/**
 * A worker joins the run's peer group through the coordinator, as the parameter-server path
 * does: bind, report the endpoint (READY), get every rank's endpoint (MAP), connect to all,
 * then a barrier, so the group is complete before the first collective.
 */
export async function joinPeerGroup(control: ControlClient, o: JoinOptions): Promise<PeerGroup> {
  const group = new PeerGroup({
    rank: o.rank,
    size: o.size,
    runId: o.runId,
    timeoutMs: o.timeoutMs,
    socketBufferBytes: o.socketBufferBytes ?? 0,
    ...(o.ioThreads !== undefined ? { ioThreads: o.ioThreads } : {}),
    ...(o.youngGcBytes !== undefined ? { youngGcBytes: o.youngGcBytes } : {}),
    ...(o.maxMessageBytes !== undefined ? { maxMessageBytes: o.maxMessageBytes } : {}),
    ...(o.transport === "shm" ? { shm: { files: new ShmFiles(shmDir(o.runTag)), group: o.shmGroup ?? "peers" } } : {}),
  });
  try {
    const endpoint = await group.bind(bindAddress(o.transport, o.runTag, o.name ?? `peer-${o.rank}`, o.host));
    const ready: ReadyMsg = { endpoint };
    await control.send(MsgType.READY, ready);
    const m = await control.next([MsgType.MAP], o.timeoutMs, "peer MAP");
    const peers = (m.body as MapMsg).peers;
    if (!Array.isArray(peers) || peers.length !== o.size || peers.some((p) => typeof p !== "string")) {
      throw new PsError(ErrorCode.BAD_MESSAGE, `worker ${o.rank}: the coordinator's MAP has no endpoint list for ${o.size} peers`);
    }
    group.connect(peers);
    await group.barrier();
    return group;
  } catch (err) {
    group.close();
    throw err;
  }
}

/** The coordinator's half: collect every worker's endpoint and send everyone the list. */
export async function publishPeerMap(coordinator: Coordinator, size: number, timeoutMs: number): Promise<string[]> {
  const endpoints: string[] = new Array<string>(size);
  const seen = new Set<number>();
  await coordinator.collect(
    MsgType.READY,
    size,
    timeoutMs,
    (ev) => {
      const body = ev.body as ReadyMsg;
      if (ev.peer.role !== "worker" || typeof body?.endpoint !== "string") throw new PsError(ErrorCode.PEER_LOST, `unexpected READY from ${ev.peer.role} ${ev.peer.rank}`);
      endpoints[ev.peer.rank] = body.endpoint;
      seen.add(ev.peer.rank);
    },
    () => Array.from({ length: size }, (_, r) => r).filter((r) => !seen.has(r)).map((r) => `worker:${r}`),
  );
  const map: MapMsg = { servers: [], peers: endpoints };
  await coordinator.broadcast("worker", MsgType.MAP, map);
  return endpoints;
}
