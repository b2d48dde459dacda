import { WireError } from "../transport/header.js";

/**
 * The header frame of every message between allreduce peers (28 bytes, little-endian), followed
 * by at most one payload frame of raw float32 (or nothing):
 *
 *   0 u16 magic 0x5241 ("AR")   2 u8 version   3 u8 phase
 *   4 u32 run id                8 u32 sender rank
 *  12 u32 collective number    16 u32 step    20 u32 segment
 *  24 u32 payload byte length
 *
 * Collectives are numbered in the order every rank calls them, so a message names exactly where
 * in which collective it belongs; a receiver checks every field against what it expects next.
 */
export const AR_HEADER_BYTES = 28;
export const AR_MAGIC = 0x5241;
export const AR_VERSION = 1;

export const Phase = {
  /** ring reduce-scatter */
  REDUCE_SCATTER: 1,
  /** ring all-gather */
  ALL_GATHER: 2,
  /** recursive doubling exchange */
  DOUBLING: 3,
  /** non-power-of-two fold-in / fold-out around recursive doubling */
  FOLD: 4,
  BROADCAST: 5,
  BARRIER: 6,
  /** a rank that timed out tells the others who it was waiting for */
  STALL: 7,
} as const;
export type Phase = (typeof Phase)[keyof typeof Phase];
const PHASE_NAMES = new Map<number, string>(Object.entries(Phase).map(([k, v]) => [v, k.toLowerCase().replace("_", "-")]));
export function phaseName(p: number): string {
  return PHASE_NAMES.get(p) ?? `phase(${p})`;
}

export interface ArHeader {
  phase: Phase;
  runId: number;
  src: number;
  op: number;
  step: number;
  seg: number;
  byteLength: number;
}

export function encodeArHeader(h: ArHeader, out: Buffer = Buffer.allocUnsafe(AR_HEADER_BYTES)): Buffer {
  out.writeUInt16LE(AR_MAGIC, 0);
  out.writeUInt8(AR_VERSION, 2);
  out.writeUInt8(h.phase, 3);
  out.writeUInt32LE(h.runId >>> 0, 4);
  out.writeUInt32LE(h.src >>> 0, 8);
  out.writeUInt32LE(h.op >>> 0, 12);
  out.writeUInt32LE(h.step >>> 0, 16);
  out.writeUInt32LE(h.seg >>> 0, 20);
  out.writeUInt32LE(h.byteLength >>> 0, 24);
  return out;
}

/** Decode and check everything that does not depend on the receiver's state. */
export function decodeArHeader(frame: Buffer | undefined, size: number): ArHeader {
  if (frame === undefined) throw new WireError("missing-header", "message has no header frame");
  if (frame.length !== AR_HEADER_BYTES) throw new WireError("header-length", `header frame is ${frame.length} bytes, expected ${AR_HEADER_BYTES}`);
  const magic = frame.readUInt16LE(0);
  if (magic !== AR_MAGIC) throw new WireError("magic", `bad magic 0x${magic.toString(16)}`);
  const version = frame.readUInt8(2);
  if (version !== AR_VERSION) throw new WireError("protocol-version", `allreduce protocol version ${version}, expected ${AR_VERSION}`);
  const phase = frame.readUInt8(3);
  if (!PHASE_NAMES.has(phase)) throw new WireError("unknown-type", `unknown allreduce phase ${phase}`);
  const src = frame.readUInt32LE(8);
  if (src >= size) throw new WireError("rank", `sender rank ${src} is outside the group of ${size}`);
  return {
    phase: phase as Phase,
    runId: frame.readUInt32LE(4),
    src,
    op: frame.readUInt32LE(12),
    step: frame.readUInt32LE(16),
    seg: frame.readUInt32LE(20),
    byteLength: frame.readUInt32LE(24),
  };
}
