import assert from "node:assert/strict";
import { Allreducer, type AllreduceAlgo } from "../../src/allreduce/allreducer.js";
import { chunkStart } from "../../src/allreduce/ring.js";
import { Rng } from "../../src/util/rng.js";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { shmDir } from "../../src/transport/shm.js";
import { intData, makeGroups } from "../helpers/groups.js";

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

async function runAll(N: number, algo: AllreduceAlgo, inputs: Float32Array[], op: "sum" | "mean", transport: "ipc" | "tcp" | "shm" = "ipc", segmentBytes = 4096) {
  const { groups, close } = await makeGroups(N, transport);
  try {
    const ars = groups.map((g) => new Allreducer(g, { algo, segmentBytes }));
    // Twice in a row: the second collective reuses the same sockets and numbering.
    await Promise.all(ars.map((a, r) => a.allreduce(inputs[r]!, op)));
    return { groups, ars };
  } finally {
    close();
  }
}

describe("allreduce collectives over real ZeroMQ sockets", function () {
  this.timeout(120_000);

  it("chunks cover every element exactly once for any length and group size", () => {
    for (const N of [1, 2, 3, 5, 8]) {
      for (const n of [0, 1, 2, 7, 8, 9, 1000003]) {
        let covered = 0;
        for (let c = 0; c < N; c++) {
          const len = chunkStart(c + 1, n, N) - chunkStart(c, n, N);
          assert.ok(len >= 0 && len <= Math.ceil(n / N));
          covered += len;
        }
        assert.equal(covered, n);
      }
    }
  });

  for (const algo of ["ring", "doubling", "halving-doubling"] as const) {
    for (const N of [1, 2, 3, 4, 5, 6, 8]) {
      const sizes = [0, 1, 7, Math.max(0, N - 1), N + 1, 1_000_003];
      it(`${algo}, N=${N}: exact sum of integer-valued floats for sizes ${sizes.join(", ")}, bitwise equal on every rank`, async () => {
        for (const n of sizes) {
          const inputs = Array.from({ length: N }, (_, r) => intData(r, n));
          const expected = new Float32Array(n);
          for (const x of inputs) for (let i = 0; i < n; i++) expected[i] = expected[i]! + x[i]!;
          await runAll(N, algo, inputs, "sum");
          for (let r = 0; r < N; r++) assert.ok(bits(inputs[r]!).equals(bits(expected)), `rank ${r}, n=${n}: result differs from the naive sum`);
        }
      });
    }
  }

  for (const algo of ["ring", "doubling", "halving-doubling"] as const) {
    for (const transport of ["ipc", "tcp", "shm"] as const) {
      it(`${algo} over ${transport}: random floats, mean within tolerance of a float64 reference, identical bits on all ranks`, async () => {
        const N = 5;
        const n = 30_001;
        const rng = new Rng(42);
        const inputs = Array.from({ length: N }, () => Float32Array.from({ length: n }, () => rng.next() * 2 - 1));
        const ref = new Float64Array(n);
        for (const x of inputs) for (let i = 0; i < n; i++) ref[i] = ref[i]! + x[i]! / N;
        await runAll(N, algo, inputs, "mean", transport, 1000);
        for (let r = 1; r < N; r++) assert.ok(bits(inputs[r]!).equals(bits(inputs[0]!)), `rank ${r} differs from rank 0`);
        let maxErr = 0;
        for (let i = 0; i < n; i++) maxErr = Math.max(maxErr, Math.abs(inputs[0]![i]! - ref[i]!));
        assert.ok(maxErr < 1e-6, `max error ${maxErr}`);
      });
    }
  }

  it("over shm: 40 collectives in a row, every algorithm and size by turns, give exact sums on every rank", async () => {
    // The pairs' files are reused by the collectives' parity: this runs many, with ranks that
    // start each one at different times, and checks every result.
    for (const N of [2, 3, 4]) {
      const { groups, tag, close } = await makeGroups(N, "shm");
      try {
        const algos = ["ring", "doubling", "halving-doubling"] as const;
        const ars = algos.map((algo) => groups.map((g) => new Allreducer(g, { algo, segmentBytes: 64 * 1024 })));
        const rng = new Rng(N);
        for (let i = 0; i < 40; i++) {
          const n = [0, 1, N + 1, 3000, 100_003][Math.floor(rng.next() * 5)]!;
          const k = i % algos.length;
          const inputs = Array.from({ length: N }, (_, r) => intData(r + i, n));
          const expected = new Float32Array(n);
          for (const x of inputs) for (let j = 0; j < n; j++) expected[j] = expected[j]! + x[j]!;
          await Promise.all(
            ars[k]!.map(async (a, r) => {
              if ((r + i) % 3 === 0) await new Promise((res) => setTimeout(res, 2)); // this rank comes late
              await a.allreduce(inputs[r]!, "sum");
            }),
          );
          for (let r = 0; r < N; r++) assert.ok(bits(inputs[r]!).equals(bits(expected)), `N=${N}, collective ${i} (${algos[k]}, n=${n}), rank ${r}`);
        }
        // the tensors went through the pairs' files, both parities
        for (const parity of [0, 1]) assert.ok(existsSync(join(shmDir(tag), `ar-peers-0-1-${parity}`)), `parity ${parity}`);
      } finally {
        close();
      }
    }
  });

  it("segments of every size give the same bits (1 element to larger than a chunk)", async () => {
    const N = 4;
    const n = 10_007;
    let first: Buffer | null = null;
    for (const segmentBytes of [4, 60, 4096, 1 << 20]) {
      const inputs = Array.from({ length: N }, (_, r) => Float32Array.from(intData(r, n), (v) => v / 3));
      await runAll(N, "ring", inputs, "sum", "ipc", segmentBytes);
      first ??= Buffer.from(bits(inputs[0]!));
      for (const x of inputs) assert.ok(bits(x).equals(first), `segment ${segmentBytes} bytes`);
    }
  });

  it("auto picks doubling for small buffers and the ring for large ones", async () => {
    const N = 3;
    const { groups, close } = await makeGroups(N);
    try {
      const ars = groups.map((g) => new Allreducer(g, { smallBytes: 1024 }));
      const small = groups.map((_, r) => intData(r, 256));
      const large = groups.map((_, r) => intData(r, 257));
      await Promise.all(ars.map((a, r) => a.allreduce(small[r]!)));
      await Promise.all(ars.map((a, r) => a.allreduce(large[r]!)));
      assert.deepEqual(ars[0]!.calls, { ring: 1, doubling: 1, "halving-doubling": 0 });
      assert.ok(bits(small[1]!).equals(bits(small[0]!)) && bits(large[2]!).equals(bits(large[0]!)));
    } finally {
      close();
    }
  });

  it("fusion: many small tensors reduce in few collectives, packed or in place, with the same result", async () => {
    const N = 3;
    const { groups, close } = await makeGroups(N);
    try {
      const shapes = [5, 300, 1, 64, 1000, 7, 2048];
      const capBytes = 1600 * 4;
      const ars = groups.map((g) => new Allreducer(g, { fusionBytes: capBytes }));
      // Separate tensors (packed) on every rank.
      const sep = groups.map((_, r) => shapes.map((s, k) => intData(r + k, s)));
      // The same values in one flat buffer of views (reduced in place).
      const flat = groups.map((_, r) => {
        const total = shapes.reduce((a, b) => a + b, 0);
        const buf = new Float32Array(total);
        let o = 0;
        return shapes.map((s, k) => {
          const v = buf.subarray(o, o + s);
          v.set(intData(r + k, s));
          o += s;
          return v;
        });
      });
      await Promise.all(ars.map((a, r) => a.allreduceTensors(sep[r]!)));
      const total = (a: Allreducer) => Object.values(a.calls).reduce((x, y) => x + y, 0);
      const before = total(ars[0]!);
      await Promise.all(ars.map((a, r) => a.allreduceTensors(flat[r]!)));
      const after = total(ars[0]!);
      // buckets under a 1600-element cap: [5,300,1,64,1000,7] [2048]
      assert.equal(before, 2);
      assert.equal(after - before, 2);
      shapes.forEach((s, k) => {
        const expected = new Float32Array(s);
        for (let r = 0; r < N; r++) {
          const x = intData(r + k, s);
          for (let i = 0; i < s; i++) expected[i] = expected[i]! + x[i]!;
        }
        for (let r = 0; r < N; r++) {
          assert.ok(bits(sep[r]![k]!).equals(bits(expected)), `packed tensor ${k} on rank ${r}`);
          assert.ok(bits(flat[r]![k]!).equals(bits(expected)), `in-place tensor ${k} on rank ${r}`);
        }
      });
    } finally {
      close();
    }
  });

  for (const N of [1, 2, 3, 6]) {
    it(`broadcast from each root, N=${N}: every rank gets the root's bits`, async () => {
      const { groups, close } = await makeGroups(N);
      try {
        const ars = groups.map((g) => new Allreducer(g));
        for (let root = 0; root < N; root++) {
          const bufs = groups.map((_, r) => intData(r * 3 + root, 5000));
          const want = Buffer.from(bits(bufs[root]!));
          await Promise.all(ars.map((a, r) => a.broadcast(bufs[r]!, root)));
          for (const b of bufs) assert.ok(bits(b).equals(want));
        }
      } finally {
        close();
      }
    });
  }

  it("a barrier returns on every rank only after all have entered", async () => {
    const N = 5;
    const { groups, close } = await makeGroups(N);
    try {
      const entered: number[] = [];
      const left: number[] = [];
      await Promise.all(
        groups.map(async (g, r) => {
          await new Promise((res) => setTimeout(res, r * 30));
          entered.push(Date.now());
          await g.barrier();
          left.push(Date.now());
        }),
      );
      assert.ok(Math.min(...left) >= Math.max(...entered));
    } finally {
      close();
    }
  });
});
