import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/**
 * zeromq.js hands every received frame over 128 bytes to JS as an external Buffer that owns
 * libzmq's memory; V8 frees it only when it collects the Buffer, and it counts those bytes as
 * external memory: every ~64 MB received since the last full collection starts an incremental
 * mark-compact (4-6 ms pauses here, measured with --trace-gc on bench:allreduce, about one per
 * four 16 MiB allreduces per rank). The Buffers die young, so a minor collection (a scavenge of
 * the tiny young generation, ~0.2 ms) frees them before they add up to a full one.
 *
 * `ReceiveCollector` runs one after every `everyBytes` received. bench:allreduce --young-gc 0
 * measures the difference side by side; PS_TRAIN_YOUNG_GC_BYTES sets the default (0 = off).
 */
let scavenge: ((opts: { type: "minor" }) => void) | null | undefined;

function scavenger(): ((opts: { type: "minor" }) => void) | null {
  if (scavenge !== undefined) return scavenge;
  try {
    // --expose-gc set at run time reaches contexts created afterwards; the function works in this isolate.
    setFlagsFromString("--expose-gc");
    scavenge = runInNewContext("gc") as (opts: { type: "minor" }) => void;
  } catch {
    scavenge = null;
  }
  return scavenge;
}

export class ReceiveCollector {
  private since = 0;
  collections = 0;

  constructor(private readonly everyBytes: number) {}

  /**
   * Count `bytes` received; collect the young generation once `everyBytes` have come in.
   * Returns true when it collected: the freed buffers' bytes are handed back to V8's external
   * memory count by finalizers that Node runs from the event loop (setImmediate), so a loop
   * that keeps finding messages ready should let the event loop turn then.
   */
  note(bytes: number): boolean {
    if (this.everyBytes <= 0) return false;
    this.since += bytes;
    if (this.since < this.everyBytes) return false;
    this.since = 0;
    const gc = scavenger();
    if (!gc) return false;
    gc({ type: "minor" });
    this.collections++;
    return true;
  }
}

function defaultEveryBytes(): number {
  const env = process.env["PS_TRAIN_YOUNG_GC_BYTES"];
  const n = env === undefined || env.trim() === "" ? NaN : Number(env);
  return Number.isInteger(n) && n >= 0 ? n : 16 * 1024 * 1024;
}

/** Bytes between minor GCs unless a component is told otherwise: 16 MiB, or PS_TRAIN_YOUNG_GC_BYTES. */
export const YOUNG_GC_BYTES = defaultEveryBytes();

/** The collector of this process's parameter-server traffic (worker replies, shard requests). */
export const processCollector = new ReceiveCollector(YOUNG_GC_BYTES);
