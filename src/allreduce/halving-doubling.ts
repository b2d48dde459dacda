import type { PeerGroup } from "./peer-group.js";
import { copyOf, expectFloats, foldIn, foldOut } from "./fold.js";
import { addInto, divideBy } from "../util/f32-kernels.js";
import { chunkStart, type ReduceOp } from "./ring.js";
import { Phase } from "./wire.js";

/**
 * Rabenseifner's allreduce (Thakur, Rabenseifner & Gropp 2005): a reduce-scatter by recursive
 * halving, then an all-gather by recursive doubling. Each rank sends the ring's 2(N-1)/N of the
 * buffer, in 2·log2(N) steps instead of the ring's 2(N-1): the same bandwidth term with a much
 * smaller latency term, which matters when N exceeds the cores and every step waits for a
 * process to be scheduled.
 *
 * N not a power of two: ranks 0..2e-1 fold pairwise first, as in recursive doubling. Each block
 * is reduced by one rank and copied to the others, so every rank ends with the same bits.
 *
 * Zero-copy: the halving steps send from `buf` halves that are next written by the all-gather
 * with values computed after the partner received them; the all-gather sends copies.
 */
export async function halvingDoublingAllreduce(g: PeerGroup, buf: Float32Array, op: ReduceOp): Promise<void> {
  const opId = g.nextOp();
  const N = g.size;
  const n = buf.length;
  if (N === 1 || n === 0) return;
  const f = await foldIn(g, buf, opId);
  const { p2, vr, real } = f;
  if (vr >= 0) {
    const at = (b: number) => chunkStart(b, n, p2);
    // Reduce-scatter by recursive halving: keep the half of the current block range that holds
    // this rank's block, send the other half, add the partner's copy of the kept half.
    let lo = 0;
    let hi = p2;
    let step = 0;
    for (let mask = p2 >> 1; mask >= 1; mask >>= 1, step++) {
      const peer = real(vr ^ mask);
      const mid = (lo + hi) >> 1;
      const [keepLo, keepHi, giveLo, giveHi] = (vr & mask) === 0 ? [lo, mid, mid, hi] : [mid, hi, lo, mid];
      const slot = { phase: Phase.REDUCE_SCATTER, op: opId, step, seg: 0 };
      await g.collectGarbage();
      await g.send(peer, slot, buf.subarray(at(giveLo), at(giveHi)));
      const kept = buf.subarray(at(keepLo), at(keepHi));
      addInto(kept, expectFloats(g, await g.recv(peer, slot), peer, kept.length));
      lo = keepLo;
      hi = keepHi;
    }
    if (op === "mean") divideBy(buf.subarray(at(lo), at(hi)), N);
    // All-gather by recursive doubling: swap the blocks held so far with the partner's.
    step = 0;
    for (let mask = 1; mask < p2; mask <<= 1, step++) {
      const peer = real(vr ^ mask);
      const slot = { phase: Phase.ALL_GATHER, op: opId, step, seg: 0 };
      const size = hi - lo;
      const [otherLo, otherHi] = (vr & mask) === 0 ? [hi, hi + size] : [lo - size, lo];
      await g.collectGarbage();
      await g.send(peer, slot, copyOf(buf.subarray(at(lo), at(hi))));
      const other = buf.subarray(at(otherLo), at(otherHi));
      other.set(expectFloats(g, await g.recv(peer, slot), peer, other.length));
      lo = Math.min(lo, otherLo);
      hi = Math.max(hi, otherHi);
    }
  }

  await foldOut(g, buf, opId, f);
}
