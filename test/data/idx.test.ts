import { strict as assert } from "node:assert";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import type { IdxDtype } from "../../src/data/idx.js";
import { encodeIdx, parseIdx, readIdx, readIdxFloat32, writeIdx } from "../../src/data/idx.js";
import { ErrorCode, PsError } from "../../src/util/errors.js";

const SAMPLES: Record<IdxDtype, number[]> = {
  ubyte: [0, 1, 127, 128, 200, 255],
  byte: [-128, -1, 0, 1, 64, 127],
  short: [-32768, -300, 0, 1, 258, 32767],
  int: [-2147483648, -70000, 0, 1, 65537, 2147483647],
  float: [-1.5, 0, 0.25, 3.140625, 1e-3, 65504],
  double: [-1e300, 0, 0.1, Math.PI, 1e-300, 12345.6789],
};

function isBadDataset(pathPart: string, what: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof PsError, `expected PsError, got ${String(err)}`);
    assert.equal(err.code, ErrorCode.BAD_DATASET);
    assert.ok(err.message.startsWith(pathPart + ": "), `message should start with the path: ${err.message}`);
    assert.match(err.message, what);
    assert.ok(!err.message.includes("\n"), "one line");
    return true;
  };
}

describe("data/idx", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "ps-idx-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const dtype of Object.keys(SAMPLES) as IdxDtype[]) {
    it(`round-trips ${dtype} through a file, big-endian`, () => {
      const values = SAMPLES[dtype];
      const file = join(dir, `rt-${dtype}`);
      writeIdx(file, dtype, [2, 3], values);
      const got = readIdx(file);
      assert.equal(got.dtype, dtype);
      assert.deepEqual(got.dims, [2, 3]);
      const expected = dtype === "float" ? Array.from(Float32Array.from(values)) : values;
      assert.deepEqual(Array.from(got.data), expected);
      // the float32 reader agrees, unscaled
      const f = readIdxFloat32(file);
      assert.deepEqual(Array.from(f.data), Array.from(Float32Array.from(values)));
      assert.equal(f.items, 2);
    });
  }

  it("writes the header bytes of the IDX format", () => {
    const buf = encodeIdx("short", [1, 2], [1, -2]);
    assert.deepEqual(Array.from(buf), [0, 0, 0x0b, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x00, 0x01, 0xff, 0xfe]);
  });

  it("reads NAME.gz when NAME is absent, and .gz paths directly", () => {
    writeIdx(join(dir, "zipped.gz"), "int", [4], [1, 2, 3, -4]);
    assert.deepEqual(Array.from(readIdx(join(dir, "zipped")).data), [1, 2, 3, -4]);
    assert.deepEqual(Array.from(readIdx(join(dir, "zipped.gz")).data), [1, 2, 3, -4]);
    const f = readIdxFloat32(join(dir, "zipped"), { maxItems: 2 });
    assert.deepEqual(Array.from(f.data), [1, 2]);
  });

  it("readIdxFloat32 scales ubyte and keeps only the first maxItems items", () => {
    const file = join(dir, "img");
    writeIdx(file, "ubyte", [3, 2, 2], [0, 255, 51, 102, 1, 2, 3, 4, 5, 6, 7, 8]);
    const all = readIdxFloat32(file, { scaleUbyte: true });
    assert.equal(all.items, 3);
    assert.equal(all.data.length, 12);
    assert.equal(all.data[0], 0);
    assert.equal(all.data[1], 1);
    assert.ok(Math.abs((all.data[2] as number) - 0.2) < 1e-7);
    const two = readIdxFloat32(file, { scaleUbyte: true, maxItems: 2 });
    assert.equal(two.items, 2);
    assert.deepEqual(Array.from(two.data), Array.from(all.data.subarray(0, 8)));
    assert.equal(readIdxFloat32(file, { maxItems: 99 }).items, 3);
  });

  describe("rejects corrupt files with BAD_DATASET", () => {
    const good = encodeIdx("ubyte", [2, 3], [1, 2, 3, 4, 5, 6]);
    const variants: [string, Uint8Array, RegExp][] = [
      ["bad magic", Uint8Array.from([1, 2, ...good.subarray(2)]), /bad magic/],
      ["unknown dtype", Uint8Array.from([0, 0, 0x07, ...good.subarray(3)]), /dtype/],
      ["zero dims", Uint8Array.from([0, 0, 0x08, 0]), /0 dimensions/],
      ["empty file", new Uint8Array(0), /truncated/],
      ["truncated header", good.subarray(0, 9), /truncated/],
      ["truncated data", good.subarray(0, good.length - 1), /truncated/],
      ["trailing bytes", Uint8Array.from([...good, 9]), /wrong length/],
      ["dims too big for data", encodeHeaderOnly([1000, 1000]), /truncated/],
    ];
    for (const [label, bytes, what] of variants) {
      it(label, () => {
        const file = join(dir, `bad-${label.replace(/ /g, "-")}`);
        writeFileSync(file, bytes);
        assert.throws(() => readIdx(file), isBadDataset(file, what));
        assert.throws(() => readIdxFloat32(file), isBadDataset(file, what));
        assert.throws(() => parseIdx(bytes, "mem"), isBadDataset("mem", what));
        const gz = join(dir, `badgz-${label.replace(/ /g, "-")}.gz`);
        writeFileSync(gz, gzipSync(bytes));
        assert.throws(() => readIdxFloat32(gz), isBadDataset(gz, what));
      });
    }

    it("a float file whose length is not a whole number of values", () => {
      const f = encodeIdx("float", [3], [1, 2, 3]);
      assert.throws(() => parseIdx(f.subarray(0, f.length - 2), "f"), isBadDataset("f", /truncated.*need 20 bytes, file has 18/));
    });

    it("corrupt gzip", () => {
      const file = join(dir, "notgz.gz");
      writeFileSync(file, Buffer.from("definitely not gzip"));
      assert.throws(() => readIdx(file), isBadDataset(file, /gzip/));
    });

    it("missing file names the path", () => {
      const file = join(dir, "nope");
      assert.throws(() => readIdx(file), isBadDataset(file, /not found/));
    });
  });
});

function encodeHeaderOnly(dims: number[]): Uint8Array {
  const b = Buffer.alloc(4 + 4 * dims.length + 10);
  b[2] = 0x08;
  b[3] = dims.length;
  dims.forEach((d, i) => b.writeUInt32BE(d, 4 + 4 * i));
  return b;
}
