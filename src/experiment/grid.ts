import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { TrainConfig } from "../config/train-config.js";
import { resolveTrainConfig, TRAIN_OPTIONS, type TrainOptionKey } from "../cli/options.js";
import { badOption, PsError } from "../util/errors.js";

/** One grid axis: a training option and the values it takes (as the user wrote them). */
export interface Axis {
  key: TrainOptionKey;
  flag: string;
  values: string[];
}

/** One run of the grid: a combination of axis values and a seed. */
export interface Cell {
  /** axis flag -> value, in axis order (without the seed) */
  values: Record<string, string>;
  seed: number;
  /** folder name under runs/, and the id in results.csv */
  id: string;
  /** the resolved config, or why this combination is not a valid run */
  config: TrainConfig | null;
  skipReason: string | null;
}

const OPTION_BY_NAME = new Map<string, (typeof TRAIN_OPTIONS)[number]>(TRAIN_OPTIONS.flatMap((o) => [[o.flag, o] as const, [o.key, o] as const]));

/** `mode=sync,async` -> an axis; the option name may be a flag (kebab) or camelCase. */
export function parseAxis(spec: string, where = "--grid"): Axis {
  const eq = spec.indexOf("=");
  if (eq <= 0) throw badOption(`${where}: "${spec}" is not NAME=VALUE[,VALUE...]`);
  const name = spec.slice(0, eq).trim().replace(/^--/, "");
  const info = OPTION_BY_NAME.get(name);
  if (!info) throw badOption(`${where}: "${name}" is not a training option (see ps-train --help)`);
  if (info.key === "out" || info.key === "seed") throw badOption(`${where}: ${info.flag} cannot be a grid axis (${info.key === "seed" ? "use --seeds" : "each run gets its own folder"})`);
  const values = spec
    .slice(eq + 1)
    .split(",")
    .map((v) => v.trim())
    .filter((v) => v !== "");
  if (values.length === 0) throw badOption(`${where}: ${info.flag} has no values`);
  return { key: info.key, flag: info.flag, values };
}

/** "none" clears --slow (and is --target-accuracy's own word for no target). */
function rawValue(axis: Axis, v: string): string {
  return axis.key === "slow" && v === "none" ? "" : v;
}

function cellId(values: Record<string, string>, seed: number): string {
  const parts = Object.entries(values).map(([k, v]) => `${k}-${v}`);
  parts.push(`seed-${seed}`);
  return parts.join("_").replace(/[^A-Za-z0-9._-]+/g, "+");
}

/**
 * Every combination of the axes, once per seed (base seed, base seed + 1, ...). Each value is
 * checked on its own first (a typo fails the whole grid: one line, exit 2, nothing run); a
 * combination that is not a valid run (e.g. --comm allreduce with --mode async) becomes a
 * skipped cell with the reason. Combinations that resolve to the same config (e.g. --staleness
 * with a mode other than ssp) are run once.
 */
export function expandGrid(base: Readonly<Record<string, unknown>>, axes: readonly Axis[], seeds: number, env: NodeJS.ProcessEnv = process.env): Cell[] {
  if (!Number.isInteger(seeds) || seeds < 1) throw badOption(`--seeds must be an integer >= 1 (got ${seeds})`);
  const seen = new Set<string>();
  for (const a of axes) {
    if (seen.has(a.key)) throw badOption(`--grid: ${a.flag} is given twice`);
    seen.add(a.key);
    for (const v of a.values) resolveTrainConfig({ ...base, [a.flag]: rawValue(a, v) }, env);
  }
  const baseSeed = resolveTrainConfig(base, env).seed;
  let combos: Record<string, string>[] = [{}];
  for (const a of axes) combos = combos.flatMap((c) => a.values.map((v) => ({ ...c, [a.flag]: v })));
  const cells: Cell[] = [];
  const configs = new Set<string>();
  for (const values of combos) {
    for (let s = 0; s < seeds; s++) {
      const seed = baseSeed + s;
      const argv: Record<string, unknown> = { ...base, seed: String(seed) };
      for (const a of axes) argv[a.flag] = rawValue(a, values[a.flag]!);
      const id = cellId(values, seed);
      let config: TrainConfig | null = null;
      let skipReason: string | null = null;
      try {
        config = resolveTrainConfig(argv, env);
        if (config.mode !== "ssp") config.staleness = 0; // staleness means nothing outside SSP
        const key = JSON.stringify(config);
        if (configs.has(key)) continue;
        configs.add(key);
      } catch (err) {
        if (!(err instanceof PsError)) throw err;
        skipReason = err.message;
        // One skipped cell per invalid combination, whatever --staleness says outside SSP.
        const key = `skip:${skipReason}:${JSON.stringify(Object.entries(values).filter(([k]) => k !== "staleness" || values["mode"] === "ssp"))}:${seed}`;
        if (configs.has(key)) continue;
        configs.add(key);
      }
      // The kept cell of a set of same runs shows no staleness value when staleness means nothing.
      const shown = config && config.mode !== "ssp" && "staleness" in values ? { ...values, staleness: "n/a" } : values;
      cells.push({ values: shown, seed, id, config, skipReason });
    }
  }
  return cells;
}

/** A finished cell (summary.json with status ok) is not run again. */
export function cellFinished(dir: string): boolean {
  const f = join(dir, "summary.json");
  if (!existsSync(f)) return false;
  try {
    return (JSON.parse(readFileSync(f, "utf8")) as { status?: string }).status === "ok";
  } catch {
    return false;
  }
}

/** An unfinished cell's folder (a failed or interrupted run) is removed before it runs again. */
export function clearCell(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
