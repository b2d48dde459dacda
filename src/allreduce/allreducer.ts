import { broadcast } from "./broadcast.js";
import { doublingAllreduce } from "./doubling.js";
import { halvingDoublingAllreduce } from "./halving-doubling.js";
import type { PeerGroup } from "./peer-group.js";
import { type ReduceOp, ringAllreduce } from "./ring.js";

import { ALLREDUCE_ALGO_NAMES, type AllreduceAlgoName, DEFAULTS } from "../config/train-config.js";

export const ALLREDUCE_ALGOS = ALLREDUCE_ALGO_NAMES;
export type AllreduceAlgo = AllreduceAlgoName;

export interface AllreduceOptions {
  /** `auto`: doubling up to `smallBytes`, ring above */
  algo: AllreduceAlgo;
  /** pipelining segment of the ring, in bytes */
  segmentBytes: number;
  /** largest buffer that `auto` sends through recursive doubling */
  smallBytes: number;
  /** cap of one fusion buffer, in bytes */
  fusionBytes: number;
}

/**
 * Defaults measured by `npm run bench:allreduce` on the 2-core reference machine
 * (docs/benchmarks-allreduce.md has the sweeps that chose them).
 */
export const ALLREDUCE_DEFAULTS: AllreduceOptions = {
  algo: DEFAULTS.allreduceAlgo,
  segmentBytes: DEFAULTS.allreduceSegmentBytes,
  smallBytes: DEFAULTS.allreduceSmallBytes,
  fusionBytes: DEFAULTS.fusionBytes,
};

/**
 * The collectives of one peer group, with the algorithm chosen per call and a fusion buffer
 * that packs many small tensors into few collectives (as Horovod's tensor fusion does).
 */
export class Allreducer {
  readonly opts: AllreduceOptions;
  private fusion: Float32Array | null = null;
  /** collectives run, by algorithm */
  readonly calls: Record<Exclude<AllreduceAlgo, "auto">, number> = { ring: 0, doubling: 0, "halving-doubling": 0 };

  constructor(
    readonly group: PeerGroup,
    opts: Partial<AllreduceOptions> = {},
  ) {
    this.opts = { ...ALLREDUCE_DEFAULTS, ...opts };
    if (!(this.opts.segmentBytes >= 4)) throw new Error(`segment size ${this.opts.segmentBytes} bytes is below one float32`);
    if (!(this.opts.fusionBytes >= 4)) throw new Error(`fusion buffer cap ${this.opts.fusionBytes} bytes is below one float32`);
  }

  /** Which algorithm `allreduce` uses for a buffer of `bytes`. */
  algoFor(bytes: number): Exclude<AllreduceAlgo, "auto"> {
    if (this.opts.algo !== "auto") return this.opts.algo;
    return bytes <= this.opts.smallBytes ? "doubling" : "ring";
  }

  /** Reduce `buf` across the group, in place; every rank ends with the same bits. */
  async allreduce(buf: Float32Array, op: ReduceOp = "sum"): Promise<void> {
    const algo = this.algoFor(buf.byteLength);
    this.calls[algo]++;
    if (algo === "doubling") await doublingAllreduce(this.group, buf, op);
    else if (algo === "halving-doubling") await halvingDoublingAllreduce(this.group, buf, op);
    else await ringAllreduce(this.group, buf, op, Math.max(1, Math.floor(this.opts.segmentBytes / 4)));
  }

  /**
   * Reduce a list of tensors (every rank passes the same shapes in the same order). Consecutive
   * tensors are grouped into buckets of at most `fusionBytes`; a bucket whose tensors already lie
   * back to back in one ArrayBuffer is reduced where it is, any other is packed into the fusion
   * buffer, reduced and unpacked. A tensor larger than the cap is reduced on its own.
   */
  async allreduceTensors(tensors: readonly Float32Array[], op: ReduceOp = "sum"): Promise<void> {
    const capElems = Math.max(1, Math.floor(this.opts.fusionBytes / 4));
    let i = 0;
    while (i < tensors.length) {
      let j = i;
      let elems = 0;
      while (j < tensors.length && (j === i || elems + tensors[j]!.length <= capElems)) elems += tensors[j++]!.length;
      const bucket = tensors.slice(i, j);
      i = j;
      if (elems === 0) continue;
      const view = contiguousView(bucket);
      if (view) {
        await this.allreduce(view, op);
        continue;
      }
      if (!this.fusion || this.fusion.length < elems) this.fusion = new Float32Array(Math.max(elems, Math.min(capElems, 2 * elems)));
      const f = this.fusion.subarray(0, elems);
      let o = 0;
      for (const t of bucket) {
        f.set(t, o);
        o += t.length;
      }
      await this.allreduce(f, op);
      o = 0;
      for (const t of bucket) {
        t.set(f.subarray(o, o + t.length));
        o += t.length;
      }
    }
  }

  /** Every rank gets `root`'s `buf`. */
  async broadcast(buf: Float32Array, root = 0): Promise<void> {
    await broadcast(this.group, buf, root);
  }
}

/** One Float32Array over tensors that lie back to back in the same buffer, or null. */
function contiguousView(ts: readonly Float32Array[]): Float32Array | null {
  const first = ts[0]!;
  let end = first.byteOffset + first.byteLength;
  let n = first.length;
  for (let k = 1; k < ts.length; k++) {
    const t = ts[k]!;
    if (t.buffer !== first.buffer || t.byteOffset !== end) return null;
    end += t.byteLength;
    n += t.length;
  }
  return new Float32Array(first.buffer, first.byteOffset, n);
}
