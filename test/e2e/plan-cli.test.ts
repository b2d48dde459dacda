import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { tempDir } from "../helpers/run.js";

const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("ps-train plan and pipeline flags, through the binary", function () {
  this.timeout(180_000);

  it("plan: the per-layer table, the chosen split and the predicted step", () => {
    const r = cli(["plan", "--model", "mlp", "--dataset", "synthetic", "--stages", "2", "--microbatches", "2", "--backend", "cpu", "--bandwidth", "1Gbit", "--reps", "2"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /dense1/);
    assert.match(r.stdout, /dense3/);
    assert.match(r.stdout, /split after unit\(s\): [12]; bottleneck [\d.]+ ms per micro-batch; predicted step [\d.]+ ms with 2 micro-batch/);
  });

  it("plan --json and plan --split edge-cloud --objective energy", () => {
    const j = cli(["plan", "--model", "mlp", "--dataset", "synthetic", "--stages", "3", "--backend", "cpu", "--bandwidth", "100Mbit", "--reps", "2", "--json"]);
    assert.equal(j.code, 0, j.stderr);
    const plan = JSON.parse(j.stdout) as { units: unknown[]; plan: { splitAt: number[]; predictedStepMs: number }; bandwidthBytesPerSecond: number };
    assert.equal(plan.units.length, 3);
    assert.deepEqual(plan.plan.splitAt, [1, 2]);
    assert.equal(plan.bandwidthBytesPerSecond, 1.25e7);
    assert.ok(plan.plan.predictedStepMs > 0);
    const e = cli(["plan", "--model", "mlp", "--dataset", "synthetic", "--split", "edge-cloud", "--bandwidth", "10Mbit", "--edge-slowdown", "8", "--objective", "energy", "--backend", "cpu", "--reps", "2", "--json"]);
    assert.equal(e.code, 0, e.stderr);
    const ec = JSON.parse(e.stdout) as { cuts: { cut: number; energyMj: number }[]; best: { cut: number; energyMj: number }; objective: string };
    assert.equal(ec.cuts.length, 4);
    assert.equal(ec.objective, "energy");
    assert.equal(ec.best.energyMj, Math.min(...ec.cuts.map((c) => c.energyMj)));
  });

  for (const [what, args, re] of [
    ["--stages beyond the model's layers", ["--parallelism", "model", "--stages", "4"], /--stages 4 exceeds the 3 layer/],
    ["split points out of order", ["--parallelism", "model", "--stages", "3", "--model", "cnn", "--split-at", "3,1"], /--split-at must be ascending/],
    ["hybrid without --replicas", ["--parallelism", "hybrid", "--stages", "2"], /needs --replicas/],
    ["--adaptive with allreduce", ["--parallelism", "model", "--stages", "2", "--comm", "allreduce", "--adaptive", "0.5"], /--adaptive needs --comm ps/],
    ["a bad --bandwidth", ["plan", "--bandwidth", "fast"], /--bandwidth must be a rate/],
  ] as const) {
    it(`rejects ${what}: one line, exit 2, nothing written`, () => {
      const out = join(tempDir(), "run");
      const r = cli([...args, "--dataset", "synthetic", "--backend", "cpu", "--out", out]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, /PS_ERR_BAD_OPTION/);
      assert.match(r.stderr, re);
      assert.ok(!existsSync(out));
    });
  }

  it("trains a 2-stage pipeline through the binary and writes the pipeline block", () => {
    const out = join(tempDir(), "run");
    const r = cli(["--parallelism", "model", "--stages", "2", "--microbatches", "2", "--mode", "sync", "--dataset", "synthetic", "--model", "mlp", "--max-steps", "10", "--backend", "cpu", "--out", out, "--log-level", "warn"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /pipeline 2 stages x 2 micro-batches, split after [12], bubble [\d.]+ \(ideal 0\.33\)/);
    const s = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as { parallelism: string; pipeline: { stages: number; splitAt: number[]; chosenBy: string } };
    assert.equal(s.parallelism, "model");
    assert.equal(s.pipeline.stages, 2);
    assert.equal(s.pipeline.splitAt.length, 1);
    assert.equal(s.pipeline.chosenBy, "planner");
  });
});
