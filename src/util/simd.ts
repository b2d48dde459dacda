import { SIMD_WASM_BASE64 } from "./simd-module.js";

/**
 * WebAssembly SIMD for the element-wise float32 loops on the hot paths: summing gradients, the
 * NaN/Infinity check, and the optimizers' updates (src/util/simd.wat). `npm run bench:kernels`
 * here: sum of 2 M values (8 MiB) 2.06 → 0.27 ms, the check 1.16 → 0.29 ms, SGD 2.33 → 0.62 ms;
 * on the MNIST MLP's 266,610 values Adam 1.21 → 0.59 ms, momentum 0.66 → 0.18 ms. The results
 * are the JavaScript loops' bit for bit (see simd.wat), so whether a kernel runs in WebAssembly
 * or in JavaScript never changes a run's numbers.
 *
 * WebAssembly code reads only its own memory: arrays that the kernels work on are allocated in
 * it with `allocF32` (a shared memory, so that growing it never detaches the arrays handed out
 * before). A kernel runs in WebAssembly when its arrays live there and falls back to the
 * JavaScript loop otherwise; the optimizers copy a gradient that lives elsewhere in first
 * (`resident`; memcpy: 0.28 ms per 8 MiB), which costs less than the loop it saves.
 *
 * PS_TRAIN_SIMD=0 turns it off (every array a plain Float32Array, every loop JavaScript), so a
 * benchmark can compare both in one sitting.
 */
interface Exports {
  add(dst: number, src: number, n: number): void;
  div(a: number, d: number, n: number): void;
  finite(a: number, n: number): number;
  sgd(w: number, g: number, n: number, a: number): void;
  sgdWd(w: number, g: number, n: number, lr: number, scale: number, wd: number): void;
  momentum(w: number, v: number, g: number, n: number, mu: number, scale: number, lr: number): void;
  momentumWd(w: number, v: number, g: number, n: number, mu: number, scale: number, lr: number, wd: number): void;
  adam(w: number, m: number, v: number, g: number, n: number, scale: number, wd: number, b1: number, ob1: number, b2: number, ob2: number, step: number, isc2: number, eps: number): void;
}

/** The dense-layer kernels (simd.wat documents each); arguments are byte offsets and counts. */
export interface DenseKernels {
  nzRows(x: number, rows: number, cols: number, idx: number, val: number, cnt: number): number;
  denseFwd(idx: number, val: number, cnt: number, rows: number, inCols: number, w: number, b: number, y: number, outCols: number, relu: number): void;
  byColumn(idx: number, val: number, cnt: number, rows: number, cols: number, colPtr: number, rIdx: number, cVal: number): void;
  denseDw(colPtr: number, rIdx: number, cVal: number, inCols: number, dz: number, outCols: number, dw: number): void;
  colSum(m: number, rows: number, cols: number, out: number): void;
  denseDx(idx: number, cnt: number, rows: number, inCols: number, w: number, dz: number, outCols: number, dx: number): void;
}

const PAGE = 65536;
/** 2 GiB: reserved address space only; memory is committed as the heap grows. */
const MAX_PAGES = 32768;
/** Blocks are aligned (and sized) to a cache line. */
const ALIGN = 64;
/** Below this many elements a call into WebAssembly costs more than it saves. */
export const SIMD_MIN_ELEMENTS = 64;

interface Heap {
  memory: WebAssembly.Memory;
  k: Exports & DenseKernels;
  /** every buffer object the memory has had: views made before a grow keep the older one */
  buffers: WeakSet<ArrayBufferLike>;
  /** free blocks, sorted by offset: [offset, bytes] */
  free: [number, number][];
  /** allocated blocks: offset -> bytes */
  used: Map<number, number>;
  top: number;
  scratch: Float32Array | null;
}

let heap: Heap | null | undefined;

function enabled(): boolean {
  const v = process.env["PS_TRAIN_SIMD"];
  return v === undefined || v.trim() === "" || v.trim() !== "0";
}

function theHeap(): Heap | null {
  if (heap !== undefined) return heap;
  heap = null;
  if (!enabled()) return heap;
  try {
    const memory = new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES, shared: true });
    const mod = new WebAssembly.Module(Buffer.from(SIMD_WASM_BASE64, "base64"));
    const inst = new WebAssembly.Instance(mod, { env: { memory } });
    const buffers = new WeakSet<ArrayBufferLike>();
    buffers.add(memory.buffer);
    // offset 0 stays unused, so that no array starts at 0
    heap = { memory, k: inst.exports as unknown as Exports & DenseKernels, buffers, free: [], used: new Map(), top: ALIGN, scratch: null };
  } catch {
    heap = null; // no SIMD or no shared memory in this runtime: JavaScript loops
  }
  return heap;
}

/** Whether the kernels run in WebAssembly in this process. */
export function simdEnabled(): boolean {
  return theHeap() !== null;
}

/**
 * The dense-layer kernels, null when SIMD is off. They read and write only arrays from allocF32
 * (check with isResident): int32 arrays are float32 blocks that JavaScript never reads.
 */
export function denseKernels(): DenseKernels | null {
  return theHeap()?.k ?? null;
}

function takeBlock(h: Heap, bytes: number): number | null {
  for (let i = 0; i < h.free.length; i++) {
    const [off, size] = h.free[i]!;
    if (size < bytes) continue;
    if (size === bytes) h.free.splice(i, 1);
    else h.free[i] = [off + bytes, size - bytes];
    return off;
  }
  const need = h.top + bytes - h.memory.buffer.byteLength;
  if (need > 0) {
    try {
      h.memory.grow(Math.ceil(need / PAGE));
    } catch {
      return null;
    }
    h.buffers.add(h.memory.buffer);
  }
  const off = h.top;
  h.top += bytes;
  return off;
}

/**
 * n float32 zeros in the kernels' memory (a plain Float32Array when SIMD is off or the memory is
 * full). Long-lived arrays only (weights, optimizer state, aggregation buffers): give them back
 * with `freeF32` when their owner closes.
 */
export function allocF32(n: number): Float32Array {
  const h = theHeap();
  if (!h || n < SIMD_MIN_ELEMENTS) return new Float32Array(n);
  const bytes = Math.ceil((n * 4) / ALIGN) * ALIGN;
  const off = takeBlock(h, bytes);
  if (off === null) return new Float32Array(n);
  h.used.set(off, bytes);
  const a = new Float32Array(h.memory.buffer, off, n);
  a.fill(0);
  return a;
}

/** Return an array from allocF32 (anything else is left to the garbage collector). */
export function freeF32(a: Float32Array): void {
  const h = heap;
  if (!h || !h.buffers.has(a.buffer)) return;
  const off = a.byteOffset;
  const bytes = h.used.get(off);
  if (bytes === undefined) return;
  h.used.delete(off);
  let i = 0;
  while (i < h.free.length && h.free[i]![0] < off) i++;
  h.free.splice(i, 0, [off, bytes]);
  // merge with the neighbours
  if (i + 1 < h.free.length && off + bytes === h.free[i + 1]![0]) {
    h.free[i]![1] += h.free[i + 1]![1];
    h.free.splice(i + 1, 1);
  }
  if (i > 0 && h.free[i - 1]![0] + h.free[i - 1]![1] === off) {
    h.free[i - 1]![1] += h.free[i]![1];
    h.free.splice(i, 1);
  }
}

/** Whether `a` lives in the kernels' memory. */
export function isResident(a: Float32Array): boolean {
  return heap ? heap.buffers.has(a.buffer) : false;
}

/**
 * `a` itself when it lives in the kernels' memory, else a copy of it in a scratch array that the
 * next call reuses (so: read it before calling again). Null when SIMD is off.
 */
export function resident(a: Float32Array): Float32Array | null {
  const h = theHeap();
  if (!h) return null;
  if (h.buffers.has(a.buffer)) return a;
  if (!h.scratch || h.scratch.length < a.length) {
    if (h.scratch) freeF32(h.scratch);
    const s = allocF32(Math.max(a.length, 1024));
    if (!h.buffers.has(s.buffer)) return null;
    h.scratch = s;
  }
  const s = h.scratch.subarray(0, a.length);
  s.set(a);
  return s;
}

/** Bytes of the kernels' memory: reserved (grown to) and in use. */
export function simdHeapBytes(): { grown: number; used: number } {
  const h = heap;
  if (!h) return { grown: 0, used: 0 };
  let used = 0;
  for (const b of h.used.values()) used += b;
  return { grown: h.memory.buffer.byteLength, used };
}

// ---- kernels: each returns the number of leading elements it handled (0: none, run the JS loop)

/**
 * dst[i] += src[i] for the leading elements, when both live in the kernels' memory. (Not when
 * src lives elsewhere: copying a received segment in first made the ring allreduce no faster at
 * N=2 and ~8% slower at N=4, bench:allreduce 16 MiB with PS_TRAIN_SIMD=0/1 alternating.)
 */
export function simdAdd(dst: Float32Array, src: Float32Array): number {
  const h = heap; // null or undefined: nothing was allocated there, so nothing is resident
  if (!h || dst.length < SIMD_MIN_ELEMENTS || !h.buffers.has(dst.buffer) || !h.buffers.has(src.buffer)) return 0;
  h.k.add(dst.byteOffset, src.byteOffset, dst.length);
  return dst.length & ~3;
}

export function simdDiv(a: Float32Array, d: number): number {
  const h = heap;
  if (!h || a.length < SIMD_MIN_ELEMENTS || !h.buffers.has(a.buffer)) return 0;
  h.k.div(a.byteOffset, d, a.length);
  return a.length & ~3;
}

/** Whether the leading `handled` elements are all finite (handled 0: it did not run). */
export function simdFinite(a: Float32Array): { handled: number; finite: boolean } {
  const h = heap;
  if (!h || a.length < SIMD_MIN_ELEMENTS || !h.buffers.has(a.buffer)) return { handled: 0, finite: true };
  return { handled: a.length & ~3, finite: h.k.finite(a.byteOffset, a.length) === 1 };
}

function residentAll(h: Heap, ...arrays: Float32Array[]): boolean {
  for (const a of arrays) if (!h.buffers.has(a.buffer)) return false;
  return true;
}

/**
 * For the f64x2 kernels: the gradient's first n values in the kernels' memory (copied in when
 * they live elsewhere), when every updated array lives there; else null (run the JS loop).
 */
function gradientIn(n: number, g: Float32Array, ...updated: Float32Array[]): { h: Heap; g: Float32Array } | null {
  const h = heap;
  if (!h || n < SIMD_MIN_ELEMENTS || !residentAll(h, ...updated)) return null;
  const gr = resident(g.length === n ? g : g.subarray(0, n));
  return gr ? { h, g: gr } : null;
}

export function simdSgd(w: Float32Array, g: Float32Array, n: number, lr: number, scale: number, wd: number): number {
  const r = gradientIn(n, g, w);
  if (!r) return 0;
  if (wd === 0) r.h.k.sgd(w.byteOffset, r.g.byteOffset, n, lr * scale);
  else r.h.k.sgdWd(w.byteOffset, r.g.byteOffset, n, lr, scale, wd);
  return n & ~1;
}

export function simdMomentum(w: Float32Array, v: Float32Array, g: Float32Array, n: number, mu: number, scale: number, lr: number, wd: number): number {
  const r = gradientIn(n, g, w, v);
  if (!r) return 0;
  if (wd === 0) r.h.k.momentum(w.byteOffset, v.byteOffset, r.g.byteOffset, n, mu, scale, lr);
  else r.h.k.momentumWd(w.byteOffset, v.byteOffset, r.g.byteOffset, n, mu, scale, lr, wd);
  return n & ~1;
}

export interface AdamScalars {
  scale: number;
  wd: number;
  b1: number;
  ob1: number;
  b2: number;
  ob2: number;
  step: number;
  isc2: number;
  eps: number;
}

export function simdAdam(w: Float32Array, m: Float32Array, v: Float32Array, g: Float32Array, n: number, s: AdamScalars): number {
  const r = gradientIn(n, g, w, m, v);
  if (!r) return 0;
  r.h.k.adam(w.byteOffset, m.byteOffset, v.byteOffset, r.g.byteOffset, n, s.scale, s.wd, s.b1, s.ob1, s.b2, s.ob2, s.step, s.isc2, s.eps);
  return n & ~1;
}
