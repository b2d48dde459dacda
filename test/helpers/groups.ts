import { randomBytes } from "node:crypto";
import { PeerGroup } from "../../src/allreduce/peer-group.js";
import type { TransportName } from "../../src/config/train-config.js";
import { bindAddress, removeIpcDir } from "../../src/transport/endpoint.js";
import { removeShmDir, ShmFiles, shmDir } from "../../src/transport/shm.js";

export interface Groups {
  groups: PeerGroup[];
  /** the run tag of the groups' ipc sockets and shared-memory files */
  tag: string;
  close(): void;
}

/** N peer groups in this process, fully connected over real ZeroMQ sockets. */
export async function makeGroups(N: number, transport: TransportName = "ipc", timeoutMs = 10_000, runId = 77): Promise<Groups> {
  const tag = `test-${process.pid}-${randomBytes(3).toString("hex")}`;
  // shm: each member its own descriptors on the same files, as separate processes would have
  const shm = () => (transport === "shm" ? { shm: { files: new ShmFiles(shmDir(tag)), group: "peers" } } : {});
  const groups = Array.from({ length: N }, (_, rank) => new PeerGroup({ rank, size: N, runId, timeoutMs, ...shm() }));
  const endpoints = await Promise.all(groups.map((g, r) => g.bind(bindAddress(transport, tag, `peer-${r}`))));
  for (const g of groups) g.connect(endpoints);
  return {
    groups,
    tag,
    close() {
      for (const g of groups) g.close();
      if (transport !== "tcp") removeIpcDir(tag);
      removeShmDir(tag);
    },
  };
}

/** Integer-valued floats: sums of up to 8 of them are exact in float32. */
export function intData(rank: number, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((i * 7 + rank * 13) % 1001) - 500;
  return a;
}
