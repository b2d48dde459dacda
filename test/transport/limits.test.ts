import { strict as assert } from "node:assert";
import { Dealer, Push, Router } from "zeromq";
import { PeerGroup } from "../../src/allreduce/peer-group.js";
import { Allreducer } from "../../src/allreduce/allreducer.js";
import { encodeArHeader, Phase } from "../../src/allreduce/wire.js";
import { maxShardFrameBytes } from "../../src/ps/server-main.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("message size limits (hostile input)", function () {
  this.timeout(30_000);

  it("a shard's ROUTER drops a peer that sends a frame larger than its range, and keeps serving others", async () => {
    const range = { start: 0, end: 1000 };
    const router = new Router({ linger: 0, maxMessageSize: maxShardFrameBytes(range) });
    await router.bind("tcp://127.0.0.1:*");
    const got: number[] = [];
    const loop = (async () => {
      for await (const [, ...frames] of router) got.push(frames.reduce((a, f) => a + f.byteLength, 0));
    })().catch(() => undefined);
    const hostile = new Dealer({ linger: 0 });
    const honest = new Dealer({ linger: 0 });
    hostile.connect(router.lastEndpoint!);
    honest.connect(router.lastEndpoint!);
    try {
      await hostile.send([Buffer.alloc(40), Buffer.alloc(maxShardFrameBytes(range) + 1)]);
      await honest.send([Buffer.alloc(40), Buffer.alloc(4000)]);
      await sleep(300);
      assert.deepEqual(got, [4040], "only the honest message arrives");
    } finally {
      hostile.close();
      honest.close();
      router.close();
      await loop;
    }
  });

  it("a peer group drops a sender whose frame exceeds maxMessageBytes and its collectives go on", async () => {
    const groups = [0, 1].map((rank) => new PeerGroup({ rank, size: 2, runId: 5, timeoutMs: 5000, maxMessageBytes: 64 * 1024 }));
    const eps = await Promise.all(groups.map((g) => g.bind("tcp://127.0.0.1:*")));
    for (const g of groups) g.connect(eps);
    const rogue = new Push({ linger: 0 });
    rogue.connect(eps[0]!);
    try {
      const big = Buffer.alloc(128 * 1024);
      await rogue.send([encodeArHeader({ phase: Phase.BARRIER, runId: 5, src: 1, op: 0, step: 0, seg: 0, byteLength: big.byteLength }), big]);
      await sleep(300);
      assert.equal(groups[0]!.bytesReceived, 0, "nothing of the oversized message was taken in");
      const ars = groups.map((g) => new Allreducer(g, { algo: "ring", segmentBytes: 16 * 1024 }));
      const bufs = [new Float32Array(10_000).fill(1), new Float32Array(10_000).fill(2)];
      await Promise.all(ars.map((a, r) => a.allreduce(bufs[r]!)));
      assert.ok(bufs.every((b) => b.every((v) => v === 3)));
    } finally {
      rogue.close();
      for (const g of groups) g.close();
    }
  });
});
