import { strict as assert } from "node:assert";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { expandGrid, parseAxis } from "../../src/experiment/grid.js";
import { chartSvg, ticks } from "../../src/experiment/plot.js";
import { band } from "../../src/experiment/plots.js";
import { meanStd, readResults } from "../../src/experiment/report.js";
import { type GridProgress, runGrid } from "../../src/experiment/run-grid.js";
import { GridProgressBar } from "../../src/cli/progress-bar.js";
import { TestCluster } from "../helpers/cluster.js";
import { haveRedisServer, TestRedis } from "../helpers/redis.js";
import { tempDir } from "../helpers/run.js";

const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000, env: { ...process.env, PS_TRAIN_WORKERS: "" } });
const TINY = ["--dataset", "synthetic", "--model", "logreg", "--max-steps", "8", "--backend", "cpu", "--log-level", "silent"];

describe("experiment grids", function () {
  this.timeout(180_000);

  it("parses axes by flag or camelCase name and refuses unknown options, --out and --seed", () => {
    assert.deepEqual(parseAxis("batchSize=16,32"), { key: "batchSize", flag: "batch-size", values: ["16", "32"] });
    assert.deepEqual(parseAxis("slow=none,0:4").values, ["none", "0:4"]);
    assert.throws(() => parseAxis("nope=1"), /"nope" is not a training option/);
    assert.throws(() => parseAxis("seed=1,2"), /use --seeds/);
    assert.throws(() => parseAxis("mode"), /NAME=VALUE/);
  });

  it("expands every combination once per seed, runs configs that coincide once, and skips invalid combinations", () => {
    const axes = [parseAxis("comm=ps,allreduce"), parseAxis("mode=sync,async,ssp"), parseAxis("staleness=1,3")];
    const cells = expandGrid({ workers: "2", seed: "7" }, axes, 2, {});
    const run = cells.filter((c) => c.config);
    const skipped = cells.filter((c) => !c.config);
    // ps: sync, async (staleness collapses), ssp×2 = 4; allreduce: sync = 1; per seed
    assert.equal(run.length, 5 * 2);
    assert.equal(skipped.length, 3 * 2);
    assert.ok(skipped.every((c) => /--comm allreduce needs --mode sync/.test(c.skipReason!)));
    assert.deepEqual([...new Set(run.map((c) => c.seed))], [7, 8]);
    assert.equal(new Set(cells.map((c) => c.id)).size, cells.length, "ids are unique");
    assert.ok(run.every((c) => c.config!.workers === 2 && c.config!.seed === c.seed));
    assert.deepEqual(
      [...new Set(run.filter((c) => c.values["comm"] === "ps").map((c) => `${c.values["mode"]} ${c.values["staleness"]}`))],
      ["sync n/a", "async n/a", "ssp 1", "ssp 3"],
      "a run that stands for several shows no staleness outside SSP",
    );
    assert.throws(() => expandGrid({}, [parseAxis("mode=sync,fast")], 1, {}), /--mode must be one of/);
    assert.throws(() => expandGrid({}, [parseAxis("mode=sync"), parseAxis("mode=async")], 1, {}), /given twice/);
  });

  it("plots: round ticks, a band of mean ± std over the curves that cover each x, one line per series", () => {
    assert.deepEqual(ticks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
    assert.deepEqual(ticks(3, 97), [20, 40, 60, 80]);
    const b = band([
      { x: [0, 1, 2], y: [0, 10, 20] },
      { x: [0, 2], y: [2, 22] },
    ]);
    assert.equal(b.length, 60);
    assert.deepEqual(b[0], { x: 0, y: 1, lo: 1 - Math.SQRT2, hi: 1 + Math.SQRT2 });
    assert.ok(Math.abs(b[59]!.y - 21) < 1e-9);
    const svg = chartSvg({ title: "t", xLabel: "x", yLabel: "y", series: [{ label: "a", points: b }, { label: "b<c", points: [{ x: 1, y: 5 }] }] });
    assert.equal((svg.match(/<polyline/g) ?? []).length, 1);
    assert.equal((svg.match(/<polygon/g) ?? []).length, 1, "the band of the series with a spread");
    assert.match(svg, /b&lt;c/);
  });

  it("a local grid reports its progress over cells (for the terminal's bar), with the time left", async function () {
    this.timeout(60_000);
    const axes = [parseAxis("mode=sync,async")];
    const cells = expandGrid({ dataset: "synthetic", model: "logreg", "max-steps": "40", backend: "cpu", "log-level": "silent", "eval-every": "0" }, axes, 1, {});
    const seen: GridProgress[] = [];
    const r = await runGrid(join(tempDir(), "exp"), axes, 1, cells, { progress: (p) => seen.push(p) });
    assert.equal(r.ok, 2);
    assert.ok(seen.some((p) => p.done === 0) && seen.some((p) => p.done === 1), "both cells reported");
    assert.ok(seen.every((p) => p.total === 2 && p.fraction >= 0 && p.fraction <= 1));
    const later = seen.filter((p) => p.done === 1);
    assert.ok(later.every((p) => Number.isFinite(p.etaSeconds) && p.etaSeconds >= 0), "an estimate once a cell is done");
    assert.match(later[0]!.label, /mode=async seed=1/);

    // The bar: one self-overwriting line; a line written through it goes above, the bar cleared first.
    let out = "";
    const bar = new GridProgressBar({ columns: 200, write: (t: string) => ((out += t), true) } as unknown as NodeJS.WriteStream);
    bar.update({ done: 1, total: 4, label: "mode=ssp seed=2", fraction: 0.5, etaSeconds: 95 });
    assert.match(out, /^\r█{9}░{15} cell 2\/4 38% ETA 1m35s {2}mode=ssp seed=2$/);
    bar.line("experiment: [3/4] next");
    assert.match(out, /\r {50,}\rexperiment: \[3\/4\] next\n$/);
  });

  it("mean and sample standard deviation", () => {
    assert.deepEqual(meanStd([2, 4, 4, 4, 5, 5, 7, 9]), { mean: 5, std: Math.sqrt(32 / 7) });
    assert.deepEqual(meanStd([3]), { mean: 3, std: 0 });
  });

  it("runs a grid of real runs, resumes without re-running finished cells, records failures and goes on", () => {
    const out = join(tempDir(), "exp");
    const r1 = run(["experiment", "--grid", "mode=sync,async", "workers=1,2", "--seeds", "2", ...TINY, "--out", out]);
    assert.equal(r1.status, 0, r1.stderr);
    assert.match(r1.stdout, /8 finished, 0 failed, 0 skipped/);
    const { rows } = readResults(out);
    assert.equal(rows.length, 8);
    assert.ok(rows.every((r) => r.status === "ok" && r.summary!.steps === 8));
    const csv = readFileSync(join(out, "results.csv"), "utf8").trim().split("\n");
    assert.equal(csv.length, 9);
    assert.equal(csv[0]!.split(",").slice(0, 4).join(","), "mode,workers,seed,status");
    const report = readFileSync(join(out, "report.md"), "utf8");
    assert.match(report, /\| async \| 2 \| 2\/2 \|/);
    for (const p of ["accuracy-vs-time", "accuracy-vs-epochs", "loss-vs-time", "loss-vs-epochs", "samples-per-second-vs-workers", "staleness-histogram"]) {
      const svg = readFileSync(join(out, "plots", `${p}.svg`), "utf8");
      assert.match(svg, /^<svg /);
      assert.equal((svg.match(/mode=(sync|async)/g) ?? []).length >= 2, true, `${p}: a legend entry per mode`);
      assert.ok(readFileSync(join(out, "plots", `${p}.png`)).subarray(1, 4).equals(Buffer.from("PNG")), `${p}.png is a PNG`);
      assert.match(report, new RegExp(`plots/${p}.svg`));
    }
    const summaryFile = join(out, "runs", rows[0]!.id, "summary.json");
    const before = statSync(summaryFile).mtimeMs;

    // Resume: nothing is run again.
    const r2 = run(["experiment", "--grid", "mode=sync,async", "workers=1,2", "--seeds", "2", ...TINY, "--out", out]);
    assert.equal(r2.status, 0, r2.stderr);
    assert.match(r2.stderr, /8 cells finished earlier, not run again/);
    assert.equal(statSync(summaryFile).mtimeMs, before);

    // A failing cell is recorded, the others run, and the exit status says so.
    const out2 = join(tempDir(), "exp");
    const r3 = run(["experiment", "--grid", `dataset=synthetic,${join(out2, "no-such-data")}`, ...TINY.filter((a) => a !== "synthetic" && a !== "--dataset"), "--out", out2]);
    assert.equal(r3.status, 1, r3.stderr);
    assert.match(r3.stdout, /1 finished, 1 failed, 0 skipped/);
    assert.match(r3.stderr, /1 run of the grid failed/);
    const res = readResults(out2).rows;
    assert.deepEqual(res.map((r) => r.status).sort(), ["failed", "ok"]);
    assert.match(res.find((r) => r.status === "failed")!.error, /PS_ERR_BAD_DATASET/);

    // report re-renders from the runs alone.
    writeFileSync(join(out, "report.md"), "");
    const r4 = run(["report", out]);
    assert.equal(r4.status, 0, r4.stderr);
    assert.match(readFileSync(join(out, "report.md"), "utf8"), /# Experiment report/);
  });

  it("an experiment file gives base options, axes and seeds; bad input is one line naming the file's line, and exit 2", () => {
    const dir = tempDir();
    const file = join(dir, "e.yaml");
    writeFileSync(file, "base:\n  dataset: synthetic\n  model: logreg\n  max-steps: 5\n  backend: cpu\ngrid:\n  mode: [sync, ssp]\nseeds: 1\n");
    const out = join(dir, "out");
    const r = run(["experiment", file, "--out", out, "--log-level", "silent"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /2 finished/);
    let nBad = 0;
    const bad = (text: string) => {
      const f = join(dir, `bad-${nBad++}.yaml`);
      writeFileSync(f, text);
      return f;
    };
    for (const [args, pattern] of [
      [["experiment", "--grid", "mode=fast", "--out", join(dir, "x")], /--mode must be one of/],
      [["experiment", "--grid", "mode=sync"], /--out DIR is required/],
      [["experiment", join(dir, "missing.yaml"), "--out", join(dir, "x")], /no such file/],
      [["report", join(dir, "nothing")], /no grid.json/],
      [["experiment", bad("base:\n  workers: 2\n  bach-size: 3\n"), "--out", join(dir, "x")], /line 3: "bach-size" is not a training option/],
      [["experiment", bad("base: { workers: 2, batch-size: -1 }\ngrid:\n  mode: [sync]\n"), "--out", join(dir, "x")], /line 1: --batch-size must be an integer >= 1/],
      [["experiment", bad("# modes\ngrid:\n  mode: [sync, fast]\n"), "--out", join(dir, "x")], /line 3: --mode must be one of/],
    ] as [string[], RegExp][]) {
      const b = run(args);
      assert.equal(b.status, 2, `${args.join(" ")}: ${b.stderr}`);
      assert.equal(b.stderr.trim().split("\n").length, 1, b.stderr);
      assert.match(b.stderr, pattern);
    }
  });

  it("--redis runs the cells as jobs of a real cluster (redis-server, scheduler, agents) and fetches their run directories", async function () {
    if (!haveRedisServer()) this.skip();
    const redis = new TestRedis();
    await redis.start();
    const cluster = new TestCluster(redis.url);
    try {
      cluster.startScheduler();
      for (let i = 0; i < 3; i++) cluster.startAgent();
      const out = join(tempDir(), "exp");
      const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        const p = spawn(process.execPath, [CLI, "experiment", "--grid", "mode=sync,async", ...TINY, "--redis", redis.url, "--prefix", cluster.prefix, "--out", out], { stdio: ["ignore", "pipe", "pipe"] });
        let stdout = "";
        let stderr = "";
        p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
        p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        p.on("exit", (status) => resolve({ status, stdout, stderr }));
      });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /submitted 2 jobs/);
      const { rows } = readResults(out);
      assert.deepEqual(rows.map((x) => x.status), ["ok", "ok"]);
      assert.ok(rows.every((x) => x.summary!.steps === 8));
      assert.match(readFileSync(join(out, "report.md"), "utf8"), /\| async \| 1\/1 \|/);
    } finally {
      await cluster.stop();
      await redis.destroy();
    }
  });
});
