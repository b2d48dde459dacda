/**
 * Moving Float32 data between JS and the tfjs backend without fresh allocations.
 *
 * On tfjs-backend-wasm, `dataSync()` copies out of the wasm heap into a newly allocated
 * ArrayBuffer. On this machine first-touching fresh pages costs ~10 us per 4 KiB, so
 * reading an MLP gradient (1 MB) took 0.08-2.8 ms (median 2.8 ms) instead of 22 us for a
 * copy straight from the heap into the caller's buffer. Uploads: wasm copies values into
 * its heap as the tensor is created, so a view (subarray) can be passed without a copy;
 * the cpu and tfjs-node backends keep a reference to the array, so those get a copy.
 */
import * as tf from "@tensorflow/tfjs";

interface WasmBackendLike {
  wasm: { HEAPU8: Uint8Array };
  getMemoryOffset(dataId: object): number;
}

function wasmBackend(): WasmBackendLike | null {
  if (tf.getBackend() !== "wasm") return null;
  const be = tf.backend() as unknown as Partial<WasmBackendLike>;
  if (typeof be.getMemoryOffset !== "function" || !(be.wasm?.HEAPU8 instanceof Uint8Array)) return null;
  return be as WasmBackendLike;
}

/** Copy `count` float32 values of `t`, from element `start`, into `out` at `outOffset`. */
export function readInto(t: tf.Tensor, out: Float32Array, start = 0, count = t.size - start, outOffset = 0): void {
  if (t.dtype !== "float32") throw new Error(`readInto: dtype ${t.dtype}`);
  const be = wasmBackend();
  if (be !== null) {
    const offset = be.getMemoryOffset(t.dataId);
    // take the heap view now: the wasm memory (and HEAPU8) is replaced when it grows
    const heap = be.wasm.HEAPU8;
    out.set(new Float32Array(heap.buffer, heap.byteOffset + offset + 4 * start, count), outOffset);
    return;
  }
  const data = t.dataSync() as Float32Array;
  out.set(count === data.length && start === 0 ? data : data.subarray(start, start + count), outOffset);
}

/**
 * A float32 tensor holding `values` (a copy: later changes to `values` do not reach it).
 */
export function tensorFrom(values: Float32Array, shape: number[]): tf.Tensor {
  return tf.tensor(wasmBackend() !== null ? values : values.slice(), shape, "float32");
}
