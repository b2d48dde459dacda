import { strict as assert } from "node:assert";
import { mkdtempSync, rmSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IDX_FILE_NAMES, loadIdxFolder } from "../../src/data/folder.js";
import { writeIdx } from "../../src/data/idx.js";
import { loadDataset } from "../../src/data/load.js";
import { ErrorCode, PsError } from "../../src/util/errors.js";

function badDataset(what: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof PsError, `expected PsError, got ${String(err)}`);
    assert.equal(err.code, ErrorCode.BAD_DATASET);
    assert.match(err.message, what);
    return true;
  };
}

/** A small 3x2 image folder: train 5 samples, test 3 samples, labels 0..3. */
function makeFolder(dir: string, opts: { gz?: boolean; trainLabels?: number[]; testCount?: number } = {}): void {
  const sfx = opts.gz ? ".gz" : "";
  const train = Array.from({ length: 5 * 6 }, (_, i) => (i * 17) % 256);
  const testCount = opts.testCount ?? 3;
  const test = Array.from({ length: testCount * 6 }, (_, i) => 255 - i);
  writeIdx(join(dir, IDX_FILE_NAMES.trainImages + sfx), "ubyte", [5, 3, 2], train);
  writeIdx(join(dir, IDX_FILE_NAMES.trainLabels + sfx), "ubyte", [5], opts.trainLabels ?? [0, 1, 2, 3, 1]);
  writeIdx(join(dir, IDX_FILE_NAMES.testImages + sfx), "ubyte", [testCount, 3, 2], test);
  writeIdx(join(dir, IDX_FILE_NAMES.testLabels + sfx), "ubyte", [3], [2, 0, 1]);
}

describe("data/folder", () => {
  let root: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), "ps-folder-"));
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  for (const gz of [false, true]) {
    it(`loads a folder of ${gz ? "gzipped " : ""}IDX files`, async () => {
      const dir = mkdtempSync(join(root, "ok-"));
      makeFolder(dir, { gz });
      const ds = await loadDataset(dir, { seed: 1 });
      assert.equal(ds.task, "classification");
      assert.deepEqual(ds.inputShape, [3, 2, 1]);
      assert.equal(ds.numOutputs, 4);
      assert.equal(ds.trainCount, 5);
      assert.equal(ds.testCount, 3);
      assert.equal(ds.trainX.length, 30);
      assert.equal(ds.testX.length, 18);
      assert.deepEqual(Array.from(ds.trainY), [0, 1, 2, 3, 1]);
      assert.deepEqual(Array.from(ds.testY), [2, 0, 1]);
      assert.ok(Math.abs((ds.trainX[1] as number) - 17 / 255) < 1e-7);
      assert.equal(ds.testX[0], 1);
      for (const v of ds.trainX) assert.ok(v >= 0 && v <= 1);
    });
  }

  it("applies train/test limits without changing the class count", async () => {
    const dir = mkdtempSync(join(root, "lim-"));
    makeFolder(dir);
    const ds = await loadDataset(dir, { seed: 1, trainLimit: 2, testLimit: 1 });
    assert.equal(ds.trainCount, 2);
    assert.equal(ds.testCount, 1);
    assert.equal(ds.trainX.length, 12);
    assert.deepEqual(Array.from(ds.trainY), [0, 1]);
    assert.equal(ds.numOutputs, 4);
  });

  it("2-D float images are feature vectors, kept unscaled", () => {
    const dir = mkdtempSync(join(root, "vec-"));
    writeIdx(join(dir, IDX_FILE_NAMES.trainImages), "float", [2, 3], [1.5, -2, 3, 4, 5, 600]);
    writeIdx(join(dir, IDX_FILE_NAMES.trainLabels), "int", [2], [0, 6]);
    writeIdx(join(dir, IDX_FILE_NAMES.testImages), "float", [1, 3], [7, 8, 9]);
    writeIdx(join(dir, IDX_FILE_NAMES.testLabels), "double", [1], [2]);
    const ds = loadIdxFolder(dir);
    assert.deepEqual(ds.inputShape, [3]);
    assert.equal(ds.numOutputs, 7);
    assert.deepEqual(Array.from(ds.trainX), [1.5, -2, 3, 4, 5, 600]);
    assert.deepEqual(Array.from(ds.testY), [2]);
  });

  for (const key of Object.keys(IDX_FILE_NAMES) as (keyof typeof IDX_FILE_NAMES)[]) {
    it(`names the missing file ${IDX_FILE_NAMES[key]}`, async () => {
      const dir = mkdtempSync(join(root, "miss-"));
      makeFolder(dir);
      unlinkSync(join(dir, IDX_FILE_NAMES[key]));
      await assert.rejects(loadDataset(dir, { seed: 1 }), badDataset(new RegExp(`missing ${IDX_FILE_NAMES[key]}`)));
    });
  }

  it("rejects a folder that does not exist, naming it", async () => {
    const dir = join(root, "does-not-exist");
    await assert.rejects(loadDataset(dir, { seed: 1 }), badDataset(new RegExp(`^${dir}: .*not found`)));
  });

  it("rejects a count mismatch between images and labels", async () => {
    const dir = mkdtempSync(join(root, "count-"));
    makeFolder(dir, { testCount: 4 });
    await assert.rejects(loadDataset(dir, { seed: 1 }), badDataset(/count mismatch: 4 images but .* 3 labels/));
  });

  it("rejects non-integer and negative labels", async () => {
    const d1 = mkdtempSync(join(root, "lab-"));
    makeFolder(d1);
    writeIdx(join(d1, IDX_FILE_NAMES.trainLabels), "float", [5], [0, 1, 2.5, 3, 1]);
    await assert.rejects(loadDataset(d1, { seed: 1 }), badDataset(/label 2 is 2.5/));
    const d2 = mkdtempSync(join(root, "lab-"));
    makeFolder(d2);
    writeIdx(join(d2, IDX_FILE_NAMES.trainLabels), "byte", [5], [0, 1, -2, 3, 1]);
    await assert.rejects(loadDataset(d2, { seed: 1 }), badDataset(/label 2 is -2/));
  });

  it("rejects a corrupt file inside the folder, naming it", async () => {
    const dir = mkdtempSync(join(root, "corrupt-"));
    makeFolder(dir);
    writeIdx(join(dir, IDX_FILE_NAMES.testImages), "ubyte", [3, 3, 3], new Array(27).fill(0));
    await assert.rejects(loadDataset(dir, { seed: 1 }), badDataset(/train images are \[3, 2, 1\] but test images are \[3, 3, 1\]/));
    writeIdx(join(dir, IDX_FILE_NAMES.testImages), "ubyte", [3], [1, 2, 3]);
    await assert.rejects(loadDataset(dir, { seed: 1 }), badDataset(new RegExp(`${IDX_FILE_NAMES.testImages}: images must have`)));
  });
});
