/**
 * `--dataset` dispatch: mnist | synthetic | synthetic-linear | PATH (a folder of IDX files).
 */
import type { Dataset } from "./dataset.js";
import { sampleSize } from "./dataset.js";
import { checkIdxFolder, loadIdxFolder } from "./folder.js";
import { loadMnist, mnistDataDir } from "./mnist.js";
import { makeSyntheticClassification, makeSyntheticLinear } from "./synthetic.js";
import { badOption } from "../util/errors.js";

export const BUILTIN_DATASETS = ["mnist", "synthetic", "synthetic-linear"] as const;
export type BuiltinDataset = (typeof BUILTIN_DATASETS)[number];

export interface LoadOptions {
  seed: number;
  /** keep only the first N training samples (0 or absent: all) */
  trainLimit?: number;
  testLimit?: number;
}

export type DatasetKind = { kind: BuiltinDataset } | { kind: "folder"; path: string };

/**
 * Cheap validation of a dataset spec without loading any data: a builtin name, or a folder that
 * exists and holds the four IDX files. Throws PsError(BAD_DATASET) naming what is wrong.
 */
export function describeDataset(spec: string): DatasetKind {
  if ((BUILTIN_DATASETS as readonly string[]).includes(spec)) {
    if (spec === "mnist") checkIdxFolder(mnistDataDir());
    return { kind: spec as BuiltinDataset };
  }
  checkIdxFolder(spec);
  return { kind: "folder", path: spec };
}

function checkLimit(option: string, v: number | undefined): number {
  if (v === undefined) return 0;
  if (!Number.isInteger(v) || v < 0) throw badOption(`${option}: must be a non-negative integer (0 = all), got ${v}`);
  return v;
}

/** The first `trainLimit` / `testLimit` samples (copies), or `ds` itself when nothing is cut. */
export function limitDataset(ds: Dataset, trainLimit: number, testLimit: number): Dataset {
  const xs = sampleSize(ds.inputShape);
  const ys = ds.task === "classification" ? 1 : ds.numOutputs;
  const cut = (x: Float32Array, y: Float32Array, count: number, limit: number): [Float32Array, Float32Array, number] => {
    if (limit === 0 || limit >= count) return [x, y, count];
    return [x.slice(0, limit * xs), y.slice(0, limit * ys), limit];
  };
  const [trainX, trainY, trainCount] = cut(ds.trainX, ds.trainY, ds.trainCount, trainLimit);
  const [testX, testY, testCount] = cut(ds.testX, ds.testY, ds.testCount, testLimit);
  if (trainCount === ds.trainCount && testCount === ds.testCount) return ds;
  return { ...ds, trainX, trainY, trainCount, testX, testY, testCount };
}

export async function loadDataset(spec: string, opts: LoadOptions): Promise<Dataset> {
  const trainLimit = checkLimit("--train-limit", opts.trainLimit);
  const testLimit = checkLimit("--test-limit", opts.testLimit);
  const kind = describeDataset(spec);
  switch (kind.kind) {
    case "mnist":
      return loadMnist({ trainLimit, testLimit });
    case "synthetic":
      return limitDataset(makeSyntheticClassification({ seed: opts.seed }), trainLimit, testLimit);
    case "synthetic-linear":
      return limitDataset(makeSyntheticLinear({ seed: opts.seed }), trainLimit, testLimit);
    case "folder":
      return loadIdxFolder(kind.path, { name: kind.path, trainLimit, testLimit });
  }
}
