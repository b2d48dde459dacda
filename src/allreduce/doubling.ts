import { copyOf, expectFloats, foldIn, foldOut } from "./fold.js";
import type { PeerGroup } from "./peer-group.js";
import { addInto, divideBy } from "../util/f32-kernels.js";
import type { ReduceOp } from "./ring.js";
import { Phase } from "./wire.js";

/**
 * Recursive doubling (Thakur, Rabenseifner & Gropp 2005): log2(N) rounds in which rank pairs
 * at distance 1, 2, 4, ... swap their whole buffers and add. Latency log2(N)·α instead of the
 * ring's 2(N-1)·α, at N/2·log2(N) times the ring's bytes per rank: the choice for small buffers.
 *
 * N not a power of two: with p the largest power of two <= N and e = N - p, ranks 0..2e-1
 * pair up first (even into odd), the p remaining ranks double, and the odd ranks hand the result
 * back. Both partners of a round compute a + b, and IEEE addition commutes, so every rank ends
 * with the same bits.
 */
export async function doublingAllreduce(g: PeerGroup, buf: Float32Array, op: ReduceOp): Promise<void> {
  const opId = g.nextOp();
  const N = g.size;
  const n = buf.length;
  if (N === 1 || n === 0) return;
  const f = await foldIn(g, buf, opId);
  if (f.vr >= 0) {
    for (let d = 1, step = 0; d < f.p2; d *= 2, step++) {
      const peer = f.real(f.vr ^ d);
      const slot = { phase: Phase.DOUBLING, op: opId, step, seg: 0 };
      await g.collectGarbage();
      await g.send(peer, slot, copyOf(buf));
      addInto(buf, expectFloats(g, await g.recv(peer, slot), peer, n));
    }
    if (op === "mean") divideBy(buf, N);
  }
  await foldOut(g, buf, opId, f);
}
