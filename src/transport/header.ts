/**
 * The fixed 40-byte header frame that starts every message, little-endian:
 *
 *   0 u16 magic 0x5450 ("PT")    2 u8 protocol version    3 u8 message type
 *   4 u32 run id                 8 i32 sender rank (-1: coordinator, -2: agent)
 *  12 u32 clock                 16 u32 weights version
 *  20 u32 range start (key)     24 u32 range end (exclusive)
 *  28 u8 dtype                  29 u8 flags              30 u16 status (PS_ERR_* index on ERROR)
 *  32 u32 payload byte length   36 u32 request sequence number
 *
 * Payload frames follow: raw little-endian Float32 for tensors, UTF-8 JSON for control.
 * Every field is checked by `decodeHeader` before anything reads the payload.
 */
export const HEADER_BYTES = 40;
export const MAGIC = 0x5450;
export const PROTOCOL_VERSION = 1;

export const MsgType = {
  HELLO: 1,
  CONFIG: 2,
  READY: 3,
  MAP: 4,
  START: 5,
  PROGRESS: 6,
  DONE: 7,
  STOP: 8,
  HEARTBEAT: 9,
  ERROR: 10,
  FAIL: 11,
  PULL: 20,
  PUSH_PULL: 21,
  PUSH: 22,
  WEIGHTS: 23,
  SNAPSHOT: 24,
  PAUSE: 25,
  RESUME: 26,
  STATS: 27,
  ACK: 28,
  /** pipeline: a stage's output for a micro-batch, to the next stage (see src/pipeline/link.ts) */
  ACTIVATION: 30,
  /** pipeline: the gradient of a stage's input for a micro-batch, back to the previous stage */
  ACTIVATION_GRAD: 31,
  // Worker failures (docs/reliability.md, "Worker failures"); numbered apart from the rest.
  /** coordinator -> shard: a worker left the run (JSON {rank}); the shard stops waiting for it */
  WORKER_LEFT: 40,
  /** replacement worker -> shard: ask for a join clock (no flag) or take the rank from header.clock (AT_CLOCK) */
  JOIN: 41,
  /** shard -> coordinator (control): a sync/SSP read has waited past the heartbeat timeout (JSON StallReport) */
  STALL: 42,
  /** allreduce worker -> coordinator: its peer group lost a member (JSON ElasticMsg) */
  ELASTIC: 43,
  /** coordinator -> allreduce worker: the new membership of the peer group (JSON ReformMsg) */
  REFORM: 44,
  /** coordinator -> worker (shrink): the ranks still in the run (JSON MembersMsg); data is re-partitioned among them */
  MEMBERS: 45,
} as const;
export type MsgType = (typeof MsgType)[keyof typeof MsgType];
const TYPE_NAMES = new Map<number, string>(Object.entries(MsgType).map(([k, v]) => [v, k]));
export function typeName(t: number): string {
  return TYPE_NAMES.get(t) ?? `unknown(${t})`;
}

export const DType = { NONE: 0, F32: 1, JSON: 2, UTF8: 3 } as const;
export type DType = (typeof DType)[keyof typeof DType];

/** Header flags. */
export const Flag = {
  /** the run is stopping: the reader should finish after this reply */
  STOPPING: 1,
  /** the read had to wait for slower workers (SSP/sync) */
  WAITED: 2,
  /**
   * PAUSE/RESUME: hold every read for clock >= header.clock (evaluation at an exact step);
   * SNAPSHOT: answer once every worker's clock >= header.clock
   */
  AT_CLOCK: 4,
  /**
   * PUSH_PULL/PUSH: the gradient is in the sender's shared-memory file (transport/shm.ts), the
   * payload is a reference to it; PULL/PUSH_PULL: answer the same way. WEIGHTS: the weights are
   * in the shard's shared-memory slot that the payload names.
   */
  SHM: 8,
} as const;

export interface Header {
  type: MsgType;
  runId: number;
  rank: number;
  clock: number;
  version: number;
  rangeStart: number;
  rangeEnd: number;
  dtype: DType;
  flags: number;
  status: number;
  byteLength: number;
  seq: number;
}

export function makeHeader(type: MsgType, fields: Partial<Omit<Header, "type">> = {}): Header {
  return {
    type,
    runId: fields.runId ?? 0,
    rank: fields.rank ?? -1,
    clock: fields.clock ?? 0,
    version: fields.version ?? 0,
    rangeStart: fields.rangeStart ?? 0,
    rangeEnd: fields.rangeEnd ?? 0,
    dtype: fields.dtype ?? DType.NONE,
    flags: fields.flags ?? 0,
    status: fields.status ?? 0,
    byteLength: fields.byteLength ?? 0,
    seq: fields.seq ?? 0,
  };
}

/** Encode into `out` (a reusable 40-byte buffer) or a fresh one. */
export function encodeHeader(h: Header, out: Buffer = Buffer.allocUnsafe(HEADER_BYTES)): Buffer {
  out.writeUInt16LE(MAGIC, 0);
  out.writeUInt8(PROTOCOL_VERSION, 2);
  out.writeUInt8(h.type, 3);
  out.writeUInt32LE(h.runId >>> 0, 4);
  out.writeInt32LE(h.rank | 0, 8);
  out.writeUInt32LE(h.clock >>> 0, 12);
  out.writeUInt32LE(h.version >>> 0, 16);
  out.writeUInt32LE(h.rangeStart >>> 0, 20);
  out.writeUInt32LE(h.rangeEnd >>> 0, 24);
  out.writeUInt8(h.dtype, 28);
  out.writeUInt8(h.flags, 29);
  out.writeUInt16LE(h.status, 30);
  out.writeUInt32LE(h.byteLength >>> 0, 32);
  out.writeUInt32LE(h.seq >>> 0, 36);
  return out;
}

/** Why a frame was refused; the server counts these by reason. */
export class WireError extends Error {
  override readonly name = "WireError";
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Decode and check the fields that do not depend on who receives the message.
 * The receiver checks the rest (run id, rank, range, payload) against its own state.
 */
export function decodeHeader(frame: Buffer | undefined): Header {
  if (frame === undefined) throw new WireError("missing-header", "message has no header frame");
  if (frame.length !== HEADER_BYTES)
    throw new WireError("header-length", `header frame is ${frame.length} bytes, expected ${HEADER_BYTES}`);
  const magic = frame.readUInt16LE(0);
  if (magic !== MAGIC) throw new WireError("magic", `bad magic 0x${magic.toString(16)}`);
  const version = frame.readUInt8(2);
  if (version !== PROTOCOL_VERSION) throw new WireError("protocol-version", `protocol version ${version}, expected ${PROTOCOL_VERSION}`);
  const type = frame.readUInt8(3);
  if (!TYPE_NAMES.has(type)) throw new WireError("unknown-type", `unknown message type ${type}`);
  const dtype = frame.readUInt8(28);
  if (dtype > DType.UTF8) throw new WireError("dtype", `unknown dtype ${dtype}`);
  const h: Header = {
    type: type as MsgType,
    runId: frame.readUInt32LE(4),
    rank: frame.readInt32LE(8),
    clock: frame.readUInt32LE(12),
    version: frame.readUInt32LE(16),
    rangeStart: frame.readUInt32LE(20),
    rangeEnd: frame.readUInt32LE(24),
    dtype: dtype as DType,
    flags: frame.readUInt8(29),
    status: frame.readUInt16LE(30),
    byteLength: frame.readUInt32LE(32),
    seq: frame.readUInt32LE(36),
  };
  if (h.rangeEnd < h.rangeStart)
    throw new WireError("range", `range end ${h.rangeEnd} is before its start ${h.rangeStart}`);
  return h;
}
