import { strict as assert } from "node:assert";
import { DType, MsgType } from "../../src/transport/header.js";
import type { Outgoing } from "../../src/ps/server-shard.js";
import { frames, makeShard, peer, pushPull, sgd } from "../helpers/shard.js";

const f32 = (...v: number[]) => Float32Array.from(v);
const weightsOf = (o: Outgoing) => new Float32Array(o.frames[0]!.buffer.slice(o.frames[0]!.byteOffset, o.frames[0]!.byteOffset + o.frames[0]!.byteLength));

describe("ServerShard", () => {
  describe("sync (BSP)", () => {
    it("applies the mean of all workers' gradients once per clock and holds reads until then", () => {
      const s = makeShard({ mode: "sync", workers: 2, size: 3, optimizer: sgd(1) });
      const a = s.handle(peer(0), pushPull(0, 0, f32(1, 2, 3)));
      assert.equal(a.length, 0, "worker 0's read for clock 1 waits for worker 1");
      assert.equal(s.version, 0);
      const b = s.handle(peer(1), pushPull(1, 0, f32(3, 2, 1)));
      assert.equal(b.length, 2, "both reads are answered once the aggregate is applied");
      assert.equal(s.version, 1);
      for (const o of b) {
        assert.equal(o.header.type, MsgType.WEIGHTS);
        assert.equal(o.header.version, 1);
        assert.deepEqual(Array.from(weightsOf(o)), [-2, -2, -2]);
      }
      assert.deepEqual(b.map((o) => o.to[0]).sort(), [0, 1]);
    });

    it("sums in rank order whatever the arrival order: every order gives the same bits, and a bad gradient ahead of its turn changes nothing", () => {
      const n = 1001; // long enough for the SIMD kernels, with a tail for the JavaScript loop
      const grads = [0, 1, 2].map((r) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * (r + 1)) / (r + 3)));
      const run = (order: number[], badFirst: boolean): Float32Array => {
        const s = makeShard({ mode: "sync", workers: 3, size: n, optimizer: sgd(0.3) });
        let last: Outgoing[] = [];
        for (let clock = 0; clock < 3; clock++) {
          for (const r of order) {
            if (badFirst && r !== 0) {
              const bad = Float32Array.from(grads[r]!);
              bad[n - 1] = NaN;
              const e = s.handle(peer(r), pushPull(r, clock, bad, { version: clock }));
              assert.equal(e[0]!.header.type, MsgType.ERROR, "the NaN gradient is refused");
            }
            last = s.handle(peer(r), pushPull(r, clock, grads[r]!, { version: clock }));
          }
        }
        assert.equal(s.version, 3);
        return weightsOf(last[0]!);
      };
      const ref = run([0, 1, 2], false);
      for (const order of [[2, 0, 1], [1, 2, 0], [2, 1, 0]]) {
        for (const badFirst of [false, true]) {
          const w = run(order, badFirst);
          assert.ok(w.every((x, i) => Object.is(x, ref[i])), `order ${order.join(",")}${badFirst ? " with a refused NaN first" : ""}: the same bits`);
        }
      }
    });
  });

  describe("async", () => {
    it("applies each gradient on arrival (scaled by 1/workers) and records staleness", () => {
      const s = makeShard({ mode: "async", workers: 2, size: 2, optimizer: sgd(1) });
      const r0 = s.handle(peer(0), pushPull(0, 0, f32(2, 2), { version: 0 }));
      assert.equal(r0.length, 1);
      assert.deepEqual(Array.from(weightsOf(r0[0]!)), [-1, -1]);
      assert.equal(r0[0]!.header.status, 0, "staleness 0");
      // worker 1 computed from version 0 but the shard is at version 1 now
      const r1 = s.handle(peer(1), pushPull(1, 0, f32(2, 0), { version: 0 }));
      assert.equal(r1[0]!.header.status, 1, "staleness 1");
      assert.deepEqual(Array.from(weightsOf(r1[0]!)), [-2, -1]);
      const st = s.stats();
      assert.equal(st.version, 2);
      assert.deepEqual(st.staleness.counts, [1, 1]);
    });
  });

  describe("--async-lr-scale", () => {
    // Three pushes of g = 4 from 2 workers: staleness 0, 1 and 2 (none of them pulled since).
    const steps = (scale: "workers" | "none" | "staleness") => {
      const s = makeShard({ mode: "async", workers: 2, size: 1, optimizer: { ...sgd(1), asyncLrScale: scale } });
      const out: number[] = [];
      for (const [rank, clock] of [[0, 0], [1, 0], [0, 1]] as const) out.push(weightsOf(s.handle(peer(rank), pushPull(rank, clock, f32(4), { version: 0 }))[0]!)[0]!);
      return out;
    };
    it("workers: every arrival is a step of lr / N", () => assert.deepEqual(steps("workers"), [-2, -4, -6]));
    it("none: every arrival is a full step of lr", () => assert.deepEqual(steps("none"), [-4, -8, -12]));
    it("staleness: a step of lr / max(1, staleness)", () => assert.deepEqual(steps("staleness"), [-4, -8, -10]));
  });

  describe("reply buffers", () => {
    it("never rewrite a buffer a worker may still be receiving, and reuse it once the worker has moved on", () => {
      const s = makeShard({ mode: "async", workers: 2, size: 4, optimizer: sgd(1) });
      const a = s.handle(peer(0), pushPull(0, 0, f32(2, 2, 2, 2)))[0]!;
      const seenByWorker0 = Array.from(weightsOf(a));
      // worker 1 moves the weights on while worker 0 has not sent anything since its reply
      const b = s.handle(peer(1), pushPull(1, 0, f32(2, 2, 2, 2)))[0]!;
      assert.notEqual(a.frames[0], b.frames[0], "a new version goes into another buffer");
      assert.deepEqual(Array.from(weightsOf(a)), seenByWorker0, "worker 0's reply is untouched");
      // worker 0's next push proves it has its reply: that buffer may now be reused
      const c = s.handle(peer(0), pushPull(0, 1, f32(2, 2, 2, 2), { version: 1 }))[0]!;
      assert.equal(c.frames[0], a.frames[0], "the released buffer is reused");
      assert.deepEqual(Array.from(weightsOf(c)), [-3, -3, -3, -3]);
    });
  });

  describe("ssp", () => {
    it("lets a worker run ahead by at most s clocks and releases it when the slowest advances", () => {
      const s = makeShard({ mode: "ssp", staleness: 1, workers: 2, size: 1, optimizer: sgd(1) });
      // worker 0 pushes clock 0 -> wants clock 1: min clock 0 >= 1 - 1, answered
      assert.equal(s.handle(peer(0), pushPull(0, 0, f32(1))).length, 1);
      // worker 0 pushes clock 1 -> wants clock 2: min clock 0 < 2 - 1, held
      assert.equal(s.handle(peer(0), pushPull(0, 1, f32(1), { version: 1 })).length, 0);
      assert.equal(s.pendingReads, 1);
      // worker 1 pushes clock 0 -> its own read (clock 1) and worker 0's (clock 2) are both answered
      const out = s.handle(peer(1), pushPull(1, 0, f32(1)));
      assert.equal(out.length, 2);
      assert.equal(s.pendingReads, 0);
      const gap = s.stats().readGap.counts;
      assert.ok(gap.length <= 2, `no read saw a worker more than 1 clock behind: ${gap}`);
    });

    it("with s = 0 gives the same weights as sync for SGD", () => {
      const sync = makeShard({ mode: "sync", workers: 3, size: 2, optimizer: sgd(0.5) });
      const ssp = makeShard({ mode: "ssp", staleness: 0, workers: 3, size: 2, optimizer: sgd(0.5) });
      for (let c = 0; c < 4; c++) {
        for (let r = 0; r < 3; r++) {
          const g = f32(r + c, 1 - r * c);
          sync.handle(peer(r), pushPull(r, c, g, { version: c }));
          ssp.handle(peer(r), pushPull(r, c, g, { version: 0 }));
        }
      }
      for (let i = 0; i < 2; i++) assert.ok(Math.abs(sync.weights[i]! - ssp.weights[i]!) < 1e-5);
    });
  });

  describe("bad messages", () => {
    const bad: [string, () => Buffer[], string][] = [
      ["no frames", () => [], "missing-header"],
      ["short header", () => [Buffer.alloc(10)], "header-length"],
      ["bad magic", () => { const f = frames({ type: MsgType.PULL, rank: 0 }); f[0]!.writeUInt16LE(0xdead, 0); return f; }, "magic"],
      ["unknown type", () => { const f = frames({ type: MsgType.PULL, rank: 0 }); f[0]!.writeUInt8(200, 3); return f; }, "unknown-type"],
      ["wrong run id", () => { const f = frames({ type: MsgType.PULL, rank: 0 }); f[0]!.writeUInt32LE(7, 4); return f; }, "run-id"],
      ["rank out of range", () => frames({ type: MsgType.PULL, rank: 9 }), "rank"],
      ["range outside the shard", () => pushPull(0, 0, f32(1, 2, 3, 4), { start: 2 }), "range"],
      ["wrong length", () => { const f = pushPull(0, 0, f32(1, 2, 3, 4)); return [f[0]!, f[1]!.subarray(0, 12)]; }, "payload-length"],
      ["NaN", () => pushPull(0, 0, f32(1, NaN, 3, 4)), "non-finite"],
      ["Infinity", () => pushPull(0, 0, f32(1, 2, Infinity, 4)), "non-finite"],
      ["wrong dtype", () => { const f = pushPull(0, 0, f32(1, 2, 3, 4)); f[0]!.writeUInt8(DType.JSON, 28); return f; }, "dtype"],
      ["clock from the future", () => pushPull(0, 5, f32(1, 2, 3, 4)), "clock"],
      ["coordinator-only message from a worker", () => frames({ type: MsgType.SNAPSHOT, rank: 0 }), "rank"],
      ["type a server does not take", () => frames({ type: MsgType.HELLO, rank: 0 }), "unexpected-type"],
    ];
    for (const [name, make, reason] of bad) {
      it(`rejects ${name} with an error reply and a counter, and keeps serving`, () => {
        const s = makeShard({ mode: "async", workers: 2, size: 4 });
        const out = s.handle(peer(0), make());
        assert.equal(out.length, 1);
        assert.equal(out[0]!.header.type, MsgType.ERROR);
        assert.equal(out[0]!.frames[1]!.toString(), reason);
        assert.equal(s.stats().errors[reason], 1);
        assert.equal(s.version, 0, "nothing applied");
        const ok = s.handle(peer(0), pushPull(0, 0, f32(1, 1, 1, 1)));
        assert.equal(ok[0]!.header.type, MsgType.WEIGHTS);
        assert.equal(s.version, 1);
      });
    }
  });
});
