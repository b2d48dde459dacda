import { copyOf } from "./fold.js";
import type { PeerGroup } from "./peer-group.js";
import { f32View } from "../transport/frames.js";
import { Phase } from "./wire.js";
import { ErrorCode, PsError } from "../util/errors.js";

/**
 * Binomial-tree broadcast of `buf` from `root` (ceil(log2 N) rounds): every rank ends with the
 * root's bits. Used to start every worker from the same weights. The root sends a copy, so the
 * caller may change `buf` as soon as this returns; the others forward what they received.
 */
export async function broadcast(g: PeerGroup, buf: Float32Array, root: number): Promise<void> {
  const opId = g.nextOp();
  const N = g.size;
  const n = buf.length;
  if (N === 1 || n === 0) return;
  if (!Number.isInteger(root) || root < 0 || root >= N) throw new Error(`broadcast root ${root} is outside the group of ${N}`);
  const r = g.rank;
  const vr = (r - root + N) % N;
  const real = (v: number) => (v + root) % N;
  const slot = { phase: Phase.BROADCAST, op: opId, step: 0, seg: 0 };
  let payload: Buffer;
  let high = 1;
  if (vr === 0) {
    payload = copyOf(buf);
  } else {
    while (high * 2 <= vr) high *= 2;
    const parent = real(vr - high);
    const p = await g.recv(parent, slot);
    if (p === null || p.byteLength !== buf.byteLength) {
      throw new PsError(ErrorCode.BAD_MESSAGE, `rank ${r}: rank ${parent} broadcast ${p?.byteLength ?? 0} bytes where ${buf.byteLength} were due`);
    }
    buf.set(f32View(p));
    payload = p;
  }
  // Children vr + m for every power of two m above vr's highest bit, the largest subtree first.
  const children: number[] = [];
  for (let m = vr === 0 ? 1 : high * 2; vr + m < N; m *= 2) children.push(vr + m);
  for (const c of children.reverse()) await g.send(real(c), slot, payload);
}
