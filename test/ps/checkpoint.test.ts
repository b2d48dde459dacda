import { strict as assert } from "node:assert";
import { readFileSync, readdirSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DEFAULTS, type ModeName, type OptimizerConfig } from "../../src/config/train-config.js";
import { planResume } from "../../src/cluster/resume-plan.js";
import { createMode } from "../../src/modes/index.js";
import { checkpointDir, latestCheckpoint, listCheckpoints, readCheckpoint, writeCheckpoint } from "../../src/ps/checkpoint.js";
import { ServerShard } from "../../src/ps/server-shard.js";
import { MsgType } from "../../src/transport/header.js";
import { tempDir } from "../helpers/run.js";
import { frames, peer, pushPull, RUN_ID } from "../helpers/shard.js";

const adam: OptimizerConfig = { ...DEFAULTS, optimizer: "adam", lr: 0.01, lrSchedule: "constant", warmupSteps: 0 };

function shard(mode: ModeName, opts: { workers?: number; size?: number; gradClip?: number; every?: number; optimizer?: OptimizerConfig } = {}): ServerShard {
  const size = opts.size ?? 6;
  return new ServerShard({
    shard: 0,
    runId: RUN_ID,
    range: { start: 0, end: size },
    workers: opts.workers ?? 2,
    mode: createMode(mode, 0),
    optimizer: opts.optimizer ?? adam,
    init: Float32Array.from({ length: size }, (_, i) => i / 10),
    gradClip: opts.gradClip ?? 0,
    checkpointEvery: opts.every ?? 0,
  });
}

/** A deterministic gradient for (rank, clock). */
function grad(rank: number, clock: number, size = 6): Float32Array {
  return Float32Array.from({ length: size }, (_, i) => Math.sin(1 + rank * 7 + clock * 3 + i));
}

/** Worker pushes of `clocks` steps, every worker in turn (sync rounds / async arrivals). */
function drive(s: ServerShard, from: number, to: number, workers = 2): void {
  for (let c = from; c < to; c++) for (let r = 0; r < workers; r++) s.handle(peer(r), pushPull(r, c, grad(r, c), { version: s.version }));
}

function save(s: ServerShard, dir: string, keep = 3): string {
  const st = s.state();
  return writeCheckpoint(
    dir,
    { runTag: "t", shard: 0, range: { start: 0, end: s.weights.length }, step: st.step, version: st.version, appliedGradients: st.appliedGradients, clocks: st.clocks, optimizer: { name: "adam", scalars: st.optimizerScalars, lrStep: st.lrStep } },
    st.tensors,
    keep,
  );
}

function load(into: ServerShard, file: string, workerClocks: number[] | null = null): void {
  const c = readCheckpoint(file);
  const h = c.header;
  into.restore({ step: h.step, version: h.version, appliedGradients: h.appliedGradients, clocks: h.clocks, optimizerScalars: h.optimizer.scalars, tensors: c.tensors }, workerClocks);
}

describe("shard checkpoints", () => {
  it("round-trip weights, Adam state and clocks: a restored shard goes on exactly like the original", () => {
    const dir = tempDir();
    for (const mode of ["sync", "async"] as const) {
      const a = shard(mode);
      drive(a, 0, 5);
      const file = save(a, join(dir, mode));
      drive(a, 5, 9);
      const b = shard(mode);
      load(b, file);
      assert.equal(b.restoredFrom, mode === "sync" ? 5 : 10);
      drive(b, 5, 9);
      assert.deepEqual(Array.from(b.weights), Array.from(a.weights));
      assert.equal(b.version, a.version);
      assert.deepEqual(b.stats().clocks, a.stats().clocks);
    }
  });

  it("a checkpoint is due every N server updates: aggregates in sync, gradients in async", () => {
    const s = shard("sync", { every: 3 });
    const due: number[] = [];
    for (let c = 0; c < 7; c++) {
      for (let r = 0; r < 2; r++) s.handle(peer(r), pushPull(r, c, grad(r, c), { version: s.version }));
      if (s.takeCheckpointDue()) due.push(s.step);
    }
    assert.deepEqual(due, [3, 6]);
    const a = shard("async", { every: 3 });
    const dueA: number[] = [];
    for (let c = 0; c < 4; c++)
      for (let r = 0; r < 2; r++) {
        a.handle(peer(r), pushPull(r, c, grad(r, c), { version: a.version }));
        if (a.takeCheckpointDue()) dueA.push(a.step);
      }
    assert.deepEqual(dueA, [3, 6]);
  });

  it("keeps the newest K and leaves no temporary file", () => {
    const dir = tempDir();
    const s = shard("sync");
    for (let c = 0; c < 5; c++) {
      drive(s, c, c + 1);
      save(s, dir, 2);
    }
    assert.deepEqual(listCheckpoints(dir).map((c) => c.step), [5, 4]);
    assert.deepEqual(readdirSync(dir).sort(), ["ckpt-0000000004.bin", "ckpt-0000000005.bin"]);
  });

  it("a corrupted or truncated newest checkpoint is found by its checksum and the previous one is used", () => {
    for (const damage of ["flip-payload", "flip-header", "truncate"] as const) {
      const dir = tempDir();
      const s = shard("sync");
      drive(s, 0, 2);
      save(s, dir);
      drive(s, 2, 4);
      const newest = save(s, dir);
      if (damage === "truncate") truncateSync(newest, readFileSync(newest).byteLength - 5);
      else {
        const buf = readFileSync(newest);
        const at = damage === "flip-payload" ? buf.byteLength - 3 : 60;
        buf[at] = buf[at]! ^ 0x10;
        writeFileSync(newest, buf);
      }
      const { ckpt, skipped } = latestCheckpoint(dir);
      assert.equal(ckpt?.header.step, 2, damage);
      assert.equal(skipped.length, 1);
      assert.match(skipped[0]!, damage === "truncate" ? /truncated/ : damage === "flip-header" ? /header checksum mismatch/ : /payload checksum mismatch/);
    }
  });

  it("--resume picks the newest step every shard has a valid checkpoint of (sync)", () => {
    const run = tempDir();
    const cfg = { ...DEFAULTS, mode: "sync" as const, workers: 2, servers: 2 };
    const shards = [shard("sync"), shard("sync")];
    for (const step of [2, 4]) {
      shards.forEach((s, k) => {
        drive(s, s.step, step);
        save(s, checkpointDir(run, k));
      });
    }
    assert.deepEqual(planResume(cfg, run).shardSteps, [4, 4]);
    // shard 1's step-4 checkpoint is damaged: both go back to step 2
    const f = listCheckpoints(checkpointDir(run, 1))[0]!.file;
    truncateSync(f, 100);
    const plan = planResume(cfg, run);
    assert.deepEqual(plan.shardSteps, [2, 2]);
    assert.deepEqual(plan.startSteps, [2, 2]);
    assert.equal(plan.skipped.length, 1);
    assert.throws(() => planResume({ ...cfg, servers: 3 }, run), /server shard 2 has no valid checkpoint/);
  });

  it("a restart counts the gradients acknowledged since the checkpoint as lost and resumes each worker at its clock", () => {
    const dir = tempDir();
    const a = shard("async", { workers: 2 });
    drive(a, 0, 3);
    const file = save(a, dir);
    drive(a, 3, 5); // 4 more gradients, acknowledged, then the shard dies
    const b = shard("async", { workers: 2 });
    load(b, file, [5, 4]);
    assert.equal(b.lostUpdates, 3);
    assert.deepEqual(b.stats().clocks, [5, 4]);
    // worker 0's next push carries a version the new process never had: accepted once
    const r = b.handle(peer(0), pushPull(0, 5, grad(0, 5), { version: 1000 }));
    assert.equal(r[0]?.header.type, MsgType.WEIGHTS);
    const again = b.handle(peer(0), pushPull(0, 6, grad(0, 6), { version: 1000 }));
    assert.equal(again[0]?.header.type, MsgType.ERROR);
    assert.equal(b.stats().lostUpdates, 3);
  });

  it("sync: a worker that got the dead process's last answer comes back a clock ahead, and the barrier still closes", () => {
    const dir = tempDir();
    const a = shard("sync", { workers: 2 });
    drive(a, 0, 3);
    const file = save(a, dir);
    drive(a, 3, 5);
    // Round 5: both pushed, worker 0 got its answer (it is at clock 6), worker 1's was lost in the crash.
    const b = shard("sync", { workers: 2 });
    load(b, file, [6, 5]);
    assert.equal(b.version, 5);
    assert.equal(b.lostUpdates, 3 + 2);
    const r0 = b.handle(peer(0), pushPull(0, 6, grad(0, 6), { version: 6 }));
    assert.equal(r0.length, 0, "worker 0's round-6 gradient waits for round 5 to close");
    const r1 = b.handle(peer(1), pushPull(1, 5, grad(1, 5), { version: 5 }));
    assert.deepEqual(r1.map((o) => [o.to[0], o.header.type, o.header.version]), [[1, MsgType.WEIGHTS, 6]], "round 5 closes (worker 0's part lost, as zero)");
    const r2 = b.handle(peer(1), pushPull(1, 6, grad(1, 6), { version: 6 }));
    assert.deepEqual(r2.map((o) => o.to[0]).sort(), [0, 1], "round 6 closes with both; both read clock 7");
    assert.equal(b.version, 7);
    assert.deepEqual(b.stats().clocks, [7, 7]);
    drive(b, 7, 9);
    assert.equal(b.version, 9);
  });
});

describe("hostile gradients at the shard", () => {
  it("refuses NaN/Infinity with an error reply and counts them", () => {
    const s = shard("async");
    const g = grad(0, 0);
    g[2] = NaN;
    const [r] = s.handle(peer(0), pushPull(0, 0, g));
    assert.equal(r?.header.type, MsgType.ERROR);
    assert.equal(r?.frames[1]?.toString(), "non-finite");
    g[2] = Infinity;
    s.handle(peer(0), pushPull(0, 0, g));
    const st = s.stats();
    assert.equal(st.rejectedGradients, 2);
    assert.equal(st.errors["non-finite"], 2);
    assert.equal(st.version, 0, "nothing was applied");
  });

  it("--grad-clip scales a gradient larger than the bound down to it", () => {
    const sgd: OptimizerConfig = { ...DEFAULTS, optimizer: "sgd", lr: 1, lrSchedule: "constant", warmupSteps: 0 };
    const s = shard("sync", { workers: 1, size: 2, gradClip: 1, optimizer: sgd });
    const w0 = Array.from(s.weights);
    s.handle(peer(0), pushPull(0, 0, Float32Array.from([30, 40])));
    assert.ok(Math.abs(s.weights[0]! - (w0[0]! - 0.6)) < 1e-6 && Math.abs(s.weights[1]! - (w0[1]! - 0.8)) < 1e-6, `${Array.from(s.weights).join()}`);
    s.handle(peer(0), pushPull(0, 1, Float32Array.from([0.3, 0.4]), { version: 1 }));
    assert.equal(s.stats().clippedGradients, 1, "a gradient under the bound is left alone");
  });

  it("checks flags and status of every request", () => {
    const s = shard("async");
    s.handle(peer(0), frames({ type: MsgType.PULL, rank: 0, clock: 0, rangeStart: 0, rangeEnd: 6, flags: 4 }));
    s.handle(peer(0), frames({ type: MsgType.PULL, rank: 0, clock: 0, rangeStart: 0, rangeEnd: 6, status: 9 }));
    s.handle(peer(0), frames({ type: MsgType.PULL, rank: 0, clock: 0, rangeStart: 0, rangeEnd: 5 }));
    s.handle(peer(9), frames({ type: MsgType.STATS, rank: -1, flags: 2 }));
    assert.deepEqual(s.stats().errors, { flags: 2, status: 1, range: 1 });
  });
});
