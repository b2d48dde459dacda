import { strict as assert } from "node:assert";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ResultRow } from "../../src/experiment/report.js";
import { ANALYSES, renderResults, toRun } from "../../src/experiment/results-doc.js";
import { tempDir } from "../helpers/run.js";

let nextId = 0;

/** A finished (or diverged) run as `readResults` gives it. */
function row(values: Record<string, string>, s: { acc?: number; tta?: number | null; epochs?: number[]; sps?: number; bytes?: number; serverBytes?: number; diverged?: boolean }): ResultRow {
  const target = s.tta !== undefined ? 0.97 : null;
  const evals = (s.epochs ?? []).map((epoch, i, all) => ({ epoch, t: i, testAccuracy: i === all.length - 1 && s.tta !== null ? 0.975 : 0.9 }));
  if (s.diverged) return { id: `r${nextId++}`, values, seed: 1, status: "failed", summary: null, error: "PS_ERR_DIVERGED: training diverged: worker 1 reported loss NaN" };
  return {
    id: `r${nextId++}`,
    values,
    seed: 1,
    status: "ok",
    error: "",
    summary: {
      status: "ok",
      testAccuracy: s.acc ?? 0.97,
      timeToTargetSeconds: s.tta ?? null,
      targetAccuracy: target,
      samplesPerSecond: s.sps ?? 1000,
      steps: 10,
      staleness: { mean: 1, p99: 2, max: 3 },
      ...({
        evals,
        workers: Number(values["workers"] ?? 1),
        servers: 1,
        bytesByRole: { worker: { sent: s.bytes ?? 0, received: s.bytes ?? 0 }, server: { sent: s.serverBytes ?? 0, received: s.serverBytes ?? 0 } },
      } as object),
    },
  };
}

describe("docs/RESULTS.md verdicts", () => {
  it("stragglers: supported only when every async and SSP configuration is sooner than sync and async needs the most epochs", () => {
    const runs = (asyncTta: number, asyncEpochs: number) =>
      [
        row({ mode: "sync", staleness: "n/a" }, { tta: 30, epochs: [0.5, 1.0] }),
        row({ mode: "async", staleness: "n/a" }, { tta: asyncTta, epochs: [0.5, 1.0, asyncEpochs] }),
        row({ mode: "ssp", staleness: "3" }, { tta: 20, epochs: [0.5, 1.2] }),
      ].map(toRun);
    const yes = ANALYSES["2-stragglers"]!(runs(15, 1.5));
    assert.equal(yes.verdict, "supported", yes.why.join(" "));
    assert.match(yes.table, /\| ssp s=3 \| 1\/1 \| 1\/1 \| 20\.00 \| 1\.20 \|/);
    assert.equal(ANALYSES["2-stragglers"]!(runs(40, 1.5)).verdict, "partly supported", "async later than sync");
    assert.equal(ANALYSES["2-stragglers"]!(runs(40, 1.1)).verdict, "not supported");
    const never = [row({ mode: "sync" }, { tta: null, epochs: [1] }), row({ mode: "async" }, { tta: null, epochs: [1] })].map(toRun);
    assert.equal(ANALYSES["2-stragglers"]!(never).verdict, "no data", "no run reached the target");
  });

  it("async scaling: a diverged run counts at chance, and the unscaled rule must lose the most", () => {
    const runs = (noneAt8: Parameters<typeof row>[1]) =>
      [
        row({ workers: "1", "async-lr-scale": "none" }, { acc: 0.97 }),
        row({ workers: "1", "async-lr-scale": "workers" }, { acc: 0.97 }),
        row({ workers: "8", "async-lr-scale": "none" }, noneAt8),
        row({ workers: "8", "async-lr-scale": "workers" }, { acc: 0.96 }),
      ].map(toRun);
    const div = ANALYSES["3-async-scaling"]!(runs({ diverged: true }));
    assert.equal(div.verdict, "supported");
    assert.match(div.table, /1\/1 diverged/);
    assert.match(div.why[0]!, /none 87\.00, workers 1\.00/);
    assert.equal(ANALYSES["3-async-scaling"]!(runs({ acc: 0.965 })).verdict, "not supported");
  });

  it("ps vs allreduce: the busiest process's bytes per step and samples/s compared at each worker count from 2", () => {
    // 10 steps; ps: the server moves 2 x 40 MB, each of 2 workers 2 x 20 MB; allreduce: each of 2 workers 2 x 10 MB
    const runs = (arSps: number) =>
      [
        row({ comm: "ps", workers: "1" }, { sps: 100, bytes: 10, serverBytes: 10 }),
        row({ comm: "allreduce", workers: "1" }, { sps: 90, bytes: 0 }),
        row({ comm: "ps", workers: "2" }, { sps: 100, bytes: 40e6, serverBytes: 40e6 }),
        row({ comm: "allreduce", workers: "2" }, { sps: arSps, bytes: 20e6 }),
      ].map(toRun);
    const s = ANALYSES["4-ps-vs-allreduce"]!(runs(150));
    assert.equal(s.verdict, "supported", s.why.join(" "));
    assert.match(s.table, /\| 2 \| 100 \| 150 \| 1\.50 \| 8\.00 \| 2\.00 \| 8\.00 \| 4\.00 \|/);
    assert.equal(ANALYSES["4-ps-vs-allreduce"]!(runs(80)).verdict, "partly supported", "fewer bytes at the busiest process, but slower");
  });

  it("renders a section per experiment with the claim, the command, the plots copied into docs, and 'not run yet' for the others", () => {
    const root = tempDir();
    const experiments = join(root, "experiments");
    const results = join(root, "results");
    const docs = join(root, "docs");
    mkdirSync(experiments);
    writeFileSync(join(experiments, "1-modes.yaml"), "title: Tiny\nclaim: Sync needs the fewest epochs.\ndescription: A test.\ngrid: { mode: [sync, async] }\n");
    writeFileSync(join(experiments, "9-other.yaml"), "title: Other\nclaim: Nothing.\n");
    const dir = join(results, "1-modes");
    mkdirSync(join(dir, "runs"), { recursive: true });
    const rows = [row({ mode: "sync" }, { tta: 3, epochs: [0.5, 1] }), row({ mode: "async" }, { tta: 3.5, epochs: [0.5, 1, 1.5] })];
    writeFileSync(join(dir, "grid.json"), JSON.stringify({ axes: [{ flag: "mode", values: ["sync", "async"] }], seeds: 1, cells: rows.map((r) => ({ id: r.id, values: r.values, seed: 1, skipReason: null })) }));
    for (const r of rows) {
      mkdirSync(join(dir, "runs", r.id));
      writeFileSync(join(dir, "runs", r.id, "summary.json"), JSON.stringify(r.summary));
      writeFileSync(join(dir, "runs", r.id, "metrics.jsonl"), (r.summary as unknown as { evals: object[] }).evals.map((e) => JSON.stringify({ type: "eval", ...e }) + "\n").join(""));
    }
    const lines: Record<string, unknown>[] = [];
    const md = renderResults({ experiments, results, docs }, ["1-modes", "9-other"], null, (o) => lines.push(o));
    assert.match(md, /\| \[Tiny\]\(#1-modes\) \| \*\*supported\*\* \|/);
    assert.match(md, /\*\*Claim\.\*\* Sync needs the fewest epochs\./);
    assert.match(md, /npx ps-train experiment experiments\/1-modes\.yaml --out results\/experiments\/1-modes/);
    assert.match(md, /!\[accuracy-vs-epochs\]\(results\/experiments\/1-modes\/plots\/accuracy-vs-epochs\.svg\)/);
    assert.match(md, /## Other\n\n[\s\S]*Not run yet/);
    for (const f of ["results.csv", "report.md", "plots/accuracy-vs-epochs.svg", "plots/accuracy-vs-epochs.png"]) assert.ok(existsSync(join(docs, "results", "experiments", "1-modes", f)), f);
    assert.match(readFileSync(join(docs, "results", "experiments", "1-modes", "results.csv"), "utf8"), /^mode,seed,status/);
    assert.deepEqual(lines.map((l) => l["verdict"]), ["supported", "not run"]);
  });
});
