import { strict as assert } from "node:assert";
import { partitionKeys } from "../../src/ps/key-range.js";

describe("partitionKeys", () => {
  it("covers every key exactly once, contiguously, balanced within one key", () => {
    const sizes = [0, 1, 2, 3, 7, 10, 101, 266610, 1_000_003];
    for (const size of sizes) {
      for (let k = 1; k <= 9; k++) {
        const ranges = partitionKeys(size, k);
        assert.equal(ranges.length, k);
        const owner = new Uint8Array(size);
        let prevEnd = 0;
        for (const r of ranges) {
          assert.equal(r.start, prevEnd, `size ${size} k ${k}: ranges are contiguous`);
          assert.ok(r.end >= r.start);
          for (let i = r.start; i < r.end; i++) owner[i]!++;
          prevEnd = r.end;
        }
        assert.equal(prevEnd, size);
        assert.ok(owner.every((c) => c === 1), `size ${size} k ${k}: every key owned once`);
        const lens = ranges.map((r) => r.end - r.start);
        assert.ok(Math.max(...lens) - Math.min(...lens) <= 1, `size ${size} k ${k}: balanced ${lens}`);
      }
    }
  });

  it("rejects bad arguments", () => {
    assert.throws(() => partitionKeys(-1, 2), RangeError);
    assert.throws(() => partitionKeys(10, 0), RangeError);
    assert.throws(() => partitionKeys(1.5, 2), RangeError);
  });
});
