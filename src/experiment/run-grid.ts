import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type Progress, prepareRun, runLocal } from "../cluster/train-run.js";
import { JobClient } from "../cluster/redis/job-client.js";
import { errorLine } from "../util/errors.js";
import { type Axis, type Cell, cellFinished, clearCell } from "./grid.js";
import { type GridRecord, writeReport } from "./report.js";

export interface GridHooks {
  /** one line per cell as it starts and ends (the progress over cells, with an ETA) */
  line?: (text: string) => void;
  /** local grids: the progress over cells, often (for a bar on a terminal) */
  progress?: (p: GridProgress) => void;
}

/** Where a local grid stands: cells done, the running cell's own progress, the time left. */
export interface GridProgress {
  /** cells finished in this invocation, and to run in it */
  done: number;
  total: number;
  /** the running cell ("mode=sync seed=1") and how far it is (0..1) */
  label: string;
  fraction: number;
  /** seconds left for the grid, from the time per cell so far (NaN before any estimate) */
  etaSeconds: number;
}

/** Run the cells as jobs of a ps-train cluster (Redis + BullMQ) instead of one after another here. */
export interface ClusterTarget {
  redis: string;
  prefix: string;
  connectTimeoutMs: number;
  /** how long to follow one job before giving up on it (it keeps going in the cluster) */
  waitTimeoutMs: number;
  maxRetries: number;
}

export function duration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s` : `${s.toFixed(0)}s`;
}

/**
 * Run every cell one after another into OUT/runs/<cell id>/ (a normal run directory each). A
 * cell whose summary.json says ok is not run again, so an interrupted grid resumes where it
 * stopped; a cell that fails is recorded (its summary.json says why) and the grid goes on.
 * OUT/grid.json records the grid; results.csv and report.md are written at the end.
 * With a cluster target, every pending cell is submitted as a job at once (the scheduler runs as
 * many side by side as its agents allow), followed to its end, and its run directory fetched.
 */
export async function runGrid(
  outDir: string,
  axes: readonly Axis[],
  seeds: number,
  cells: readonly Cell[],
  hooks: GridHooks = {},
  cluster: ClusterTarget | null = null,
): Promise<{ ok: number; failed: number; skipped: number }> {
  const out = resolve(outDir);
  mkdirSync(join(out, "runs"), { recursive: true });
  const record: GridRecord = {
    axes: axes.map((a) => ({ flag: a.flag, values: a.values })),
    seeds,
    cells: cells.map((c) => ({ id: c.id, values: c.values, seed: c.seed, skipReason: c.skipReason })),
  };
  writeFileSync(join(out, "grid.json"), JSON.stringify(record, null, 2) + "\n");
  const line = hooks.line ?? (() => undefined);
  const todo = cells.filter((c) => c.config && !cellFinished(join(out, "runs", c.id)));
  const counts = { ok: 0, failed: 0, skipped: cells.filter((c) => !c.config).length };
  const done = cells.length - todo.length - counts.skipped;
  if (done > 0) line(`${done} cell${done > 1 ? "s" : ""} finished earlier, not run again`);
  counts.ok += done;
  if (cluster) {
    await runOnCluster(out, todo, cluster, counts, line);
    writeReport(out);
    return counts;
  }
  const t0 = performance.now();
  for (const [i, c] of todo.entries()) {
    const dir = join(out, "runs", c.id);
    const label = [...Object.entries(c.values).map(([k, v]) => `${k}=${v}`), `seed=${c.seed}`].join(" ");
    const elapsed = (performance.now() - t0) / 1000;
    const eta = i > 0 ? (elapsed / i) * (todo.length - i) : NaN;
    line(`[${i + 1}/${todo.length}] ${label}${i > 0 ? `  (ETA ${duration(eta)})` : ""}`);
    clearCell(dir);
    const onProgress = (p: Progress) => {
      const fraction = p.totalSteps > 0 ? Math.min(1, p.globalStep / p.totalSteps) : 0;
      const spent = (performance.now() - t0) / 1000;
      const cells = i + fraction;
      hooks.progress?.({ done: i, total: todo.length, label, fraction, etaSeconds: cells > 0.05 ? (spent / cells) * (todo.length - cells) : NaN });
    };
    try {
      const s = await runLocal(await prepareRun({ ...c.config!, out: dir, progress: "off" }), hooks.progress ? { onProgress } : {});
      counts.ok++;
      line(`    test accuracy ${(s.testAccuracy * 100).toFixed(2)}%, ${s.trainSeconds.toFixed(1)} s${s.timeToTargetSeconds !== null ? `, target at ${s.timeToTargetSeconds.toFixed(1)} s` : ""}`);
    } catch (err) {
      counts.failed++;
      const msg = errorLine(err).replace(/^ps-train: /, "");
      // prepareRun fails before the run directory exists: record the failure there ourselves.
      failCell(dir, msg);
      line(`    failed: ${msg}`);
    }
  }
  writeReport(out);
  return counts;
}

function failCell(dir: string, msg: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "summary.json"), JSON.stringify({ status: "failed", error: msg }, null, 2) + "\n");
}

async function runOnCluster(out: string, todo: readonly Cell[], target: ClusterTarget, counts: { ok: number; failed: number }, line: (t: string) => void): Promise<void> {
  const client = await JobClient.connect(target.redis, target.prefix, target.connectTimeoutMs);
  try {
    const jobs: { cell: Cell; id: string }[] = [];
    for (const c of todo) {
      const id = await client.submit({ ...c.config!, out: "", transport: "tcp", progress: "off" }, { name: `experiment ${c.id}`, maxRetries: target.maxRetries });
      jobs.push({ cell: c, id });
    }
    line(`submitted ${jobs.length} job${jobs.length === 1 ? "" : "s"} to ${target.prefix} (ps-train jobs --redis ... shows them)`);
    let n = 0;
    for (const { cell, id } of jobs) {
      const dir = join(out, "runs", cell.id);
      clearCell(dir);
      n++;
      try {
        const rec = await client.follow(id, target.waitTimeoutMs, () => undefined);
        if (rec.state === "succeeded") {
          await client.download(rec, dir);
          if (!cellFinished(dir)) throw new Error(`job ${id} succeeded but its run directory has no ok summary.json`);
          counts.ok++;
          line(`[${n}/${jobs.length}] ${cell.id}: job ${id} succeeded`);
        } else {
          counts.failed++;
          failCell(dir, `job ${id} ${rec.state}: ${rec.error || "no reason given"}`);
          line(`[${n}/${jobs.length}] ${cell.id}: job ${id} ${rec.state}: ${rec.error}`);
        }
      } catch (err) {
        counts.failed++;
        const msg = errorLine(err).replace(/^ps-train: /, "");
        failCell(dir, msg);
        line(`[${n}/${jobs.length}] ${cell.id}: ${msg}`);
      }
    }
  } finally {
    await client.close();
  }
}
