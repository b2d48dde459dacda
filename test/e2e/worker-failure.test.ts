import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { ModeName, WorkerFailurePolicy } from "../../src/config/train-config.js";
import type { Summary } from "../../src/cluster/train-run.js";
import { loadDataset } from "../../src/data/load.js";
import { selectBackend } from "../../src/model/backend.js";
import { createModel } from "../../src/model/zoo.js";
import { alive, processesOf, waitFor } from "../helpers/processes.js";
import { smallConfig, train } from "../helpers/run.js";

/** Wait until `rank` has reported at least `steps` steps in metrics.jsonl. */
function stepsReported(out: string, rank: number, steps: number): Promise<true> {
  const file = join(out, "metrics.jsonl");
  return waitFor(`worker ${rank} reporting ${steps} steps`, () => {
    if (!existsSync(file)) return undefined;
    let n = 0;
    for (const line of readFileSync(file, "utf8").split("\n")) if (line.includes(`"type":"step","worker":${rank},`)) n++;
    return n >= steps ? true : undefined;
  });
}

async function noneAlive(pids: number[]): Promise<void> {
  // The run has returned: every process it started must be gone (give the OS a moment to reap).
  const end = Date.now() + 5000;
  while (pids.some(alive) && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
  for (const pid of pids) assert.ok(!alive(pid), `pid ${pid} was left running`);
}

// Long enough that a replacement (a new process: Node, the dataset, the backend) joins well before
// the others finish; a straggler that sleeps makes the run long without using the CPU.
const STEPS = 400;

/** Milliseconds of one warm gradient step of smallConfig's model and batch, in this process. */
async function gradientMs(): Promise<number> {
  const cfg = smallConfig();
  await selectBackend(cfg.backend);
  const data = await loadDataset(cfg.dataset, { seed: cfg.seed, trainLimit: 0, testLimit: 1 });
  const model = createModel(cfg.model, data.inputShape, data.numOutputs, data.task);
  model.setWeights(model.init(cfg.seed));
  const n = cfg.batchSize;
  const x = data.trainX.subarray(0, (n * data.trainX.length) / data.trainCount);
  const y = data.trainY.subarray(0, (n * data.trainY.length) / data.trainCount);
  const g = new Float32Array(model.size);
  for (let i = 0; i < 5; i++) model.gradient(x, y, n, g);
  const t0 = performance.now();
  for (let i = 0; i < 20; i++) model.gradient(x, y, n, g);
  const ms = (performance.now() - t0) / 20;
  model.dispose();
  return Math.max(ms, 0.05);
}

/**
 * The first gradient step of a fresh process, as a worker's first step costs it (JIT and caches
 * cold), in ms: measured in a child process, since this one is warm from the other tests.
 */
function coldGradientMs(): number {
  const cfg = smallConfig();
  const mod = (p: string) => JSON.stringify(new URL(`../../src/${p}`, import.meta.url).href);
  const script = [
    `const { selectBackend } = await import(${mod("model/backend.js")});`,
    `const { loadDataset } = await import(${mod("data/load.js")});`,
    `const { createModel } = await import(${mod("model/zoo.js")});`,
    `await selectBackend(${JSON.stringify(cfg.backend)});`,
    `const data = await loadDataset(${JSON.stringify(cfg.dataset)}, { seed: ${cfg.seed}, trainLimit: 0, testLimit: 1 });`,
    `const model = createModel(${JSON.stringify(cfg.model)}, data.inputShape, data.numOutputs, data.task);`,
    `model.setWeights(model.init(${cfg.seed}));`,
    `const n = ${cfg.batchSize};`,
    "const g = new Float32Array(model.size);",
    "const t0 = performance.now();",
    "model.gradient(data.trainX.subarray(0, (n * data.trainX.length) / data.trainCount), data.trainY.subarray(0, (n * data.trainY.length) / data.trainCount), n, g);",
    "process.stdout.write(String(performance.now() - t0));",
  ].join("\n");
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
  const ms = Number(r.stdout);
  if (r.status !== 0 || !Number.isFinite(ms)) throw new Error(`measuring a cold gradient step failed: ${r.stderr}`);
  return Math.max(ms, 0.05);
}

/** The survivors' data shards (re-partitioned at their next epoch) cover the whole training set. */
async function assertDataShared(summary: Summary): Promise<void> {
  const { trainCount } = await loadDataset("synthetic", { seed: 1, trainLimit: 0, testLimit: 1 });
  const total = summary.workerStats.reduce((a, w) => a + (w.shardSize ?? 0), 0);
  assert.equal(total, trainCount, `the survivors' shards hold ${total} of ${trainCount} samples`);
}

describe("a worker killed with SIGKILL mid-run (--on-worker-failure)", function () {
  this.timeout(180_000);
  // The straggler (worker 0) sleeps STRAGGLER x its compute time per step: ~15 ms a step on any
  // machine, so a run of STEPS steps lasts seconds, long enough for a replacement to join.
  let STRAGGLER = 10;
  before(async () => {
    STRAGGLER = Math.max(2, Math.ceil(15 / (await gradientMs())));
  });

  for (const mode of ["sync", "ssp", "async"] as ModeName[]) {
    for (const policy of ["shrink", "wait", "abort"] as WorkerFailurePolicy[]) {
      it(`${mode}, ${policy}: ${policy === "abort" ? "the run fails naming worker 1" : "the run finishes and records the failure"}; no process is left behind`, async () => {
        const cfg = smallConfig({ mode, staleness: 2, workers: 3, servers: 2, maxSteps: STEPS, slow: { 0: STRAGGLER }, onWorkerFailure: policy, replaceTimeout: 60_000 });
        const run = train(cfg);
        run.catch(() => undefined);
        const procs = await processesOf(cfg.out);
        await stepsReported(cfg.out, 1, 20);
        const victim = procs.find((p) => p.role === "worker" && p.rank === 1)!;
        process.kill(victim.pid, "SIGKILL");
        if (policy === "abort") {
          await assert.rejects(run, /worker 1 \(pid \d+\) was killed by SIGKILL/);
          const failed = JSON.parse(readFileSync(join(cfg.out, "summary.json"), "utf8")) as { status: string; error: string };
          assert.equal(failed.status, "failed");
          assert.match(failed.error, /worker 1/);
          await noneAlive(procs.map((p) => p.pid));
          return;
        }
        const summary: Summary = await run;
        assert.equal(summary.status, "ok");
        assert.equal(summary.workerFailures.length, 1);
        const f = summary.workerFailures[0]!;
        assert.equal(f.rank, 1);
        assert.equal(f.policy, policy);
        assert.match(f.error, /worker 1 \(pid \d+\) was killed by SIGKILL/);
        assert.ok(f.atStep >= 20 && f.atStep < STEPS, `lost at step ${f.atStep}`);
        const ranks = summary.workerStats.map((w) => w.rank);
        for (const w of summary.workerStats) if (w.rank !== 1) assert.equal(w.steps, STEPS, `worker ${w.rank} took every step`);
        if (policy === "shrink") {
          assert.deepEqual(ranks, [0, 2]);
          assert.equal(summary.workersAtEnd, 2);
          await assertDataShared(summary);
        } else {
          assert.equal(f.replaced, true);
          assert.ok(f.replacementPid !== undefined);
          assert.deepEqual(ranks, [0, 1, 2]);
          assert.equal(summary.workersAtEnd, 3);
          const r1 = summary.workerStats.find((w) => w.rank === 1)!;
          // It joined at the clock the shards gave it and took every step from there. Sync and SSP
          // hold the others near worker 1's clock, so that is past 0; async gives the slowest live
          // clock, which is 0 while the straggler's first (cold, slowed) step is still running.
          assert.equal(typeof r1.joinedAt, "number", "the replacement reports its join clock");
          assert.equal(r1.steps, STEPS - r1.joinedAt!, `the replacement took the steps from its join clock ${r1.joinedAt} on`);
          assert.ok(r1.steps > 0, "the replacement took steps");
          if (mode !== "async") assert.ok(r1.joinedAt! > 0, `the replacement resumed at the current clock, not at 0 (joined at ${r1.joinedAt})`);
        }
        assert.ok(Number.isFinite(summary.testLoss));
        await noneAlive([...procs.map((p) => p.pid), ...(f.replacementPid !== undefined ? [f.replacementPid] : [])]);
      });
    }
  }

  it("sync: a read held past --heartbeat-timeout is reported with the rank it waits for and its clock", async () => {
    // Worker 0 is a straggler that heartbeats: --slow sleeps a multiple of its compute time every
    // step. The multiple is calibrated on a fresh process's first step (the step worker 1 waits
    // for at clock 0) so that it sleeps ~6 s: past the 1.5 s timeout even if the worker's first
    // step is 4x quicker than measured, and within the 120 s deadline even if it is 20x slower.
    // Its later, warm steps sleep less; the run has two.
    const factor = Math.ceil(6000 / coldGradientMs());
    const cfg = smallConfig({ mode: "sync", workers: 2, maxSteps: 2, slow: { 0: factor }, heartbeatMs: 100, heartbeatTimeout: 1500, timeoutMs: 120_000 });
    const summary = await train(cfg);
    assert.equal(summary.workerFailures.length, 0, "a straggler that heartbeats is not lost");
    assert.ok(summary.stallReports.length >= 1, "at least one stall was reported");
    const r = summary.stallReports[0]!;
    assert.equal(r.reader, 1);
    assert.ok(r.waitedMs >= 1500);
    assert.deepEqual(r.waitingOn.map((w) => w.rank), [0]);
    assert.equal(r.waitingOn[0]!.clock, r.clock - 1, "worker 0 has not pushed the clock worker 1 waits on");
  });

  for (const victimRank of [1, 0]) {
    it(`allreduce, shrink: worker ${victimRank} killed, the survivors re-form the ring and end with bit-identical weights`, async () => {
      // Evaluations every 25 steps, so that the failure may land next to one (their verdicts survive a rollback).
      const cfg = smallConfig({ mode: "sync", comm: "allreduce", workers: 3, maxSteps: STEPS, evalEvery: 25, slow: { 2: STRAGGLER }, onWorkerFailure: "shrink" });
      const run = train(cfg);
      run.catch(() => undefined);
      const procs = await processesOf(cfg.out);
      await stepsReported(cfg.out, victimRank, 20);
      const victim = procs.find((p) => p.role === "worker" && p.rank === victimRank)!;
      process.kill(victim.pid, "SIGKILL");
      const summary: Summary = await run;
      assert.equal(summary.status, "ok");
      assert.equal(summary.workerFailures.length, 1);
      assert.equal(summary.workerFailures[0]!.rank, victimRank);
      const survivors = summary.workerStats;
      assert.deepEqual(survivors.map((w) => w.rank), [0, 1, 2].filter((r) => r !== victimRank));
      for (const w of survivors) assert.equal(w.steps, STEPS, `worker ${w.rank} finished every step`);
      const sha = survivors[0]!.weightsSha256;
      assert.ok(sha);
      for (const w of survivors) assert.equal(w.weightsSha256, sha, `worker ${w.rank}'s weights are bit-identical to worker ${survivors[0]!.rank}'s`);
      const saved = createHash("sha256").update(readFileSync(join(cfg.out, "model", "weights.bin"))).digest("hex");
      assert.equal(saved, sha, "the saved model is the survivors' weights");
      assert.ok(summary.testAccuracy > 0.5, `accuracy ${summary.testAccuracy}`);
      await assertDataShared(summary);
      await noneAlive(procs.map((p) => p.pid));
    });
  }

  it("sync, shrink: a worker stopped with SIGSTOP is lost after --heartbeat-timeout, killed, and the others finish", async () => {
    const cfg = smallConfig({ mode: "sync", workers: 3, maxSteps: STEPS, slow: { 0: STRAGGLER }, heartbeatMs: 100, heartbeatTimeout: 1500, onWorkerFailure: "shrink" });
    const run = train(cfg);
    run.catch(() => undefined);
    const procs = await processesOf(cfg.out);
    await stepsReported(cfg.out, 2, 20);
    const victim = procs.find((p) => p.role === "worker" && p.rank === 2)!;
    process.kill(victim.pid, "SIGSTOP");
    const summary: Summary = await run;
    assert.equal(summary.workerFailures.length, 1);
    assert.equal(summary.workerFailures[0]!.rank, 2);
    assert.match(summary.workerFailures[0]!.error, /worker 2 \(pid \d+\) sent no heartbeat for \d+ ms/);
    assert.deepEqual(summary.workerStats.map((w) => [w.rank, w.steps]), [[0, STEPS], [1, STEPS]]);
    await noneAlive(procs.map((p) => p.pid));
  });

  for (const [what, over, error] of [
    ["--max-replacements 0", { maxReplacements: 0 }, /worker 1 may not be replaced \(--max-replacements 0\): worker 1 \(pid \d+\) was killed by SIGKILL/],
    ["a replacement that cannot join within --replace-timeout", { replaceTimeout: 1 }, /worker 1's replacement sent no HELLO within 1 ms \(--replace-timeout\)/],
  ] as const) {
    it(`async, wait: ${what} aborts the run cleanly, and no process is left behind`, async () => {
      const cfg = smallConfig({ mode: "async", workers: 2, maxSteps: STEPS, slow: { 0: STRAGGLER }, onWorkerFailure: "wait", ...over });
      const run = train(cfg);
      run.catch(() => undefined);
      const procs = await processesOf(cfg.out);
      await stepsReported(cfg.out, 1, 20);
      process.kill(procs.find((p) => p.role === "worker" && p.rank === 1)!.pid, "SIGKILL");
      await assert.rejects(run, error);
      const failed = JSON.parse(readFileSync(join(cfg.out, "summary.json"), "utf8")) as { status: string; workerFailures: { rank: number; replacementPid?: number }[] };
      assert.equal(failed.status, "failed");
      assert.equal(failed.workerFailures[0]!.rank, 1);
      await noneAlive(procs.map((p) => p.pid));
    });
  }
});
