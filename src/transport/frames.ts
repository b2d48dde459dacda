import { WireError } from "./header.js";

/**
 * A Float32Array over a received frame without copying when the frame is 4-byte aligned;
 * libzmq may hand out frames at any offset, so a misaligned one is copied into `scratch`.
 */
export function f32View(frame: Buffer, scratch?: Float32Array): Float32Array {
  if (frame.byteLength % 4 !== 0) throw new WireError("payload-length", `tensor frame of ${frame.byteLength} bytes is not a whole number of float32`);
  const n = frame.byteLength / 4;
  if (frame.byteOffset % 4 === 0) return new Float32Array(frame.buffer, frame.byteOffset, n);
  const out = scratch && scratch.length >= n ? scratch.subarray(0, n) : new Float32Array(n);
  new Uint8Array(out.buffer, out.byteOffset, frame.byteLength).set(frame);
  return out;
}

/** A Buffer view over (part of) a Float32Array, for sending without a copy. */
export function f32Frame(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

export function jsonFrame(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), "utf8");
}

export function parseJsonFrame(frame: Buffer | undefined, what: string): unknown {
  if (frame === undefined) throw new WireError("missing-payload", `${what}: missing JSON payload`);
  try {
    return JSON.parse(frame.toString("utf8"));
  } catch {
    throw new WireError("json", `${what}: payload is not valid JSON`);
  }
}

/** True when no element is NaN or ±Infinity (x * 0 is 0 exactly for every finite x). */
export function allFinite(a: Float32Array): boolean {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * 0;
  return s === 0;
}
