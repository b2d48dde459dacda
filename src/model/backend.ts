/**
 * Compute-backend selection for TensorFlow.js.
 *
 * `@tensorflow/tfjs` is the core (it brings the pure-JS `cpu` backend, and `webgl`, which
 * is unusable in Node). Faster backends are loaded on demand:
 *
 *   node-gpu  `@tensorflow/tfjs-node-gpu` (libtensorflow + CUDA; backend name `tensorflow`)
 *   node      `@tensorflow/tfjs-node`     (libtensorflow, CPU;   backend name `tensorflow`)
 *   wasm      `@tensorflow/tfjs-backend-wasm` (XNNPACK; single-threaded SIMD in Node)
 *   cpu       pure JS, always available
 *
 * `auto` tries them in that order. The two tfjs-node packages are optional dependencies and
 * may be absent: they are loaded with a dynamic `import()` inside try/catch.
 *
 * wasm in Node: the package's Node entry point (`dist/tf-backend-wasm.node.js`) finds its
 * `.wasm` binaries next to itself (`node_modules/@tensorflow/tfjs-backend-wasm/dist/`), so
 * `setWasmPaths` is not needed. When wasm is selected we also register the gradient kernels
 * the wasm backend lacks (see wasm-kernels.ts), so that tfjs autodiff through conv2d works.
 */
import * as tf from "@tensorflow/tfjs";
import type { BackendName } from "../config/train-config.js";
import { ErrorCode, PsError } from "../util/errors.js";
import { registerWasmGradientKernels } from "./wasm-kernels.js";

export interface BackendInfo {
  /** the BackendName that was used (never `auto`) */
  backend: Exclude<BackendName, "auto">;
  /** tfjs backend name (tf.getBackend()) and how it was set up, one line */
  detail: string;
}

type Concrete = Exclude<BackendName, "auto">;

const AUTO_ORDER: readonly Concrete[] = ["node-gpu", "node", "wasm", "cpu"];

let selected: BackendInfo | null = null;

/** The backend chosen by the last successful selectBackend(), or null. */
export function selectedBackend(): BackendInfo | null {
  return selected;
}

/**
 * Select and initialise the tfjs backend. `auto` tries node-gpu > node > wasm > cpu.
 * An explicit name that cannot be loaded throws PsError(BACKEND).
 */
export async function selectBackend(name: BackendName): Promise<{ backend: string; detail: string }> {
  if (name === "auto") {
    const skipped: string[] = [];
    for (const candidate of AUTO_ORDER) {
      try {
        const info = await trySelect(candidate);
        const detail = skipped.length > 0 ? `${info.detail} (auto; skipped ${skipped.join("; ")})` : `${info.detail} (auto)`;
        selected = { backend: info.backend, detail };
        return selected;
      } catch (err) {
        skipped.push(`${candidate}: ${reason(err)}`);
      }
    }
    throw new PsError(ErrorCode.BACKEND, `no tfjs backend could be initialised: ${skipped.join("; ")}`);
  }
  try {
    selected = await trySelect(name);
    return selected;
  } catch (err) {
    const hint = name === "node" || name === "node-gpu" ? "; install it or use --backend wasm|cpu|auto" : "";
    throw new PsError(ErrorCode.BACKEND, `backend ${name} is not available: ${reason(err)}${hint}`);
  }
}

async function trySelect(name: Concrete): Promise<BackendInfo> {
  switch (name) {
    case "node-gpu":
      return await selectTfjsNode("@tensorflow/tfjs-node-gpu", "node-gpu");
    case "node":
      return await selectTfjsNode("@tensorflow/tfjs-node", "node");
    case "wasm":
      return await selectWasm();
    case "cpu":
      return await selectCpu();
  }
}

/** First line of an error message, for one-line reports. */
function reason(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND") {
    const m = /Cannot find (?:package|module) '([^']+)'/.exec(msg);
    return `${m?.[1] ?? "module"} is not installed`;
  }
  return (msg.split("\n")[0] ?? msg).trim();
}

async function setAndCheck(tfName: string): Promise<void> {
  const ok = await tf.setBackend(tfName);
  if (!ok) throw new Error(`tf.setBackend('${tfName}') failed to initialise`);
  await tf.ready();
  if (tf.getBackend() !== tfName) throw new Error(`tf.getBackend() is '${tf.getBackend()}', expected '${tfName}'`);
}

async function selectTfjsNode(pkg: string, name: "node" | "node-gpu"): Promise<BackendInfo> {
  // A variable specifier keeps TypeScript from resolving a package that may be absent.
  const spec: string = pkg;
  await import(spec);
  if (tf.findBackendFactory("tensorflow") == null) {
    // Happens when tfjs-node brought its own copy of @tensorflow/tfjs-core.
    throw new Error(`${pkg} loaded but registered no 'tensorflow' backend with this @tensorflow/tfjs (version mismatch?)`);
  }
  await setAndCheck("tensorflow");
  return { backend: name, detail: `tensorflow (${pkg}, tfjs ${tf.version.tfjs})` };
}

async function selectWasm(): Promise<BackendInfo> {
  const wasm = await import("@tensorflow/tfjs-backend-wasm");
  await setAndCheck("wasm");
  registerWasmGradientKernels();
  const simd = (await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT")) === true;
  const mt = (await tf.env().getAsync("WASM_HAS_MULTITHREAD_SUPPORT")) === true;
  const threads = mt ? wasm.getThreadsCount() : 1;
  return {
    backend: "wasm",
    detail: `wasm (tfjs-backend-wasm ${wasm.version_wasm}, simd=${simd}, threads=${threads})`,
  };
}

async function selectCpu(): Promise<BackendInfo> {
  await setAndCheck("cpu");
  // The cpu backend prints a multi-line "install tfjs-node" banner on its first tensor in
  // Node; the choice of backend is already reported through `detail`.
  const cpu = tf.backend() as unknown as { firstUse?: boolean };
  if (typeof cpu.firstUse === "boolean") cpu.firstUse = false;
  return { backend: "cpu", detail: `cpu (pure JS, tfjs ${tf.version.tfjs})` };
}
