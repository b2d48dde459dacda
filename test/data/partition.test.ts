import { strict as assert } from "node:assert";
import { parsePartitionSpec, partitionIndices } from "../../src/data/partition.js";
import { ErrorCode, PsError } from "../../src/util/errors.js";
import { Rng } from "../../src/util/rng.js";

function randomLabels(n: number, classes: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) y[i] = rng.int(classes);
  return y;
}

/** Every index in [0, count) appears exactly once across all parts. */
function assertExactCover(parts: Uint32Array[], count: number): void {
  const seen = new Uint8Array(count);
  let total = 0;
  for (const p of parts) {
    for (const i of p) {
      assert.ok(i < count, `index ${i} out of range`);
      assert.equal(seen[i], 0, `index ${i} used twice`);
      seen[i] = 1;
      total++;
    }
  }
  assert.equal(total, count);
}

function histogram(part: Uint32Array, labels: Float32Array, classes: number): number[] {
  const h = new Array<number>(classes).fill(0);
  for (const i of part) h[labels[i] as number]! += 1;
  return h;
}

/** Fraction of the part held by its two most common classes. */
function top2Share(part: Uint32Array, labels: Float32Array, classes: number): number {
  const h = histogram(part, labels, classes).sort((a, b) => b - a);
  return ((h[0] as number) + (h[1] as number)) / part.length;
}

function badOption(what: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof PsError, `expected PsError, got ${String(err)}`);
    assert.equal(err.code, ErrorCode.BAD_OPTION);
    assert.match(err.message, /^--partition: /);
    assert.match(err.message, what);
    return true;
  };
}

const COMBOS: [number, number][] = [
  [1, 1],
  [7, 1],
  [7, 7],
  [10, 3],
  [100, 7],
  [101, 10],
  [1000, 16],
  [4999, 32],
  [60000, 10],
];

describe("data/partition", () => {
  describe("parsePartitionSpec", () => {
    it("accepts the valid forms", () => {
      assert.deepEqual(parsePartitionSpec("iid"), { kind: "iid" });
      assert.deepEqual(parsePartitionSpec("shards:2"), { kind: "shards", shardsPerWorker: 2 });
      assert.deepEqual(parsePartitionSpec("dirichlet:0.1"), { kind: "dirichlet", alpha: 0.1 });
      assert.deepEqual(parsePartitionSpec("dirichlet:5"), { kind: "dirichlet", alpha: 5 });
      assert.deepEqual(parsePartitionSpec("dirichlet:1e-2"), { kind: "dirichlet", alpha: 0.01 });
    });
    for (const spec of [
      "",
      "foo",
      "IID",
      "iid:2",
      "shards",
      "shards:",
      "shards:0",
      "shards:-1",
      "shards:1.5",
      "shards:two",
      "dirichlet",
      "dirichlet:",
      "dirichlet:0",
      "dirichlet:-1",
      "dirichlet:abc",
      "dirichlet:NaN",
      "dirichlet:Infinity",
      "dirichlet:0x10",
    ]) {
      it(`rejects "${spec}"`, () => {
        assert.throws(() => parsePartitionSpec(spec), badOption(/./));
        assert.throws(() => partitionIndices(randomLabels(10, 2, 1), 10, 2, spec, 1, "classification"), badOption(/./));
      });
    }
  });

  describe("iid", () => {
    for (const [count, workers] of COMBOS) {
      it(`${count} samples, ${workers} workers: exact cover, sizes differ by at most 1`, () => {
        const labels = randomLabels(count, 10, count);
        const parts = partitionIndices(labels, count, workers, "iid", 3, "classification");
        assert.equal(parts.length, workers);
        assertExactCover(parts, count);
        const sizes = parts.map((p) => p.length);
        assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `sizes ${sizes.join(",")}`);
      });
    }
    it("is shuffled, seeded and deterministic", () => {
      const labels = randomLabels(1000, 10, 1);
      const a = partitionIndices(labels, 1000, 4, "iid", 11, "classification");
      const b = partitionIndices(labels, 1000, 4, "iid", 11, "classification");
      const c = partitionIndices(labels, 1000, 4, "iid", 12, "classification");
      assert.deepEqual(a, b);
      assert.notDeepEqual(a, c);
      const first = a[0] as Uint32Array;
      assert.ok(!first.every((v, i) => i === 0 || v > (first[i - 1] as number)), "not simply sorted");
    });
    it("works for regression targets", () => {
      const parts = partitionIndices(new Float32Array(50).fill(0.5), 50, 3, "iid", 1, "regression");
      assertExactCover(parts, 50);
    });
    it("uses only the first count labels", () => {
      const parts = partitionIndices(randomLabels(100, 10, 1), 40, 3, "iid", 1, "classification");
      assertExactCover(parts, 40);
    });
  });

  for (const spec of ["shards:1", "shards:2", "shards:5", "dirichlet:0.05", "dirichlet:0.5", "dirichlet:100"]) {
    describe(spec, () => {
      for (const [count, workers] of COMBOS) {
        const k = spec.startsWith("shards:") ? Number(spec.slice(7)) : 1;
        if (count < workers * k) continue;
        it(`${count} samples, ${workers} workers: exact cover, every worker nonempty`, () => {
          const labels = randomLabels(count, 10, count + workers);
          const parts = partitionIndices(labels, count, workers, spec, 7, "classification");
          assert.equal(parts.length, workers);
          assertExactCover(parts, count);
          for (const p of parts) assert.ok(p.length > 0, "empty worker");
        });
      }
      it("is deterministic by seed", () => {
        const labels = randomLabels(2000, 10, 1);
        const a = partitionIndices(labels, 2000, 8, spec, 1, "classification");
        assert.deepEqual(a, partitionIndices(labels, 2000, 8, spec, 1, "classification"));
        assert.notDeepEqual(a, partitionIndices(labels, 2000, 8, spec, 2, "classification"));
      });
      it("is rejected for regression tasks", () => {
        assert.throws(
          () => partitionIndices(new Float32Array(100), 100, 2, spec, 1, "regression"),
          badOption(/regression.*iid/),
        );
      });
    });
  }

  it("shards:1 with balanced sorted classes gives each worker exactly one class", () => {
    const labels = new Float32Array(1000);
    for (let i = 0; i < 1000; i++) labels[i] = (i * 7) % 10; // 100 of each class, interleaved
    const parts = partitionIndices(labels, 1000, 10, "shards:1", 3, "classification");
    const classes = parts.map((p) => histogram(p, labels, 10).filter((h) => h > 0).length);
    assert.deepEqual(classes, new Array(10).fill(1));
    const owners = parts.map((p) => labels[p[0] as number]).sort();
    assert.deepEqual(owners, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("shards:2 gives each worker few classes (non-iid), iid gives all classes", () => {
    const labels = randomLabels(6000, 10, 5);
    const shards = partitionIndices(labels, 6000, 20, "shards:2", 3, "classification");
    for (const p of shards) assert.ok(histogram(p, labels, 10).filter((h) => h > 0).length <= 4);
    const iid = partitionIndices(labels, 6000, 20, "iid", 3, "classification");
    for (const p of iid) assert.equal(histogram(p, labels, 10).filter((h) => h > 0).length, 10);
  });

  it("dirichlet with small alpha is skewed, with large alpha near uniform", () => {
    const labels = randomLabels(10000, 10, 8);
    const skewed = partitionIndices(labels, 10000, 20, "dirichlet:0.1", 4, "classification");
    // iid would give every worker a top-2 share of about 0.2
    const shares = skewed.map((p) => top2Share(p, labels, 10));
    const dominated = shares.filter((s) => s > 0.75).length;
    assert.ok(dominated >= 10, `only ${dominated}/20 workers have 75% of their data in two classes`);
    for (const s of shares) assert.ok(s > 0.4, `top-2 share ${s}`);
    const flat = partitionIndices(labels, 10000, 20, "dirichlet:1000", 4, "classification");
    for (const p of flat) {
      const s = top2Share(p, labels, 10);
      assert.ok(s < 0.35, `alpha=1000 should be near uniform, top-2 share ${s}`);
      assert.ok(p.length > 300 && p.length < 700, `size ${p.length}`);
    }
  });

  it("dirichlet with a tiny alpha still gives every worker a sample", () => {
    for (const workers of [2, 5, 50]) {
      const labels = randomLabels(200, 3, workers);
      const parts = partitionIndices(labels, 200, workers, "dirichlet:0.001", 9, "classification");
      assertExactCover(parts, 200);
      for (const p of parts) assert.ok(p.length > 0);
    }
  });

  it("rejects more workers than samples, too many shards, and bad labels", () => {
    assert.throws(() => partitionIndices(new Float32Array(3), 3, 4, "iid", 1, "classification"), badOption(/3 training samples.*4 workers/));
    assert.throws(() => partitionIndices(new Float32Array(10), 10, 3, "shards:4", 1, "classification"), badOption(/at least 12/));
    assert.throws(() => partitionIndices(new Float32Array(10), 10, 0, "iid", 1, "classification"), badOption(/workers/));
    assert.throws(
      () => partitionIndices(Float32Array.from([0, 1, 0.5, 1]), 4, 2, "dirichlet:1", 1, "classification"),
      badOption(/label 2 is 0.5/),
    );
  });
});
