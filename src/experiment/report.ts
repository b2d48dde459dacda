import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ErrorCode, PsError } from "../util/errors.js";
import { writePlots } from "./plots.js";

/** What `experiment` records about its grid (grid.json), so `report` can re-render it alone. */
export interface GridRecord {
  axes: { flag: string; values: string[] }[];
  seeds: number;
  cells: { id: string; values: Record<string, string>; seed: number; skipReason: string | null }[];
}

interface RunSummary {
  status: string;
  error?: string;
  testAccuracy?: number;
  testLoss?: number;
  trainSeconds?: number;
  samplesPerSecond?: number;
  timeToTargetSeconds?: number | null;
  targetAccuracy?: number | null;
  bytesSent?: number;
  bytesReceived?: number;
  steps?: number;
  epochsCompleted?: number;
  staleness?: { mean: number; p99: number; max: number };
}

export interface ResultRow {
  id: string;
  values: Record<string, string>;
  seed: number;
  status: "ok" | "failed" | "skipped" | "missing";
  summary: RunSummary | null;
  error: string;
}

export function readResults(outDir: string): { grid: GridRecord; rows: ResultRow[] } {
  const gridFile = join(outDir, "grid.json");
  if (!existsSync(gridFile)) throw new PsError(ErrorCode.BAD_OPTION, `${outDir}: no grid.json here (not an experiment folder)`);
  const grid = JSON.parse(readFileSync(gridFile, "utf8")) as GridRecord;
  const rows = grid.cells.map((c): ResultRow => {
    if (c.skipReason) return { id: c.id, values: c.values, seed: c.seed, status: "skipped", summary: null, error: c.skipReason };
    const f = join(outDir, "runs", c.id, "summary.json");
    if (!existsSync(f)) return { id: c.id, values: c.values, seed: c.seed, status: "missing", summary: null, error: "not run yet" };
    const s = JSON.parse(readFileSync(f, "utf8")) as RunSummary;
    return { id: c.id, values: c.values, seed: c.seed, status: s.status === "ok" ? "ok" : "failed", summary: s, error: s.error ?? "" };
  });
  return { grid, rows };
}

function csvField(v: unknown): string {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

const COLUMNS: [string, (s: RunSummary) => unknown][] = [
  ["test_accuracy", (s) => s.testAccuracy],
  ["test_loss", (s) => s.testLoss],
  ["train_seconds", (s) => s.trainSeconds],
  ["time_to_target_seconds", (s) => s.timeToTargetSeconds],
  ["samples_per_second", (s) => s.samplesPerSecond],
  ["bytes_on_wire", (s) => (s.bytesSent ?? 0) + (s.bytesReceived ?? 0)],
  ["steps", (s) => s.steps],
  ["epochs", (s) => s.epochsCompleted],
  ["staleness_mean", (s) => s.staleness?.mean],
  ["staleness_p99", (s) => s.staleness?.p99],
];

/** results.csv: one row per run (failed and skipped ones too, with the reason). */
export function resultsCsv(grid: GridRecord, rows: readonly ResultRow[]): string {
  const head = [...grid.axes.map((a) => a.flag), "seed", "status", ...COLUMNS.map(([n]) => n), "error", "run"];
  const lines = [head.join(",")];
  for (const r of rows) {
    const metrics = COLUMNS.map(([, f]) => (r.summary && r.status === "ok" ? f(r.summary) : ""));
    lines.push([...grid.axes.map((a) => r.values[a.flag]), r.seed, r.status, ...metrics, r.error, `runs/${r.id}`].map(csvField).join(","));
  }
  return lines.join("\n") + "\n";
}

/** Mean and sample standard deviation. */
export function meanStd(xs: readonly number[]): { mean: number; std: number } {
  const n = xs.length;
  const mean = xs.reduce((a, x) => a + x, 0) / n;
  const std = n > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, std };
}

function fmt(xs: number[], digits: number, scale = 1): string {
  if (xs.length === 0) return "—";
  const { mean, std } = meanStd(xs.map((x) => x * scale));
  return xs.length > 1 ? `${mean.toFixed(digits)} ± ${std.toFixed(digits)}` : mean.toFixed(digits);
}

/** report.md: per combination of axis values, mean ± std over the seeds that finished. */
export function reportMarkdown(grid: GridRecord, rows: readonly ResultRow[]): string {
  const groups = new Map<string, ResultRow[]>();
  for (const r of rows) {
    const key = JSON.stringify(grid.axes.map((a) => r.values[a.flag]));
    let g = groups.get(key);
    if (!g) groups.set(key, (g = []));
    g.push(r);
  }
  const ok = (g: ResultRow[]) => g.filter((r) => r.status === "ok" && r.summary).map((r) => r.summary!);
  const out: string[] = [];
  out.push("# Experiment report", "");
  out.push(`Axes: ${grid.axes.map((a) => `${a.flag} = ${a.values.join(", ")}`).join("; ") || "none"}; ${grid.seeds} seed${grid.seeds > 1 ? "s" : ""} each.`);
  const counts = { ok: 0, failed: 0, skipped: 0, missing: 0 };
  for (const r of rows) counts[r.status]++;
  out.push(`Runs: ${counts.ok} finished, ${counts.failed} failed, ${counts.skipped} skipped (not a valid combination), ${counts.missing} not run yet.`);
  out.push("Figures are mean ± sample standard deviation over the finished seeds; time to target over the seeds that reached it.", "");
  const head = [...grid.axes.map((a) => a.flag), "runs", "time to target (s)", "reached", "test accuracy (%)", "samples/s", "MB on the wire", "staleness mean", "staleness p99"];
  out.push(`| ${head.join(" | ")} |`, `| ${head.map(() => "---").join(" | ")} |`);
  for (const g of groups.values()) {
    const s = ok(g);
    const reached = s.filter((x) => typeof x.timeToTargetSeconds === "number").map((x) => x.timeToTargetSeconds!);
    const target = s.some((x) => typeof x.targetAccuracy === "number");
    const cells = [
      ...grid.axes.map((a) => g[0]!.values[a.flag]!),
      `${s.length}/${g.filter((r) => r.status !== "skipped").length}`,
      target ? fmt(reached, 2) : "no target",
      target ? `${reached.length}/${s.length}` : "—",
      fmt(s.map((x) => x.testAccuracy ?? NaN), 2, 100),
      fmt(s.map((x) => x.samplesPerSecond ?? NaN), 0),
      fmt(s.map((x) => ((x.bytesSent ?? 0) + (x.bytesReceived ?? 0)) / 1e6), 1),
      fmt(s.map((x) => x.staleness?.mean ?? NaN), 2),
      fmt(s.map((x) => x.staleness?.p99 ?? NaN), 1),
    ];
    if (g.every((r) => r.status === "skipped")) cells.splice(grid.axes.length + 1, cells.length, `skipped: ${g[0]!.error}`, "", "", "", "", "", "");
    out.push(`| ${cells.join(" | ")} |`);
  }
  const failed = rows.filter((r) => r.status === "failed");
  if (failed.length) {
    out.push("", "## Failed runs", "");
    for (const r of failed) out.push(`- \`runs/${r.id}\`: ${r.error}`);
  }
  return out.join("\n") + "\n";
}

/** Write results.csv and report.md for an experiment folder; returns the number of finished runs. */
export function writeReport(outDir: string): number {
  const { grid, rows } = readResults(outDir);
  writeFileSync(join(outDir, "results.csv"), resultsCsv(grid, rows));
  const plots = writePlots(outDir, grid, rows);
  const images = plots.map((p) => `![${p}](plots/${p}.svg)`).join("\n\n");
  writeFileSync(join(outDir, "report.md"), `${reportMarkdown(grid, rows)}\n## Plots\n\nLines: mean over the finished seeds; bands: ± one standard deviation. PNG copies beside each SVG in plots/.\n\n${images}\n`);
  return rows.filter((r) => r.status === "ok").length;
}
