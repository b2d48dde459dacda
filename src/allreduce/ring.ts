import type { PeerGroup } from "./peer-group.js";
import { expectFloats } from "./fold.js";
import { addInto, divideBy } from "../util/f32-kernels.js";
import { Phase } from "./wire.js";

export type ReduceOp = "sum" | "mean";

/** Chunk c of n elements cut into N balanced contiguous chunks: [start(c), start(c + 1)). */
export function chunkStart(c: number, n: number, N: number): number {
  return Math.floor((c * n) / N);
}

/**
 * Bandwidth-optimal ring allreduce (Patarasuk & Yuan 2009; the Baidu/Horovod ring) in place on
 * `buf`: a reduce-scatter of N-1 steps, after which rank r holds the reduced chunk r+1, then an
 * all-gather of N-1 steps. Each rank sends and receives 2(N-1)/N of the buffer in all.
 *
 * Pipelined: every chunk travels as segments of `segmentElems`, and a segment is summed and sent
 * on as soon as it arrives, so sending, receiving and summing overlap along the ring. Segments
 * are summed into the received message itself and that message is what goes on to the next rank,
 * so nothing is copied on the way except into `buf` at the end.
 *
 * Every chunk is reduced once, by a fixed chain of ranks, and then copied everywhere, so every
 * rank ends with the same bits. Any length works (chunks may be empty when n < N).
 *
 * Received buffers are garbage as soon as they are forwarded and copied; the group frees them
 * young between segments (PeerGroup.collectGarbage).
 *
 * Zero-copy sends and `buf`: the only sends from `buf` are the reduce-scatter's first step
 * (chunk r). Chunk r is next written by the all-gather with a value that was computed after the
 * next rank received it, and the collective returns only after that, so neither this function
 * nor the caller can change those bytes before libzmq has sent them.
 */
export async function ringAllreduce(g: PeerGroup, buf: Float32Array, op: ReduceOp, segmentElems: number): Promise<void> {
  const opId = g.nextOp();
  const N = g.size;
  const n = buf.length;
  if (N === 1 || n === 0) return;
  const r = g.rank;
  const seg = Math.max(1, Math.floor(segmentElems));
  const next = (r + 1) % N;
  const prev = (r - 1 + N) % N;
  const mod = (c: number) => ((c % N) + N) % N;
  const nsegs = (c: number) => Math.ceil((chunkStart(c + 1, n, N) - chunkStart(c, n, N)) / seg);
  const lo = (c: number, j: number) => chunkStart(c, n, N) + j * seg;
  const hi = (c: number, j: number) => Math.min(chunkStart(c + 1, n, N), lo(c, j) + seg);


  // Reduce-scatter. Step 0 sends this rank's own chunk; from then on each arriving segment of
  // chunk r-k-1 gets this rank's contribution and goes on as step k+1 (or, after the last
  // step, is complete and starts the all-gather).
  for (let j = 0, m = nsegs(r); j < m; j++) {
    await g.send(next, { phase: Phase.REDUCE_SCATTER, op: opId, step: 0, seg: j }, buf.subarray(lo(r, j), hi(r, j)));
  }
  for (let k = 0; k < N - 1; k++) {
    const c = mod(r - k - 1);
    const last = k === N - 2;
    for (let j = 0, m = nsegs(c); j < m; j++) {
      const a = lo(c, j);
      const b = hi(c, j);
      await g.collectGarbage();
      const p = await g.recv(prev, { phase: Phase.REDUCE_SCATTER, op: opId, step: k, seg: j });
      const v = expectFloats(g, p, prev, b - a);
      addInto(v, buf.subarray(a, b));
      if (!last) {
        await g.send(next, { phase: Phase.REDUCE_SCATTER, op: opId, step: k + 1, seg: j }, p);
      } else {
        if (op === "mean") divideBy(v, N);
        await g.send(next, { phase: Phase.ALL_GATHER, op: opId, step: 0, seg: j }, p);
        buf.set(v, a);
      }
    }
  }
  // All-gather: chunk r-k arrives at step k; forward it (the received message, untouched) and
  // keep a copy.
  for (let k = 0; k < N - 1; k++) {
    const c = mod(r - k);
    for (let j = 0, m = nsegs(c); j < m; j++) {
      const a = lo(c, j);
      const b = hi(c, j);
      await g.collectGarbage();
      const p = await g.recv(prev, { phase: Phase.ALL_GATHER, op: opId, step: k, seg: j });
      const v = expectFloats(g, p, prev, b - a);
      if (k < N - 2) await g.send(next, { phase: Phase.ALL_GATHER, op: opId, step: k + 1, seg: j }, p);
      buf.set(v, a);
    }
  }
}
