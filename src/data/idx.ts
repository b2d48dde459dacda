/**
 * IDX files (the MNIST container format): two zero bytes, a dtype byte, the number of
 * dimensions, then each dimension as a big-endian uint32, then the values, big-endian.
 * A file may also be gzip-compressed (`NAME.gz`).
 *
 * Every problem with a file is reported as PsError(BAD_DATASET, "<path>: <what is wrong>").
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { gunzipSync, gzipSync } from "node:zlib";
import { ErrorCode, PsError } from "../util/errors.js";

export const IDX_DTYPES = {
  ubyte: 0x08,
  byte: 0x09,
  short: 0x0b,
  int: 0x0c,
  float: 0x0d,
  double: 0x0e,
} as const;
export type IdxDtype = keyof typeof IDX_DTYPES;

export type IdxData = Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;

export interface IdxFile {
  dtype: IdxDtype;
  dims: number[];
  data: IdxData;
}

const BYTES: Record<IdxDtype, number> = { ubyte: 1, byte: 1, short: 2, int: 4, float: 4, double: 8 };

const DTYPE_BY_CODE = new Map<number, IdxDtype>(
  (Object.entries(IDX_DTYPES) as [IdxDtype, number][]).map(([name, code]) => [code, name]),
);

function bad(name: string, what: string): PsError {
  return new PsError(ErrorCode.BAD_DATASET, `${name}: ${what}`);
}

function hex(n: number, width: number): string {
  return "0x" + n.toString(16).padStart(width, "0");
}

/** Number of values an IDX file with these dimensions holds. */
export function idxElementCount(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

interface IdxHeader {
  dtype: IdxDtype;
  dims: number[];
  /** bytes before the data */
  headerBytes: number;
  /** number of values */
  count: number;
}

/**
 * Validate an IDX header held in `head` (at least the first 4 + 4 * ndim bytes of the file, or
 * the whole file) against the file's total length.
 */
function parseIdxHeader(head: Uint8Array, fileBytes: number, name: string): IdxHeader {
  if (fileBytes < 4 || head.length < 4) {
    throw bad(name, `truncated: ${fileBytes} bytes, too short for an IDX header`);
  }
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const magic = view.getUint16(0, false);
  if (magic !== 0) {
    throw bad(name, `not an IDX file: bad magic ${hex(view.getUint32(0, false), 8)} (expected 0x0000 then a dtype byte)`);
  }
  const code = view.getUint8(2);
  const dtype = DTYPE_BY_CODE.get(code);
  if (dtype === undefined) throw bad(name, `bad magic: unknown IDX dtype byte ${hex(code, 2)}`);
  const ndim = view.getUint8(3);
  if (ndim === 0) throw bad(name, "bad magic: IDX header declares 0 dimensions");
  const headerBytes = 4 + 4 * ndim;
  if (fileBytes < headerBytes || head.length < headerBytes) {
    throw bad(name, `truncated: header needs ${headerBytes} bytes for ${ndim} dimensions, file has ${fileBytes}`);
  }
  const dims: number[] = [];
  for (let i = 0; i < ndim; i++) dims.push(view.getUint32(4 + 4 * i, false));
  const count = idxElementCount(dims);
  const expected = headerBytes + count * BYTES[dtype];
  if (fileBytes !== expected) {
    const what = fileBytes < expected ? "truncated" : "wrong length";
    throw bad(name, `${what}: dims [${dims.join(", ")}] of ${dtype} need ${expected} bytes, file has ${fileBytes}`);
  }
  return { dtype, dims, headerBytes, count };
}

const UBYTE_SCALE = (() => {
  const t = new Float32Array(256);
  for (let i = 0; i < 256; i++) t[i] = i / 255;
  return t;
})();

/** ubyte -> [0, 1] Float32: the hot loop of loading MNIST, kept monomorphic. */
function scaleUbyteInto(src: Uint8Array, n: number, out: Float32Array, at: number): void {
  const lut = UBYTE_SCALE;
  for (let i = 0; i < n; i++) out[at + i] = lut[src[i] as number] as number;
}

/** Decode `n` big-endian values of `dtype` from `src` into `out` starting at `at`. */
function decodeInto(
  dtype: IdxDtype,
  src: Uint8Array,
  n: number,
  out: Float32Array | Float64Array | Int32Array | Int16Array,
  at: number,
  scaleUbyte: boolean,
): void {
  if (dtype === "ubyte") {
    if (scaleUbyte && out instanceof Float32Array) {
      scaleUbyteInto(src, n, out, at);
    } else {
      for (let i = 0; i < n; i++) out[at + i] = src[i] as number;
    }
    return;
  }
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  switch (dtype) {
    case "byte":
      for (let i = 0; i < n; i++) out[at + i] = view.getInt8(i);
      break;
    case "short":
      for (let i = 0; i < n; i++) out[at + i] = view.getInt16(2 * i, false);
      break;
    case "int":
      for (let i = 0; i < n; i++) out[at + i] = view.getInt32(4 * i, false);
      break;
    case "float":
      for (let i = 0; i < n; i++) out[at + i] = view.getFloat32(4 * i, false);
      break;
    case "double":
      for (let i = 0; i < n; i++) out[at + i] = view.getFloat64(8 * i, false);
      break;
  }
}

/**
 * Parse an IDX file held in memory. `ubyte` and `byte` data are views on `buf` (no copy);
 * the multi-byte types are converted from big-endian into a new array.
 */
export function parseIdx(buf: Uint8Array, nameForErrors: string): IdxFile {
  const { dtype, dims, headerBytes: off, count } = parseIdxHeader(buf, buf.length, nameForErrors);
  let data: IdxData;
  const body = buf.subarray(off);
  switch (dtype) {
    case "ubyte":
      data = buf.subarray(off, off + count);
      break;
    case "byte":
      data = new Int8Array(buf.buffer, buf.byteOffset + off, count);
      break;
    case "short":
      data = new Int16Array(count);
      break;
    case "int":
      data = new Int32Array(count);
      break;
    case "float":
      data = new Float32Array(count);
      break;
    case "double":
      data = new Float64Array(count);
      break;
  }
  if (!(data instanceof Uint8Array) && !(data instanceof Int8Array)) decodeInto(dtype, body, count, data, 0, false);
  return { dtype, dims, data };
}

/**
 * The file to read for `path`: `path` itself if it exists, else `path.gz`; null if neither.
 */
export function resolveIdxPath(path: string): string | null {
  if (existsSync(path)) return path;
  const gz = path + ".gz";
  if (!path.endsWith(".gz") && existsSync(gz)) return gz;
  return null;
}

function locate(path: string): string {
  const file = resolveIdxPath(path);
  if (file === null) {
    throw bad(path, path.endsWith(".gz") ? "file not found" : "file not found (nor " + path + ".gz)");
  }
  return file;
}

function readWhole(file: string): Buffer {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (err) {
    throw bad(file, `cannot read: ${(err as Error).message}`);
  }
  if (file.endsWith(".gz")) {
    try {
      raw = gunzipSync(raw);
    } catch (err) {
      throw bad(file, `corrupt gzip data: ${(err as Error).message}`);
    }
  }
  return raw;
}

/** Read an IDX file from disk, falling back to `path.gz` when `path` is absent. */
export function readIdx(path: string): IdxFile {
  const file = locate(path);
  return parseIdx(readWhole(file), file);
}

export interface IdxFloat32 {
  dtype: IdxDtype;
  /** dimensions of the whole file */
  dims: number[];
  /** items (along the first dimension) converted into `data` */
  items: number;
  data: Float32Array;
}

const CHUNK_BYTES = 1 << 20;

/**
 * Read an IDX file straight into a Float32Array: the first `maxItems` items along the first
 * dimension (0 or absent: all), ubyte scaled by 1/255 when `scaleUbyte`. A plain file is read in
 * small chunks into one reused buffer, so only the Float32 result is allocated; this is
 * what keeps loading MNIST fast. The whole file is still validated (header and length).
 */
export function readIdxFloat32(path: string, opts: { maxItems?: number; scaleUbyte?: boolean } = {}): IdxFloat32 {
  const file = locate(path);
  const scale = opts.scaleUbyte ?? false;
  const limit = opts.maxItems ?? 0;
  const kept = (dims: number[]): number => {
    const n = dims[0] as number;
    return limit > 0 ? Math.min(limit, n) : n;
  };
  if (file.endsWith(".gz")) {
    const raw = readWhole(file);
    const h = parseIdxHeader(raw, raw.length, file);
    const items = kept(h.dims);
    const n = h.dims[0] === 0 ? 0 : (h.count / (h.dims[0] as number)) * items;
    const data = new Float32Array(n);
    decodeInto(h.dtype, raw.subarray(h.headerBytes), n, data, 0, scale);
    return { dtype: h.dtype, dims: h.dims, items, data };
  }
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (err) {
    throw bad(file, `cannot read: ${(err as Error).message}`);
  }
  try {
    const size = fstatSync(fd).size;
    const head = Buffer.alloc(Math.min(size, 4 + 4 * 255));
    readFully(fd, head, 0, file);
    const h = parseIdxHeader(head, size, file);
    const items = kept(h.dims);
    const n = h.dims[0] === 0 ? 0 : (h.count / (h.dims[0] as number)) * items;
    const data = new Float32Array(n);
    const elem = BYTES[h.dtype];
    const chunk = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, Math.max(elem, n * elem)));
    const perChunk = Math.floor(chunk.length / elem);
    let done = 0;
    while (done < n) {
      const m = Math.min(perChunk, n - done);
      const part = chunk.subarray(0, m * elem);
      readFully(fd, part, h.headerBytes + done * elem, file);
      decodeInto(h.dtype, part, m, data, done, scale);
      done += m;
    }
    return { dtype: h.dtype, dims: h.dims, items, data };
  } finally {
    closeSync(fd);
  }
}

function readFully(fd: number, into: Buffer, position: number, file: string): void {
  let got = 0;
  while (got < into.length) {
    const r = readSync(fd, into, got, into.length - got, position + got);
    if (r === 0) throw bad(file, `truncated: file ended while reading ${into.length} bytes at offset ${position}`);
    got += r;
  }
}

/** Encode values as an IDX file (big-endian). */
export function encodeIdx(dtype: IdxDtype, dims: readonly number[], data: ArrayLike<number>): Buffer {
  if (dims.length === 0 || dims.length > 255) throw new RangeError(`encodeIdx: bad number of dims ${dims.length}`);
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 0 || d > 0xffffffff) throw new RangeError(`encodeIdx: bad dim ${d}`);
  }
  const count = idxElementCount(dims);
  if (data.length !== count) {
    throw new RangeError(`encodeIdx: dims [${dims.join(", ")}] hold ${count} values, got ${data.length}`);
  }
  const size = BYTES[dtype];
  const headerBytes = 4 + 4 * dims.length;
  const buf = Buffer.alloc(headerBytes + count * size);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  view.setUint8(2, IDX_DTYPES[dtype]);
  view.setUint8(3, dims.length);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  const off = headerBytes;
  for (let i = 0; i < count; i++) {
    const v = data[i] as number;
    switch (dtype) {
      case "ubyte":
        view.setUint8(off + i, v);
        break;
      case "byte":
        view.setInt8(off + i, v);
        break;
      case "short":
        view.setInt16(off + 2 * i, v, false);
        break;
      case "int":
        view.setInt32(off + 4 * i, v, false);
        break;
      case "float":
        view.setFloat32(off + 4 * i, v, false);
        break;
      case "double":
        view.setFloat64(off + 8 * i, v, false);
        break;
    }
  }
  return buf;
}

/** Write an IDX file; a path ending in `.gz` is gzip-compressed. */
export function writeIdx(path: string, dtype: IdxDtype, dims: readonly number[], data: ArrayLike<number>): void {
  const buf = encodeIdx(dtype, dims, data);
  writeFileSync(path, path.endsWith(".gz") ? gzipSync(buf) : buf);
}
