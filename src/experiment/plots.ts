import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chartSvg, type ChartOptions, type Point, type Series, svgToPng } from "./plot.js";
import { type GridRecord, meanStd, type ResultRow } from "./report.js";

interface Curve {
  x: number[];
  y: number[];
}

interface RunMetrics {
  acc: { t: Curve; epoch: Curve };
  loss: { t: Curve; epoch: Curve };
  staleness: number[];
}

/** A run's curves from its metrics.jsonl: test accuracy at each evaluation, training loss in 40 epoch bins. */
function runMetrics(file: string): RunMetrics | null {
  if (!existsSync(file)) return null;
  const acc = { t: { x: [] as number[], y: [] as number[] }, epoch: { x: [] as number[], y: [] as number[] } };
  const steps: { t: number; epoch: number; loss: number }[] = [];
  const staleness: number[] = [];
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (!line) continue;
    let r: Record<string, unknown>;
    try {
      r = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (r["type"] === "eval") {
      acc.t.x.push(Number(r["t"]));
      acc.t.y.push(Number(r["testAccuracy"]) * 100);
      acc.epoch.x.push(Number(r["epoch"]));
      acc.epoch.y.push(Number(r["testAccuracy"]) * 100);
    } else if (r["type"] === "step") {
      steps.push({ t: Number(r["t"]), epoch: Number(r["epoch"]), loss: Number(r["loss"]) });
      staleness.push(Number(r["staleness"]));
    }
  }
  const bins = 40;
  const loss = { t: { x: [] as number[], y: [] as number[] }, epoch: { x: [] as number[], y: [] as number[] } };
  if (steps.length > 0) {
    steps.sort((a, b) => a.epoch - b.epoch);
    const per = Math.max(1, Math.ceil(steps.length / bins));
    for (let i = 0; i < steps.length; i += per) {
      const b = steps.slice(i, i + per).filter((s) => Number.isFinite(s.loss));
      if (b.length === 0) continue;
      const m = (f: (s: (typeof b)[number]) => number) => b.reduce((a, s) => a + f(s), 0) / b.length;
      loss.epoch.x.push(m((s) => s.epoch));
      loss.t.x.push(m((s) => s.t));
      const l = m((s) => s.loss);
      loss.epoch.y.push(l);
      loss.t.y.push(l);
    }
  }
  return { acc, loss, staleness };
}

/** y of a curve at x by linear interpolation, or undefined outside its range. */
function at(c: Curve, x: number): number | undefined {
  const n = c.x.length;
  if (n === 0 || x < c.x[0]! || x > c.x[n - 1]!) return undefined;
  let i = 0;
  while (i < n - 1 && c.x[i + 1]! < x) i++;
  if (i === n - 1 || c.x[i + 1] === c.x[i]) return c.y[i];
  const f = (x - c.x[i]!) / (c.x[i + 1]! - c.x[i]!);
  return c.y[i]! + f * (c.y[i + 1]! - c.y[i]!);
}

/** Mean ± std over the runs that cover each x, on 60 points from the smallest to the largest x. */
export function band(curves: Curve[]): Point[] {
  const all = curves.flatMap((c) => c.x);
  if (all.length === 0) return [];
  const lo = Math.min(...all);
  const hi = Math.max(...all);
  const n = hi > lo ? 60 : 1;
  const out: Point[] = [];
  for (let k = 0; k < n; k++) {
    const x = n === 1 ? lo : lo + ((hi - lo) * k) / (n - 1);
    const ys = curves.map((c) => at(c, x)).filter((v): v is number => v !== undefined && Number.isFinite(v));
    if (ys.length === 0) continue;
    const { mean, std } = meanStd(ys);
    out.push({ x, y: mean, lo: mean - std, hi: mean + std });
  }
  return out;
}

function write(dir: string, name: string, o: ChartOptions): string {
  const svg = chartSvg(o);
  writeFileSync(join(dir, `${name}.svg`), svg);
  writeFileSync(join(dir, `${name}.png`), svgToPng(svg));
  return name;
}

/**
 * plots/*.svg and *.png for an experiment folder: test accuracy and training loss against
 * training time and epochs (a line per combination, a band of ± one std over seeds),
 * samples/s against workers (when workers is an axis), and the staleness of pushes per
 * combination. Returns the plot names.
 */
export function writePlots(outDir: string, grid: GridRecord, rows: readonly ResultRow[]): string[] {
  const dir = join(outDir, "plots");
  mkdirSync(dir, { recursive: true });
  const groups = new Map<string, { label: string; rows: ResultRow[] }>();
  for (const r of rows) {
    if (r.status !== "ok") continue;
    const label = grid.axes.map((a) => `${a.flag}=${r.values[a.flag]}`).join(" ") || "all runs";
    let g = groups.get(label);
    if (!g) groups.set(label, (g = { label, rows: [] }));
    g.rows.push(r);
  }
  const metrics = new Map<string, RunMetrics[]>();
  for (const g of groups.values()) metrics.set(g.label, g.rows.map((r) => runMetrics(join(outDir, "runs", r.id, "metrics.jsonl"))).filter((m): m is RunMetrics => m !== null));
  const series = (f: (m: RunMetrics) => Curve): Series[] => [...metrics].map(([label, ms]) => ({ label, points: band(ms.map(f)) })).filter((s) => s.points.length > 0);
  const names: string[] = [];
  names.push(write(dir, "accuracy-vs-time", { title: "Test accuracy against training time", xLabel: "training seconds (evaluation excluded)", yLabel: "test accuracy (%)", series: series((m) => m.acc.t) }));
  names.push(write(dir, "accuracy-vs-epochs", { title: "Test accuracy against epochs", xLabel: "epochs", yLabel: "test accuracy (%)", series: series((m) => m.acc.epoch) }));
  names.push(write(dir, "loss-vs-time", { title: "Training loss against time", xLabel: "seconds since start (evaluation pauses included)", yLabel: "training loss (mean over steps)", series: series((m) => m.loss.t) }));
  names.push(write(dir, "loss-vs-epochs", { title: "Training loss against epochs", xLabel: "epochs", yLabel: "training loss (mean over steps)", series: series((m) => m.loss.epoch) }));
  const wAxis = grid.axes.find((a) => a.flag === "workers");
  if (wAxis) {
    const other = grid.axes.filter((a) => a !== wAxis);
    const lines = new Map<string, Map<number, number[]>>();
    for (const r of rows) {
      if (r.status !== "ok" || !r.summary?.samplesPerSecond) continue;
      const label = other.map((a) => `${a.flag}=${r.values[a.flag]}`).join(" ") || "all runs";
      const byW = lines.get(label) ?? new Map<number, number[]>();
      lines.set(label, byW);
      const w = Number(r.values["workers"]);
      byW.set(w, [...(byW.get(w) ?? []), r.summary.samplesPerSecond]);
    }
    const s: Series[] = [...lines].map(([label, byW]) => ({
      label,
      points: [...byW].map(([w, v]) => {
        const { mean, std } = meanStd(v);
        return { x: w, y: mean, lo: mean - std, hi: mean + std };
      }),
    }));
    names.push(write(dir, "samples-per-second-vs-workers", { title: "Throughput against workers", xLabel: "workers", yLabel: "samples/s", series: s }));
  }
  const stale: Series[] = [...metrics].map(([label, ms]) => {
    const all = ms.flatMap((m) => m.staleness).filter(Number.isFinite);
    const counts = new Map<number, number>();
    for (const v of all) counts.set(Math.min(v, 30), (counts.get(Math.min(v, 30)) ?? 0) + 1);
    return { label, points: [...counts].map(([x, c]) => ({ x, y: (100 * c) / Math.max(1, all.length) })) };
  });
  names.push(write(dir, "staleness-histogram", { title: "Staleness of pushes (30 = 30 or more)", xLabel: "staleness (server steps)", yLabel: "% of pushes", series: stale, bars: true }));
  return names;
}
