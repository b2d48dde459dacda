/**
 * docs/RESULTS.md from the results of the experiments shipped in experiments/: per experiment a
 * table, plots and a verdict computed from the runs by a stated rule (see scripts/experiments.ts,
 * `npm run experiments`, which runs them and calls renderResults).
 */
import { cpSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { cpus } from "node:os";
import { join, relative } from "node:path";
import { readExperimentFile } from "../cli/experiment-commands.js";
import { meanStd, readResults, reportMarkdown, type ResultRow, writeReport } from "./report.js";

// ---------------------------------------------------------------------------------------------
// Figures from the runs
// ---------------------------------------------------------------------------------------------

interface Eval {
  epoch: number;
  t: number;
  testAccuracy: number;
}

export interface Run {
  row: ResultRow;
  ok: boolean;
  diverged: boolean;
  accuracy: number;
  secondsToTarget: number | null;
  epochsToTarget: number | null;
  samplesPerSecond: number;
  /** bytes workers sent and received per global step, all workers together */
  bytesPerStep: number;
  /** bytes per global step of the busiest process: the server (one shard), or one worker of allreduce */
  busiestBytesPerStep: number;
  stalenessMean: number;
  stalenessP99: number;
}

export function toRun(row: ResultRow): Run {
  const s = row.summary as
    | (ResultRow["summary"] & { evals?: Eval[]; workers?: number; servers?: number; bytesByRole?: { worker: { sent: number; received: number }; server?: { sent: number; received: number } } })
    | null;
  const ok = row.status === "ok" && s !== null;
  const target = s?.targetAccuracy ?? null;
  const hit = ok && target !== null ? (s.evals ?? []).find((e) => e.testAccuracy >= target) : undefined;
  const worker = s?.bytesByRole?.worker;
  const server = s?.bytesByRole?.server;
  const perStep = (b: { sent: number; received: number } | undefined, n: number) => (ok && b && s.steps ? (b.sent + b.received) / s.steps / n : NaN);
  return {
    row,
    ok,
    diverged: row.status === "failed" && /diverged|non-finite|NaN/i.test(row.error),
    accuracy: ok ? s.testAccuracy ?? NaN : NaN,
    secondsToTarget: ok ? s.timeToTargetSeconds ?? null : null,
    epochsToTarget: hit ? hit.epoch : null,
    samplesPerSecond: ok ? s.samplesPerSecond ?? NaN : NaN,
    bytesPerStep: perStep(worker, 1),
    busiestBytesPerStep: server && server.sent + server.received > 0 ? Math.max(perStep(server, s?.servers ?? 1), perStep(worker, s?.workers ?? 1)) : perStep(worker, s?.workers ?? 1),
    stalenessMean: ok ? s.staleness?.mean ?? NaN : NaN,
    stalenessP99: ok ? s.staleness?.p99 ?? NaN : NaN,
  };
}

/** Runs grouped by a label, in first-seen order. */
function groupBy(runs: readonly Run[], label: (r: Run) => string): Map<string, Run[]> {
  const m = new Map<string, Run[]>();
  for (const r of runs) {
    const k = label(r);
    m.set(k, [...(m.get(k) ?? []), r]);
  }
  return m;
}

function mean(xs: readonly number[]): number {
  const v = xs.filter(Number.isFinite);
  return v.length ? meanStd(v).mean : NaN;
}

function pm(xs: readonly number[], digits: number, scale = 1): string {
  const v = xs.filter(Number.isFinite).map((x) => x * scale);
  if (v.length === 0) return "—";
  const { mean: m, std } = meanStd(v);
  return v.length > 1 ? `${m.toFixed(digits)} ± ${std.toFixed(digits)}` : m.toFixed(digits);
}

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(" | ")} |`, `| ${head.map(() => "---").join(" | ")} |`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
}

/** A mode label: sync, async, ssp s=3. */
function modeLabel(r: Run): string {
  const v = r.row.values;
  if (v["mode"] !== "ssp") return v["mode"] ?? "?";
  return v["staleness"] !== undefined ? `ssp s=${v["staleness"]}` : "ssp";
}

function runsCell(rs: readonly Run[]): string {
  const ok = rs.filter((r) => r.ok).length;
  const div = rs.filter((r) => r.diverged).length;
  const failed = rs.length - ok - div;
  return `${ok}/${rs.length}${div ? ` (${div} diverged)` : ""}${failed ? ` (${failed} failed)` : ""}`;
}

/** Accuracy with diverged runs counted at chance (10 classes). */
function accuracyOrChance(r: Run): number {
  return r.diverged ? 0.1 : r.accuracy;
}

export type Verdict = "supported" | "partly supported" | "not supported" | "no data" | "no rule";

export interface Section {
  table: string;
  verdict: Verdict;
  rule: string;
  why: string[];
  plots: string[];
}

function verdictOf(checks: boolean[]): Verdict {
  if (checks.length === 0) return "no data";
  const n = checks.filter(Boolean).length;
  return n === checks.length ? "supported" : n === 0 ? "not supported" : "partly supported";
}

const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "—");

/** The target accuracy of the runs, as a label ("97%"). */
function targetLabel(runs: readonly Run[]): string {
  const t = runs.find((r) => typeof r.row.summary?.targetAccuracy === "number")?.row.summary?.targetAccuracy;
  return typeof t === "number" ? `${+(100 * t).toFixed(2)}%` : "the target";
}

/** Figures to the target: a mean over runs that never reached it is never. */
const ft = (x: number) => (x === Infinity ? "never" : f2(x));

/** Experiments 1 and 2: one row per mode: time and epochs to the target, accuracy, throughput, staleness. */
function modesTable(runs: readonly Run[]): { text: string; byMode: Map<string, Run[]> } {
  const tl = targetLabel(runs);
  const byMode = groupBy(runs, modeLabel);
  const rows = [...byMode].map(([mode, rs]) => {
    const ok = rs.filter((r) => r.ok);
    const hit = ok.filter((r) => r.secondsToTarget !== null);
    return [
      mode,
      runsCell(rs),
      `${hit.length}/${ok.length}`,
      pm(hit.map((r) => r.secondsToTarget!), 2),
      pm(hit.map((r) => r.epochsToTarget ?? NaN), 2),
      pm(ok.map((r) => r.accuracy), 2, 100),
      pm(ok.map((r) => r.samplesPerSecond), 0),
      pm(ok.map((r) => r.stalenessMean), 2),
      pm(ok.map((r) => r.stalenessP99), 1),
    ];
  });
  const text = table(["mode", "runs", `reached ${tl}`, `seconds to ${tl}`, `epochs to ${tl}`, "final test accuracy (%)", "samples/s", "staleness mean", "staleness p99"], rows);
  return { text, byMode };
}

/** Mean seconds / epochs to the target; a run that did not reach it counts as never (Infinity). */
function meanToTarget(rs: readonly Run[], f: (r: Run) => number | null): number {
  const ok = rs.filter((r) => r.ok);
  if (ok.length === 0) return NaN;
  const v = ok.map((r) => f(r) ?? Infinity);
  return v.reduce((a, x) => a + x, 0) / v.length;
}

function modesNoStragglers(runs: readonly Run[]): Section {
  const { text, byMode } = modesTable(runs);
  const tl = targetLabel(runs);
  const sync = byMode.get("sync") ?? [];
  const others = [...byMode].filter(([m]) => m !== "sync");
  const syncEp = meanToTarget(sync, (r) => r.epochsToTarget);
  const syncSec = meanToTarget(sync, (r) => r.secondsToTarget);
  const fastest = Math.min(...[...byMode.values()].map((rs) => meanToTarget(rs, (r) => r.secondsToTarget)));
  const why: string[] = [];
  const checks: boolean[] = [];
  if (!runs.some((r) => r.secondsToTarget !== null)) why.push(`No run reached ${tl}: nothing to compare.`);
  else if (sync.some((r) => r.ok) && others.length) {
    const fewest = others.every(([, rs]) => syncEp <= meanToTarget(rs, (r) => r.epochsToTarget));
    checks.push(fewest);
    why.push(`Epochs to ${tl}: sync ${ft(syncEp)}; ${others.map(([m, rs]) => `${m} ${ft(meanToTarget(rs, (r) => r.epochsToTarget))}`).join(", ")} — sync ${fewest ? "needs the fewest" : "does not need the fewest"}.`);
    const close = syncSec <= 1.25 * fastest;
    checks.push(close);
    why.push(`Seconds to ${tl}: sync ${ft(syncSec)}, fastest configuration ${ft(fastest)} (sync at ${f2(syncSec / fastest)}× the fastest; the rule asks ≤ 1.25×).`);
  }
  return {
    table: text,
    verdict: verdictOf(checks),
    rule: `supported if sync's mean epochs to ${tl} is the lowest of all configurations and its mean seconds to ${tl} is within 1.25× of the fastest configuration's (a run that never reached ${tl} counts as never)`,
    why,
    plots: ["accuracy-vs-epochs", "accuracy-vs-time", "staleness-histogram"],
  };
}

function modesStragglers(runs: readonly Run[]): Section {
  const { text, byMode } = modesTable(runs);
  const tl = targetLabel(runs);
  const sync = byMode.get("sync") ?? [];
  const others = [...byMode].filter(([m]) => m !== "sync");
  const why: string[] = [];
  const checks: boolean[] = [];
  if (!runs.some((r) => r.secondsToTarget !== null)) why.push(`No run reached ${tl}: nothing to compare.`);
  else if (sync.some((r) => r.ok) && others.length) {
    const syncSec = meanToTarget(sync, (r) => r.secondsToTarget);
    const sooner = others.map(([m, rs]) => ({ m, sec: meanToTarget(rs, (r) => r.secondsToTarget) }));
    checks.push(sooner.every((o) => o.sec < syncSec));
    why.push(`Seconds to ${tl}: sync ${ft(syncSec)}; ${sooner.map((o) => `${o.m} ${ft(o.sec)} (${o.sec < syncSec ? "sooner" : "not sooner"})`).join(", ")}.`);
    const asyncRuns = byMode.get("async") ?? [];
    const ep = [...byMode].map(([m, rs]) => ({ m, ep: meanToTarget(rs, (r) => r.epochsToTarget) }));
    const asyncEp = meanToTarget(asyncRuns, (r) => r.epochsToTarget);
    const asyncWorst = asyncRuns.some((r) => r.ok) && ep.every((e) => e.m === "async" || e.ep <= asyncEp);
    checks.push(asyncWorst);
    why.push(`Epochs to ${tl} (accuracy per epoch): ${ep.map((e) => `${e.m} ${ft(e.ep)}`).join(", ")} — async ${asyncWorst ? "needs the most" : "does not need the most"}.`);
  }
  return {
    table: text,
    verdict: verdictOf(checks),
    rule: `supported if every async and SSP configuration's mean seconds to ${tl} is below sync's, and async's mean epochs to ${tl} is the highest of all (a run that never reached ${tl} counts as never)`,
    why,
    plots: ["accuracy-vs-time", "accuracy-vs-epochs", "staleness-histogram"],
  };
}

function asyncScaling(runs: readonly Run[]): Section {
  const scales = [...new Set(runs.map((r) => r.row.values["async-lr-scale"] ?? "?"))];
  const workers = [...new Set(runs.map((r) => Number(r.row.values["workers"])))].sort((a, b) => a - b);
  const cell = (w: number, sc: string) => runs.filter((r) => Number(r.row.values["workers"]) === w && r.row.values["async-lr-scale"] === sc);
  const rows = workers.map((w) => [
    String(w),
    ...scales.map((sc) => {
      const rs = cell(w, sc);
      const div = rs.filter((r) => r.diverged).length;
      return `${pm(rs.filter((r) => r.ok).map((r) => r.accuracy), 2, 100)}${div ? ` (${div}/${rs.length} diverged)` : ""}`;
    }),
    pm(runs.filter((r) => Number(r.row.values["workers"]) === w && r.ok).map((r) => r.stalenessMean), 2),
  ]);
  const text = table(["workers", ...scales.map((s) => `final test accuracy (%), --async-lr-scale ${s}`), "staleness mean"], rows);
  const lo = workers[0]!;
  const hi = workers[workers.length - 1]!;
  const drop = (sc: string) => mean(cell(lo, sc).map(accuracyOrChance)) - mean(cell(hi, sc).map(accuracyOrChance));
  const why: string[] = [];
  const checks: boolean[] = [];
  if (scales.includes("none") && lo !== hi) {
    const dNone = drop("none");
    why.push(`Accuracy lost from ${lo} to ${hi} workers (percentage points; a diverged run counts as 10%): ${scales.map((s) => `${s} ${f2(100 * drop(s))}`).join(", ")}.`);
    checks.push(dNone > 0.01);
    for (const s of scales.filter((x) => x !== "none")) checks.push(dNone > drop(s));
  }
  return {
    table: text,
    verdict: verdictOf(checks),
    rule: `supported if, from ${lo} to ${hi} workers, the unscaled run (none) loses more than 1 point of final accuracy and more than each scaled rule loses`,
    why,
    plots: ["accuracy-vs-epochs", "loss-vs-epochs", "staleness-histogram"],
  };
}

function psVsAllreduce(runs: readonly Run[]): Section {
  const workers = [...new Set(runs.map((r) => Number(r.row.values["workers"])))].sort((a, b) => a - b);
  const cell = (w: number, c: string) => runs.filter((r) => Number(r.row.values["workers"]) === w && r.row.values["comm"] === c);
  const rows: string[][] = [];
  const why: string[] = [];
  const checks: boolean[] = [];
  for (const w of workers) {
    const ps = cell(w, "ps");
    const ar = cell(w, "allreduce");
    const sPs = mean(ps.map((r) => r.samplesPerSecond));
    const sAr = mean(ar.map((r) => r.samplesPerSecond));
    const hPs = mean(ps.map((r) => r.busiestBytesPerStep));
    const hAr = mean(ar.map((r) => r.busiestBytesPerStep));
    rows.push([
      String(w),
      pm(ps.map((r) => r.samplesPerSecond), 0),
      pm(ar.map((r) => r.samplesPerSecond), 0),
      f2(sAr / sPs),
      f2(hPs / 1e6),
      f2(hAr / 1e6),
      f2(mean(ps.map((r) => r.bytesPerStep)) / 1e6),
      f2(mean(ar.map((r) => r.bytesPerStep)) / 1e6),
      pm(ps.filter((r) => r.ok).map((r) => r.accuracy), 2, 100),
      pm(ar.filter((r) => r.ok).map((r) => r.accuracy), 2, 100),
    ]);
    if (w >= 2 && Number.isFinite(sPs) && Number.isFinite(sAr)) {
      checks.push(hAr < hPs, sAr > sPs);
      why.push(`${w} workers: the busiest allreduce process moves ${f2(hAr / 1e6)} MB per step against the server's ${f2(hPs / 1e6)} MB; allreduce runs at ${f2(sAr / sPs)}× the server path's samples/s.`);
    }
  }
  const head = ["workers", "samples/s, ps", "samples/s, allreduce", "allreduce / ps", "MB/step busiest, ps (server)", "MB/step busiest, allreduce (a worker)", "MB/step all workers, ps", "MB/step all workers, allreduce", "test accuracy (%), ps", "test accuracy (%), allreduce"];
  return {
    table: table(head, rows) + "\n\nMB per step: bytes sent and received in one global step (one step of every worker); busiest: the process that moves the most (the parameter server; in allreduce every worker moves the same); all workers: summed over the workers.",
    verdict: verdictOf(checks),
    rule: "supported if, for every worker count ≥ 2, the busiest allreduce process moves fewer bytes per step than the parameter server and allreduce gives more samples/s",
    why,
    plots: ["samples-per-second-vs-workers", "accuracy-vs-time"],
  };
}

function nonIid(runs: readonly Run[]): Section {
  const parts = [...new Set(runs.map((r) => r.row.values["partition"] ?? "?"))];
  const modes = [...new Set(runs.map(modeLabel))];
  const cell = (p: string, m: string) => runs.filter((r) => r.row.values["partition"] === p && modeLabel(r) === m);
  const acc = (p: string, m: string) => mean(cell(p, m).map(accuracyOrChance));
  const rows = modes.map((m) => [
    m,
    ...parts.map((p) => {
      const rs = cell(p, m);
      const div = rs.filter((r) => r.diverged).length;
      return `${pm(rs.filter((r) => r.ok).map((r) => r.accuracy), 2, 100)}${div ? ` (${div}/${rs.length} diverged)` : ""}`;
    }),
  ]);
  const text = table(["mode", ...parts.map((p) => `final test accuracy (%), ${p}`)], rows);
  const why: string[] = [];
  const checks: boolean[] = [];
  const skewed = parts.filter((p) => p !== "iid");
  if (parts.includes("iid") && modes.includes("sync")) {
    for (const p of skewed) {
      const drops = modes.map((m) => ({ m, d: acc("iid", m) - acc(p, m) }));
      const dSync = drops.find((x) => x.m === "sync")!.d;
      checks.push(dSync < 0.01);
      for (const x of drops) if (x.m !== "sync") checks.push(x.d >= dSync + 0.005);
      why.push(`${p}: accuracy lost against iid (points): ${drops.map((x) => `${x.m} ${f2(100 * x.d)}`).join(", ")}.`);
    }
  }
  return {
    table: text,
    verdict: verdictOf(checks),
    rule: "supported if, for each non-IID split, sync loses less than 1 point of final accuracy against iid and every other mode loses at least 0.5 points more than sync (smaller differences are within the spread between seeds here)",
    why,
    plots: ["accuracy-vs-epochs", "loss-vs-epochs"],
  };
}

export const ANALYSES: Record<string, (runs: readonly Run[]) => Section> = {
  "1-modes": modesNoStragglers,
  "2-stragglers": modesStragglers,
  "3-async-scaling": asyncScaling,
  "4-ps-vs-allreduce": psVsAllreduce,
  "5-non-iid": nonIid,
};

export interface Sitting {
  /** what else ran on the machine meanwhile, if anything (written by hand into sitting.json) */
  note?: string;
  started: string;
  minutes: number;
  loadBefore: number;
  loadAfter: number;
}

/** Where renderResults reads and writes. */
export interface ResultsPaths {
  /** experiments/ */
  experiments: string;
  /** the experiments' output folders (results/experiments/) */
  results: string;
  /** docs/ (RESULTS.md goes here, copies of reports and plots under results/experiments/) */
  docs: string;
}

/**
 * The text of docs/RESULTS.md for the experiments `names`; re-renders each finished experiment's
 * report and copies its results.csv, report.md and plots under docs/results/experiments/NAME/.
 * `line` gets one JSON object per experiment.
 */
export function renderResults(a: ResultsPaths, names: readonly string[], sitting: Sitting | null, line: (o: Record<string, unknown>) => void = () => undefined): string {
  const rel = (p: string) => relative(a.docs, p).split("\\").join("/");
  const out: string[] = [];
  out.push("# Results of the shipped experiments", "");
  out.push(
    "Each section below is one file in [experiments/](../experiments/): the claim it tests (from the literature), the command, a table, plots and a verdict. The verdict is computed from the runs by the rule printed beside it (`scripts/experiments.ts`), not written by hand. Everything here is regenerated by one command:",
    "",
    "```sh",
    "npm run experiments                    # runs every experiments/*.yaml into results/experiments/, then writes this file",
    "npm run experiments -- --render-only   # re-renders this file from results/experiments/",
    "```",
    "",
  );
  if (sitting) {
    out.push(
      `Sitting: started ${sitting.started}, ${sitting.minutes.toFixed(0)} minutes, on ${cpus().length} cores (${cpus()[0]?.model.trim() ?? "unknown CPU"}); 1-minute load average ${sitting.loadBefore.toFixed(2)} before and ${sitting.loadAfter.toFixed(2)} after. ` +
        "Wall-clock figures depend on what else the machine ran; compare rows within one table, not across sittings." +
        (sitting.note ? ` ${sitting.note}` : ""),
      "",
    );
  }
  out.push("| experiment | verdict |", "| --- | --- |");
  const sections: string[] = [];
  for (const name of names) {
    const file = join(a.experiments, `${name}.yaml`);
    const exp = readExperimentFile(file);
    const dir = join(a.results, name);
    const docDir = join(a.docs, "results", "experiments", name);
    let section: Section | null = null;
    if (existsSync(join(dir, "grid.json"))) {
      writeReport(dir);
      rmSync(docDir, { recursive: true, force: true });
      mkdirSync(docDir, { recursive: true });
      cpSync(join(dir, "results.csv"), join(docDir, "results.csv"));
      cpSync(join(dir, "report.md"), join(docDir, "report.md"));
      cpSync(join(dir, "plots"), join(docDir, "plots"), { recursive: true });
      const results = readResults(dir);
      const runs = results.rows.filter((r) => r.status !== "skipped").map(toRun);
      const analyse = ANALYSES[name];
      section = analyse
        ? analyse(runs)
        : { table: reportMarkdown(results.grid, results.rows).split("\n").filter((l) => l.startsWith("|")).join("\n"), verdict: "no rule", rule: "this experiment has no rule in src/experiment/results-doc.ts", why: [], plots: ["accuracy-vs-epochs", "accuracy-vs-time"] };
    }
    const title = exp.title || name;
    const anchor = `${name}`;
    out.push(`| [${title}](#${anchor}) | ${section ? `**${section.verdict}**` : "not run yet"} |`);
    const s: string[] = [];
    s.push(`<a id="${anchor}"></a>`, `## ${title}`, "");
    s.push(`**Claim.** ${exp.claim}`, "");
    if (exp.description) s.push(`**Setup.** ${exp.description}`, "");
    s.push("**Command.**", "", "```sh", `npx ps-train experiment experiments/${name}.yaml --out results/experiments/${name}`, "```", "");
    if (!section) {
      s.push("Not run yet in this sitting.", "");
    } else {
      s.push(section.table, "");
      s.push(`Full report (every cell, bytes, staleness, failures): [report.md](${rel(join(docDir, "report.md"))}), one row per run: [results.csv](${rel(join(docDir, "results.csv"))}).`, "");
      for (const p of section.plots) if (existsSync(join(docDir, "plots", `${p}.svg`))) s.push(`![${p}](${rel(join(docDir, "plots", `${p}.svg`))})`, "");
      s.push(`**Verdict: ${section.verdict}.** Rule: ${section.rule}.`, "");
      for (const w of section.why) s.push(`- ${w}`);
      s.push("");
    }
    sections.push(s.join("\n"));
    line({ bench: "experiments", experiment: name, verdict: section?.verdict ?? "not run" });
  }
  out.push("", ...sections);
  return out.join("\n").replace(/\n{3,}/g, "\n\n");
}
