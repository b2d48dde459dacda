import { readFileSync } from "node:fs";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULTS, type TrainConfig } from "../../src/config/train-config.js";
import { prepareRun, runLocal, type Summary } from "../../src/cluster/train-run.js";

export function tempDir(prefix = "ps-train-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A small, fast config on the synthetic task; override what the test is about. */
export function smallConfig(over: Partial<TrainConfig> = {}): TrainConfig {
  return {
    ...DEFAULTS,
    dataset: "synthetic",
    model: "logreg",
    backend: "cpu",
    batchSize: 16,
    epochs: 1,
    optimizer: "sgd",
    lr: 0.1,
    timeoutMs: 20000,
    heartbeatMs: 500,
    logLevel: "silent",
    progress: "off",
    out: join(tempDir(), "run"),
    ...over,
  };
}

export async function train(cfg: TrainConfig): Promise<Summary> {
  const prep = await prepareRun(cfg);
  return runLocal(prep);
}

/** The saved model's weights in the flat parameter order (weights.bin is written in that order). */
export function savedWeights(out: string): Float32Array {
  const buf = readFileSync(join(out, "model", "weights.bin"));
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
