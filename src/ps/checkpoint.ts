import { createHash } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import type { KeyRange } from "./key-range.js";

/**
 * Shard checkpoints: <run>/checkpoints/shard-<k>/ckpt-<step>.bin, one file per checkpoint.
 *
 *    0  8 bytes  magic "PSCKPT" + u16 format version (little-endian)
 *    8  u32      length L of the header JSON
 *   12  32 bytes sha256 of the header JSON
 *   44  L bytes  header JSON (CheckpointHeader), then zero padding to a multiple of 4
 *    .  payload  the tensors of header.tensors, raw little-endian float32, in that order
 *
 * The header carries the payload's sha256, so a flipped bit anywhere, or a truncated file, is
 * found before anything is restored. A file is written to a temporary name, fsynced, renamed and
 * the folder fsynced: a crash leaves either the old set of checkpoints or the new one.
 */
export const CHECKPOINT_FORMAT = 1;
const MAGIC = Buffer.from("PSCKPT", "latin1");
const PREFIX_BYTES = 44;

export interface CheckpointHeader {
  format: number;
  runTag: string;
  shard: number;
  range: KeyRange;
  /** the checkpoint's position: sync, global steps (= version); async/SSP, applied gradients */
  step: number;
  version: number;
  appliedGradients: number;
  /** gradients pushed by each worker (its clock) that the weights include */
  clocks: number[];
  optimizer: { name: string; scalars: Record<string, number>; lrStep: number };
  /** payload tensors in order: "weights", then the optimizer's ("m", "v", ...) */
  tensors: { name: string; length: number }[];
  payloadBytes: number;
  payloadSha256: string;
  createdAt: string;
}

export interface ShardCheckpoint {
  file: string;
  header: CheckpointHeader;
  tensors: Map<string, Float32Array>;
}

export class CheckpointError extends Error {
  override readonly name = "CheckpointError";
}

export function checkpointDir(runDir: string, shard: number): string {
  return join(runDir, "checkpoints", `shard-${shard}`);
}

function fileName(step: number): string {
  return `ckpt-${String(step).padStart(10, "0")}.bin`;
}

/** The checkpoints in `dir`, newest (highest step) first. Temporary files are not listed. */
export function listCheckpoints(dir: string): { step: number; file: string }[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: { step: number; file: string }[] = [];
  for (const n of names) {
    const m = /^ckpt-(\d+)\.bin$/.exec(n);
    if (m) out.push({ step: Number(m[1]), file: join(dir, n) });
  }
  return out.sort((a, b) => b.step - a.step);
}

/** Write one checkpoint atomically and keep the newest `keep`; returns its file. */
export function writeCheckpoint(
  dir: string,
  fields: Omit<CheckpointHeader, "format" | "tensors" | "payloadBytes" | "payloadSha256" | "createdAt">,
  tensors: readonly (readonly [string, Float32Array])[],
  keep: number,
): string {
  mkdirSync(dir, { recursive: true });
  const sha = createHash("sha256");
  let payloadBytes = 0;
  const bufs = tensors.map(([, t]) => Buffer.from(t.buffer, t.byteOffset, t.byteLength));
  for (const b of bufs) {
    sha.update(b);
    payloadBytes += b.byteLength;
  }
  const header: CheckpointHeader = {
    format: CHECKPOINT_FORMAT,
    ...fields,
    tensors: tensors.map(([name, t]) => ({ name, length: t.length })),
    payloadBytes,
    payloadSha256: sha.digest("hex"),
    createdAt: new Date().toISOString(),
  };
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const prefix = Buffer.alloc(PREFIX_BYTES);
  MAGIC.copy(prefix, 0);
  prefix.writeUInt16LE(CHECKPOINT_FORMAT, 6);
  prefix.writeUInt32LE(json.byteLength, 8);
  createHash("sha256").update(json).digest().copy(prefix, 12);
  const pad = Buffer.alloc((4 - ((PREFIX_BYTES + json.byteLength) % 4)) % 4);

  const file = join(dir, fileName(fields.step));
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, "w");
  try {
    for (const b of [prefix, json, pad, ...bufs]) writeAll(fd, b);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  syncDir(dir);
  for (const old of listCheckpoints(dir).slice(Math.max(1, keep))) rmSync(old.file, { force: true });
  return file;
}

function writeAll(fd: number, b: Buffer): void {
  let off = 0;
  while (off < b.byteLength) off += writeSync(fd, b, off, b.byteLength - off);
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // not every filesystem lets a folder be fsynced; the rename is still atomic
  }
}

/** Read and verify one checkpoint; CheckpointError says what is wrong with it. */
export function readCheckpoint(file: string): ShardCheckpoint {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (err) {
    throw new CheckpointError(`${file}: cannot read it (${(err as Error).message})`);
  }
  if (buf.byteLength < PREFIX_BYTES || !buf.subarray(0, 6).equals(MAGIC)) throw new CheckpointError(`${file}: not a ps-train checkpoint`);
  const format = buf.readUInt16LE(6);
  if (format !== CHECKPOINT_FORMAT) throw new CheckpointError(`${file}: format ${format}, this version reads ${CHECKPOINT_FORMAT}`);
  const len = buf.readUInt32LE(8);
  if (PREFIX_BYTES + len > buf.byteLength) throw new CheckpointError(`${file}: truncated header`);
  const json = buf.subarray(PREFIX_BYTES, PREFIX_BYTES + len);
  if (!createHash("sha256").update(json).digest().equals(buf.subarray(12, 44))) throw new CheckpointError(`${file}: header checksum mismatch`);
  const header = JSON.parse(json.toString("utf8")) as CheckpointHeader;
  const start = PREFIX_BYTES + len + ((4 - ((PREFIX_BYTES + len) % 4)) % 4);
  const payload = buf.subarray(start);
  if (payload.byteLength !== header.payloadBytes)
    throw new CheckpointError(`${file}: payload is ${payload.byteLength} bytes, the header says ${header.payloadBytes} (truncated?)`);
  if (createHash("sha256").update(payload).digest("hex") !== header.payloadSha256) throw new CheckpointError(`${file}: payload checksum mismatch`);
  const tensors = new Map<string, Float32Array>();
  let off = 0;
  for (const t of header.tensors) {
    // Copy into fresh, aligned memory: the file buffer may sit at any offset.
    const a = new Float32Array(t.length);
    new Uint8Array(a.buffer).set(payload.subarray(off, off + t.length * 4));
    tensors.set(t.name, a);
    off += t.length * 4;
  }
  if (off !== payload.byteLength) throw new CheckpointError(`${file}: tensors take ${off} bytes, the payload has ${payload.byteLength}`);
  return { file, header, tensors };
}

/**
 * The newest checkpoint in `dir` that verifies (at exactly `step` when given); the ones skipped
 * on the way (corrupt or truncated) are listed with why. null when there is none.
 */
export function latestCheckpoint(dir: string, step?: number): { ckpt: ShardCheckpoint | null; skipped: string[] } {
  const skipped: string[] = [];
  for (const c of listCheckpoints(dir)) {
    if (step !== undefined && c.step !== step) continue;
    try {
      return { ckpt: readCheckpoint(c.file), skipped };
    } catch (err) {
      skipped.push(err instanceof Error ? err.message : String(err));
    }
  }
  return { ckpt: null, skipped };
}

/** The steps at which `dir` holds a checkpoint that verifies, newest first. */
export function validSteps(dir: string): number[] {
  const out: number[] = [];
  for (const c of listCheckpoints(dir)) {
    try {
      readCheckpoint(c.file);
      out.push(c.step);
    } catch {
      // skipped: a corrupt checkpoint is never restored
    }
  }
  return out;
}
