import { copyOf } from "./halving-doubling.js";
import type { PeerGroup } from "./peer-group.js";
import { addInto, divideBy, f32Of } from "./reduce.js";
import type { ReduceOp } from "./ring.js";
import { Phase } from "./wire.js";
import { ErrorCode, PsError } from "../util/errors.js";

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
  const r = g.rank;
  let p2 = 1;
  while (p2 * 2 <= N) p2 *= 2;
  const extra = N - p2;
  const take = (p: Buffer | null, from: number): Float32Array => {
    if (p === null || p.byteLength !== n * 4) {
      throw new PsError(ErrorCode.BAD_MESSAGE, `rank ${r}: rank ${from} sent ${p?.byteLength ?? 0} bytes where ${n * 4} were due (do all ranks reduce buffers of the same length?)`);
    }
    return f32Of(p);
  };
  let vr: number;
  if (r < 2 * extra) {
    if (r % 2 === 0) {
      await g.send(r + 1, { phase: Phase.FOLD, op: opId, step: 0, seg: 0 }, copyOf(buf));
      vr = -1;
    } else {
      addInto(buf, take(await g.recv(r - 1, { phase: Phase.FOLD, op: opId, step: 0, seg: 0 }), r - 1));
      vr = r >> 1;
    }
  } else {
    vr = r - extra;
  }
  if (vr >= 0) {
    for (let d = 1, step = 0; d < p2; d *= 2, step++) {
      const pv = vr ^ d;
      const peer = pv < extra ? pv * 2 + 1 : pv + extra;
      const slot = { phase: Phase.DOUBLING, op: opId, step, seg: 0 };
      g.collectGarbage();
      await g.send(peer, slot, copyOf(buf));
      addInto(buf, take(await g.recv(peer, slot), peer));
    }
    if (op === "mean") divideBy(buf, N);
  }
  if (r < 2 * extra) {
    const slot = { phase: Phase.FOLD, op: opId, step: 1, seg: 0 };
    if (r % 2 === 1) await g.send(r - 1, slot, copyOf(buf));
    else buf.set(take(await g.recv(r + 1, slot), r + 1));
  }
}
