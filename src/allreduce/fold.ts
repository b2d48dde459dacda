import type { PeerGroup } from "./peer-group.js";
import { f32View } from "../transport/frames.js";
import { addInto } from "../util/f32-kernels.js";
import { Phase } from "./wire.js";
import { ErrorCode, PsError } from "../util/errors.js";

/** A copy of `a` as a Buffer, for sending while `a` goes on changing. */
export function copyOf(a: Float32Array): Buffer {
  const b = Buffer.allocUnsafe(a.byteLength);
  b.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  return b;
}

/** The received payload as `len` floats, or a protocol error naming the sender. */
export function expectFloats(g: PeerGroup, p: Buffer | null, from: number, len: number): Float32Array {
  if (len === 0 && p === null) return new Float32Array(0); // an empty block (fewer elements than ranks)
  if (p === null || p.byteLength !== len * 4) {
    throw new PsError(ErrorCode.BAD_MESSAGE, `rank ${g.rank}: rank ${from} sent ${p?.byteLength ?? 0} bytes where ${len * 4} were due (do all ranks reduce buffers of the same length?)`);
  }
  return f32View(p);
}

/**
 * The power-of-two core of a group for the log-step algorithms: with p2 the largest power of two
 * <= N and extra = N - p2, ranks 0..2·extra-1 pair up (even into odd) and the even ones sit out.
 */
export interface Folded {
  p2: number;
  extra: number;
  /** this rank's place among the p2 participating ranks, -1 when it sits out */
  vr: number;
  /** the real rank of participating rank v */
  real(v: number): number;
}

/** Fold the extra ranks in: the even one of each pair sends its buffer and sits out. */
export async function foldIn(g: PeerGroup, buf: Float32Array, opId: number): Promise<Folded> {
  const N = g.size;
  const r = g.rank;
  let p2 = 1;
  while (p2 * 2 <= N) p2 *= 2;
  const extra = N - p2;
  const real = (v: number) => (v < extra ? v * 2 + 1 : v + extra);
  const slot = { phase: Phase.FOLD, op: opId, step: 0, seg: 0 };
  if (r >= 2 * extra) return { p2, extra, vr: r - extra, real };
  if (r % 2 === 0) {
    await g.send(r + 1, slot, copyOf(buf));
    return { p2, extra, vr: -1, real };
  }
  addInto(buf, expectFloats(g, await g.recv(r - 1, slot), r - 1, buf.length));
  return { p2, extra, vr: r >> 1, real };
}

/** Hand the result back to the ranks that sat out. */
export async function foldOut(g: PeerGroup, buf: Float32Array, opId: number, f: Folded): Promise<void> {
  const r = g.rank;
  if (r >= 2 * f.extra) return;
  const slot = { phase: Phase.FOLD, op: opId, step: 1, seg: 0 };
  if (r % 2 === 1) await g.send(r - 1, slot, copyOf(buf));
  else buf.set(expectFloats(g, await g.recv(r + 1, slot), r + 1, buf.length));
}
