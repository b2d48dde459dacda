import { strict as assert } from "node:assert";
import { DType, Flag, MsgType } from "../../src/transport/header.js";
import type { Outgoing, ServerShard } from "../../src/ps/server-shard.js";
import { frames, makeShard, peer, pushPull, sgd } from "../helpers/shard.js";

const f32 = (...v: number[]) => Float32Array.from(v);
const weightsOf = (o: Outgoing) => Array.from(new Float32Array(o.frames[0]!.buffer.slice(o.frames[0]!.byteOffset, o.frames[0]!.byteOffset + o.frames[0]!.byteLength)));
const COORD = peer(99);

function workerLeft(s: ServerShard, rank: number): Outgoing[] {
  const body = Buffer.from(JSON.stringify({ rank }));
  return s.handle(COORD, frames({ type: MsgType.WORKER_LEFT, rank: -1, dtype: DType.JSON, byteLength: body.byteLength }, [body]));
}

function join(s: ServerShard, rank: number, clock?: number): Outgoing {
  const out = s.handle(peer(rank), frames({ type: MsgType.JOIN, rank, clock: clock ?? 0, flags: clock === undefined ? 0 : Flag.AT_CLOCK }));
  assert.equal(out.length, 1);
  return out[0]!;
}

describe("ServerShard: workers that leave or are replaced", () => {
  it("sync: a rank that leaves is no longer waited for, and the mean divides by the gradients summed", () => {
    const s = makeShard({ mode: "sync", workers: 3, size: 2, optimizer: sgd(1) });
    assert.equal(s.handle(peer(0), pushPull(0, 0, f32(3, 6))).length, 0);
    assert.equal(s.handle(peer(2), pushPull(2, 0, f32(3, 0))).length, 0, "rank 2's gradient waits for rank 1's turn");
    const out = workerLeft(s, 1);
    assert.equal(out[0]!.header.type, MsgType.ACK);
    const reads = out.slice(1);
    assert.equal(reads.length, 2, "both survivors' reads are answered");
    assert.equal(s.version, 1);
    for (const r of reads) assert.deepEqual(weightsOf(r), [-3, -3], "mean of two gradients, not three");
    // the next clock needs only ranks 0 and 2
    assert.equal(s.handle(peer(0), pushPull(0, 1, f32(2, 2), { version: 1 })).length, 0);
    assert.equal(s.handle(peer(2), pushPull(2, 1, f32(0, 0), { version: 1 })).length, 2);
    assert.deepEqual(s.stats().left, [1]);
    // a message from the rank that left is refused
    const late = s.handle(peer(1), pushPull(1, 0, f32(1, 1)));
    assert.equal(late[0]!.header.type, MsgType.ERROR);
    assert.equal(late[0]!.frames[1]!.toString(), "left");
  });

  it("sync: a replacement joins after the aggregate in progress and takes part from its join clock", () => {
    const s = makeShard({ mode: "sync", workers: 2, size: 1, optimizer: sgd(1) });
    workerLeft(s, 1);
    assert.equal(s.handle(peer(0), pushPull(0, 0, f32(1))).length, 1, "alone, rank 0 goes on");
    const proposal = join(s, 1);
    assert.equal(proposal.header.clock, 2, "after the aggregate of clock 1, which rank 0 is in");
    const refused = s.handle(peer(1), frames({ type: MsgType.JOIN, rank: 1, clock: 1, flags: Flag.AT_CLOCK }));
    assert.equal(refused[0]!.header.type, MsgType.ERROR, "a clock the shard is already aggregating is refused");
    assert.equal(join(s, 1, 2).header.clock, 2);
    assert.equal(s.handle(peer(0), pushPull(0, 1, f32(1), { version: 1 })).length, 1, "clock 1 still needs rank 0 only");
    const read = s.handle(peer(1), frames({ type: MsgType.PULL, rank: 1, clock: 2, rangeStart: 0, rangeEnd: 1 }));
    assert.equal(read.length, 1);
    assert.deepEqual(weightsOf(read[0]!), [-2]);
    assert.equal(s.handle(peer(0), pushPull(0, 2, f32(4), { version: 2 })).length, 0, "clock 2 waits for the replacement");
    const both = s.handle(peer(1), pushPull(1, 2, f32(2), { version: 2 }));
    assert.equal(both.length, 2);
    assert.deepEqual(weightsOf(both[0]!), [-5]);
  });

  it("sync: a replacement registered again at a later clock (another shard refused the first) no longer holds up the aggregate it was in", () => {
    const s = makeShard({ mode: "sync", workers: 3, size: 1, optimizer: sgd(1) });
    workerLeft(s, 1);
    s.handle(peer(0), pushPull(0, 0, f32(1)));
    assert.equal(s.handle(peer(2), pushPull(2, 0, f32(3))).length, 2);
    // first join round: this shard registers rank 1 from clock 2 (another shard refuses it)
    assert.equal(join(s, 1).header.clock, 2);
    assert.equal(join(s, 1, 2).header.clock, 2);
    s.handle(peer(0), pushPull(0, 1, f32(1), { version: 1 }));
    assert.equal(s.handle(peer(2), pushPull(2, 1, f32(3), { version: 1 })).length, 2, "clock 1 does not wait for rank 1");
    // clock 2 waits for rank 1, the others have pushed it
    assert.equal(s.handle(peer(0), pushPull(0, 2, f32(2), { version: 2 })).length, 0);
    assert.equal(s.handle(peer(2), pushPull(2, 2, f32(4), { version: 2 })).length, 0);
    assert.equal(s.version, 2);
    // second round: rank 1 is registered from clock 3 instead; clock 2 closes without it
    assert.equal(join(s, 1).header.clock, 3);
    const out = s.handle(peer(1), frames({ type: MsgType.JOIN, rank: 1, clock: 3, flags: Flag.AT_CLOCK }));
    assert.equal(out[0]!.header.type, MsgType.ACK);
    assert.equal(out[0]!.header.clock, 3);
    const reads = out.slice(1);
    assert.equal(reads.length, 2, "the reads of ranks 0 and 2 for clock 3 are answered");
    assert.equal(s.version, 3);
    for (const r of reads) assert.deepEqual(weightsOf(r), [-2 - 2 - 3], "clock 2's mean is over ranks 0 and 2");
    assert.equal(s.stallReport(Date.now() + 60_000, 1000), null, "nothing is held");
    // clock 3 needs rank 1
    assert.equal(s.handle(peer(0), pushPull(0, 3, f32(1), { version: 3 })).length, 0);
    assert.equal(s.handle(peer(2), pushPull(2, 3, f32(1), { version: 3 })).length, 0);
    assert.equal(s.handle(peer(1), pushPull(1, 3, f32(1), { version: 3 })).length, 3);
  });

  it("ssp: the slowest clock leaves out a rank that left, and a replacement starts at the slowest live clock", () => {
    const s = makeShard({ mode: "ssp", staleness: 1, workers: 2, size: 1, optimizer: sgd(1) });
    assert.equal(s.handle(peer(0), pushPull(0, 0, f32(1))).length, 1);
    assert.equal(s.handle(peer(0), pushPull(0, 1, f32(1))).length, 0, "clock 2 waits for rank 1 (at 0)");
    assert.equal(workerLeft(s, 1).length, 2, "ACK and the released read");
    assert.equal(s.minClock(), 2);
    assert.equal(join(s, 1).header.clock, 2);
    join(s, 1, 2);
    assert.equal(s.clockOf(1), 2);
  });

  it("reports a read held past the deadline with the ranks it waits for", () => {
    const s = makeShard({ mode: "sync", workers: 3, size: 1 });
    s.handle(peer(0), pushPull(0, 0, f32(1)), 1000);
    s.handle(peer(2), pushPull(2, 0, f32(1)), 1000);
    assert.equal(s.stallReport(1500, 1000), null, "not yet");
    const r = s.stallReport(2500, 1000)!;
    assert.deepEqual(r.waitingOn, [{ rank: 1, clock: 0 }]);
    assert.equal(r.clock, 1);
    assert.equal(r.waitedMs, 1500);
    workerLeft(s, 1);
    assert.equal(s.stallReport(5000, 1000), null, "nothing is held once rank 1 has left");
  });
});
