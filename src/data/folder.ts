/**
 * A dataset from a folder of IDX files named as MNIST's:
 *   train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte
 * (each optionally gzip-compressed as NAME.gz).
 *
 * Images: [n, rows, cols] -> inputShape [rows, cols, 1]; [n, rows, cols, c] -> [rows, cols, c];
 * [n, d] -> [d]. ubyte pixels are scaled by 1/255 to [0, 1]; other dtypes are kept as they are.
 * Labels: [n] (or [n, 1]) non-negative integers; numOutputs = max label + 1.
 */
import { existsSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import type { Dataset } from "./dataset.js";
import type { IdxFile } from "./idx.js";
import { readIdx, readIdxFloat32, resolveIdxPath } from "./idx.js";
import { ErrorCode, PsError } from "../util/errors.js";

export const IDX_FILE_NAMES = {
  trainImages: "train-images-idx3-ubyte",
  trainLabels: "train-labels-idx1-ubyte",
  testImages: "t10k-images-idx3-ubyte",
  testLabels: "t10k-labels-idx1-ubyte",
} as const;

export interface FolderLoadOptions {
  /** dataset name to report (default: the folder's base name) */
  name?: string;
  /** convert only the first N training samples (0 or absent: all) */
  trainLimit?: number;
  testLimit?: number;
}

function bad(message: string): PsError {
  return new PsError(ErrorCode.BAD_DATASET, message);
}

/**
 * Check that `dir` is a folder holding the four IDX files, without reading them.
 * Returns the path of each file (plain or .gz).
 */
export function checkIdxFolder(dir: string): Record<keyof typeof IDX_FILE_NAMES, string> {
  if (!existsSync(dir)) throw bad(`${dir}: dataset folder not found`);
  if (!statSync(dir).isDirectory()) throw bad(`${dir}: dataset path is not a folder`);
  const out = {} as Record<keyof typeof IDX_FILE_NAMES, string>;
  const missing: string[] = [];
  for (const [key, file] of Object.entries(IDX_FILE_NAMES) as [keyof typeof IDX_FILE_NAMES, string][]) {
    const found = resolveIdxPath(join(dir, file));
    if (found === null) missing.push(file);
    else out[key] = found;
  }
  if (missing.length > 0) {
    throw bad(`${dir}: missing ${missing.join(", ")} (or .gz); a dataset folder needs ${Object.values(IDX_FILE_NAMES).join(", ")}`);
  }
  return out;
}

function imageShape(file: string, d: readonly number[]): number[] {
  if (d.length === 2) return [d[1] as number];
  if (d.length === 3) return [d[1] as number, d[2] as number, 1];
  if (d.length === 4) return [d[1] as number, d[2] as number, d[3] as number];
  throw bad(`${file}: images must have 2, 3 or 4 dimensions ([n, d], [n, rows, cols] or [n, rows, cols, c]), got [${d.join(", ")}]`);
}

function checkLabels(file: string, lab: IdxFile): void {
  const d = lab.dims;
  if (!(d.length === 1 || (d.length === 2 && d[1] === 1))) {
    throw bad(`${file}: labels must have shape [n], got [${d.join(", ")}]`);
  }
}

interface Split {
  x: Float32Array;
  y: Float32Array;
  count: number;
  shape: number[];
  maxLabel: number;
}

function loadSplit(imagesFile: string, labelsFile: string, limit: number): Split {
  const img = readIdxFloat32(imagesFile, { maxItems: limit, scaleUbyte: true });
  const shape = imageShape(imagesFile, img.dims);
  const lab = readIdx(labelsFile);
  checkLabels(labelsFile, lab);
  const nImg = img.dims[0] as number;
  const nLab = lab.dims[0] as number;
  if (nImg !== nLab) {
    throw bad(`${imagesFile}: count mismatch: ${nImg} images but ${basename(labelsFile)} has ${nLab} labels`);
  }
  if (nImg === 0) throw bad(`${imagesFile}: holds no samples`);
  const count = img.items;
  const x = img.data;
  const y = new Float32Array(count);
  let maxLabel = 0;
  // Validate every label in the file, not only the ones kept, so a corrupt file is always caught;
  // the class count also comes from the whole file so that a limit does not change the model's shape.
  for (let i = 0; i < nLab; i++) {
    const v = lab.data[i] as number;
    if (!Number.isInteger(v) || v < 0) {
      throw bad(`${labelsFile}: label ${i} is ${v}; labels must be non-negative integers (class indices)`);
    }
    if (v > maxLabel) maxLabel = v;
    if (i < count) y[i] = v;
  }
  return { x, y, count, shape, maxLabel };
}

/** Load a folder of MNIST-named IDX files as a classification dataset. */
export function loadIdxFolder(dir: string, opts: FolderLoadOptions = {}): Dataset {
  const files = checkIdxFolder(dir);
  const train = loadSplit(files.trainImages, files.trainLabels, opts.trainLimit ?? 0);
  const test = loadSplit(files.testImages, files.testLabels, opts.testLimit ?? 0);
  if (train.shape.join("x") !== test.shape.join("x")) {
    throw bad(
      `${dir}: train images are [${train.shape.join(", ")}] but test images are [${test.shape.join(", ")}]`,
    );
  }
  return {
    name: opts.name ?? basename(dir),
    task: "classification",
    inputShape: train.shape,
    numOutputs: Math.max(train.maxLabel, test.maxLabel) + 1,
    trainX: train.x,
    trainY: train.y,
    trainCount: train.count,
    testX: test.x,
    testY: test.y,
    testCount: test.count,
  };
}
