/**
 * `ps-train experiment [FILE] --grid NAME=V1,V2 ... --seeds N --out DIR` runs a grid of training
 * runs; `ps-train report DIR` re-renders results.csv and report.md from the finished runs.
 */
import { existsSync, readFileSync } from "node:fs";
import { extname } from "node:path";
import { load } from "js-yaml";
import type { Argv } from "yargs";
import { type Axis, expandGrid, parseAxis } from "../experiment/grid.js";
import { writeReport } from "../experiment/report.js";
import { type ClusterTarget, type GridProgress, runGrid } from "../experiment/run-grid.js";
import { GridProgressBar } from "./progress-bar.js";
import { checkRedisUrl } from "../cluster/redis/connection.js";
import { badOption, PsError } from "../util/errors.js";
import { CURVE_ROLES } from "../transport/curve-keys.js";
import { applyCurveKeys, curveKeysOption } from "./curve-option.js";
import { TRAIN_OPTIONS, trainOptions } from "./options.js";

const TRAIN_NAMES = new Set<string>(TRAIN_OPTIONS.flatMap((o) => [o.flag, o.key]));
const OPTION_FLAG = new Map<string, string>(TRAIN_OPTIONS.flatMap((o) => [[o.flag, o.flag] as const, [o.key, o.flag] as const]));

/** Keys of an experiment file: the runs (base, grid, seeds) and, for docs/RESULTS.md, what it tests. */
const FILE_KEYS = ["base", "grid", "seeds", "title", "description", "claim"];

/** An experiment file: `base:` training options, `grid:` option -> list of values, `seeds:`. */
export interface ExperimentFile {
  base: Record<string, unknown>;
  axes: Axis[];
  seeds: number | undefined;
  /** the line of each option the file sets (flag name -> 1-based line), for error messages */
  lines: Map<string, number>;
  title: string;
  description: string;
  claim: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** 1-based line of `key:` in the file, looked for from the line of the top-level `section:` on. */
function lineOf(lines: readonly string[], section: string, key: string): number | null {
  const esc = (x: string) => x.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const from = Math.max(0, lines.findIndex((l) => new RegExp(`^${esc(section)}\\s*:`).test(l)));
  const re = new RegExp(`(^|[\\s{,])["']?${esc(key)}["']?\\s*:`);
  for (let i = from; i < lines.length; i++) if (re.test(lines[i]!.replace(/#.*$/, ""))) return i + 1;
  return null;
}

export function readExperimentFile(file: string): ExperimentFile {
  if (!existsSync(file)) throw badOption(`experiment file ${JSON.stringify(file)}: no such file`);
  if (![".yaml", ".yml", ".json"].includes(extname(file).toLowerCase())) throw badOption(`experiment file ${JSON.stringify(file)}: must be .yaml, .yml or .json`);
  let doc: unknown;
  try {
    doc = load(readFileSync(file, "utf8"));
  } catch (err) {
    throw badOption(`experiment file ${JSON.stringify(file)}: cannot parse: ${(err as Error).message.split("\n")[0]}`);
  }
  if (!isRecord(doc)) throw badOption(`experiment file ${JSON.stringify(file)}: expected a mapping with base, grid and seeds`);
  for (const k of Object.keys(doc)) if (!FILE_KEYS.includes(k)) throw badOption(`experiment file ${JSON.stringify(file)}: unknown key "${k}" (${FILE_KEYS.join(", ")})`);
  for (const k of ["title", "description", "claim"]) if (doc[k] !== undefined && typeof doc[k] !== "string") throw badOption(`experiment file ${JSON.stringify(file)}: ${k} must be text`);
  const base = doc["base"] ?? {};
  if (!isRecord(base)) throw badOption(`experiment file ${JSON.stringify(file)}: base must be a mapping of training options`);
  const text = readFileSync(file, "utf8").split(/\r?\n/);
  const at = (section: string, k: string) => {
    const n = lineOf(text, section, k);
    return n !== null ? `${file} line ${n}` : `${file}: ${section}`;
  };
  for (const k of Object.keys(base)) if (!TRAIN_NAMES.has(k)) throw badOption(`${at("base", k)}: "${k}" is not a training option (see ps-train --help)`);
  const grid = doc["grid"] ?? {};
  if (!isRecord(grid)) throw badOption(`experiment file ${JSON.stringify(file)}: grid must map option names to lists of values`);
  const axes = Object.entries(grid).map(([k, v]) => parseAxis(`${k}=${(Array.isArray(v) ? v : [v]).map((x) => (x === null ? "none" : String(x))).join(",")}`, at("grid", k)));
  const lines = new Map<string, number>();
  for (const [section, keys] of [["base", Object.keys(base)], ["grid", Object.keys(grid)]] as const) {
    for (const k of keys) {
      const n = lineOf(text, section, k);
      const flag = OPTION_FLAG.get(k);
      if (n !== null && flag) lines.set(flag, n);
    }
  }
  const seeds = doc["seeds"];
  if (seeds !== undefined && !(Number.isInteger(seeds) && (seeds as number) >= 1)) throw badOption(`experiment file ${JSON.stringify(file)}: seeds must be an integer >= 1`);
  const fileBase: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(base)) fileBase[k] = v === null ? "none" : String(v);
  const prose = (k: string) => (typeof doc[k] === "string" ? doc[k].trim() : "");
  return { base: fileBase, axes, seeds: seeds as number | undefined, lines, title: prose("title"), description: prose("description"), claim: prose("claim") };
}

/** A bad value of an option the experiment file sets gets the file's line in front of its message. */
function withFileLine<T>(file: string, lines: ReadonlyMap<string, number>, f: () => T): T {
  try {
    return f();
  } catch (err) {
    const flag = err instanceof PsError ? /--([a-z0-9-]+)/.exec(err.message)?.[1] : undefined;
    const n = flag !== undefined ? lines.get(flag) : undefined;
    if (err instanceof PsError && n !== undefined) throw new PsError(err.code, `${file} line ${n}: ${err.message}`);
    throw err;
  }
}

export function addExperimentCommands<T>(y: Argv<T>): Argv<T> {
  return y
    .command(
      "experiment [file]",
      "Run a grid of training runs (every combination of the --grid values, --seeds times) into --out, with results.csv and report.md",
      (c) =>
        curveKeysOption(trainOptions(c))
          .positional("file", { type: "string", describe: "An experiment file (.yaml/.json) with base:, grid: and seeds:" })
          .option("grid", { type: "string", array: true, describe: "An axis NAME=V1,V2,... (any training option; repeat for more axes)" })
          .option("seeds", { type: "string", requiresArg: true, describe: "Runs per combination, with seeds --seed, --seed+1, ...", defaultDescription: "1" })
          .option("redis", { type: "string", requiresArg: true, describe: "Run the cells as jobs of the ps-train cluster at this Redis URL (side by side as agents allow)" })
          .option("prefix", { type: "string", requiresArg: true, describe: "With --redis: the cluster's key prefix", defaultDescription: "ps-train" })
          .option("max-retries", { type: "string", requiresArg: true, describe: "With --redis: retries of a job whose agent is lost", defaultDescription: "2" }),
      async (argv) => {
        const a = argv as Record<string, unknown>;
        const out = typeof a["out"] === "string" ? a["out"] : "";
        if (!out) throw badOption("experiment: --out DIR is required (the experiment's folder; an existing one is resumed)");
        const file = typeof a["file"] === "string" ? readExperimentFile(a["file"]) : { base: {}, axes: [], seeds: undefined, lines: new Map<string, number>(), title: "", description: "", claim: "" };
        const flagAxes = ((a["grid"] as string[] | undefined) ?? []).map((s) => parseAxis(s));
        const axes = [...file.axes.filter((fa) => !flagAxes.some((f) => f.key === fa.key)), ...flagAxes];
        const seedsRaw = a["seeds"] ?? file.seeds ?? 1;
        const seeds = Number(seedsRaw);
        if (!Number.isInteger(seeds) || seeds < 1) throw badOption(`--seeds must be an integer >= 1 (got ${JSON.stringify(seedsRaw)})`);
        // Flags and PS_TRAIN_* (through resolveTrainConfig) over the file's base; --out is the grid's.
        const flags: Record<string, unknown> = {};
        for (const o of TRAIN_OPTIONS) {
          const v = a[o.flag] ?? a[o.key];
          if (v !== undefined && o.key !== "out") flags[o.flag] = Array.isArray(v) ? v[v.length - 1] : v;
        }
        const base = { ...file.base, ...flags, ...(a["config"] !== undefined ? { config: a["config"] } : {}) };
        const cells = withFileLine(typeof a["file"] === "string" ? a["file"] : "", file.lines, () => expandGrid(base, axes, seeds));
        if (a["redis"] !== undefined && a["curve-keys"] !== undefined) throw badOption("--curve-keys: cluster jobs use the agents' keys (ps-train agent --curve-keys DIR); leave it out with --redis");
        // Local runs: every run of the grid with CURVE (the runs' processes inherit the folder's path).
        if (a["redis"] === undefined) applyCurveKeys(a, process.env, CURVE_ROLES);
        process.stderr.write(`experiment: ${cells.length} runs (${axes.map((x) => `${x.flag} × ${x.values.length}`).join(", ") || "no axes"}, ${seeds} seed${seeds > 1 ? "s" : ""}) into ${out}\n`);
        let cluster: ClusterTarget | null = null;
        if (a["redis"] !== undefined) {
          const url = String(a["redis"]);
          checkRedisUrl(url);
          const maxRetries = Number(a["max-retries"] ?? 2);
          if (!Number.isInteger(maxRetries) || maxRetries < 0) throw badOption(`--max-retries must be an integer >= 0 (got ${JSON.stringify(a["max-retries"])})`);
          if (a["transport"] !== undefined && a["transport"] !== "tcp") throw badOption("--transport: cluster jobs run over tcp (leave --transport out)");
          cluster = { redis: url, prefix: String(a["prefix"] ?? "ps-train"), connectTimeoutMs: 10_000, waitTimeoutMs: 86_400_000, maxRetries };
        }
        // On a terminal (and not --progress off) a bar over the cells, with the time left.
        const tty = process.stderr.isTTY && a["progress"] !== "off" && cluster === null;
        const bar = tty ? new GridProgressBar(process.stderr) : null;
        const line = (t: string) => (bar ? bar.line(`experiment: ${t}`) : process.stderr.write(`experiment: ${t}\n`));
        const r = await runGrid(out, axes, seeds, cells, { line, ...(bar ? { progress: (p: GridProgress) => bar.update(p) } : {}) }, cluster);
        bar?.clear();
        process.stdout.write(`${r.ok} finished, ${r.failed} failed, ${r.skipped} skipped; ${out}/report.md, ${out}/results.csv\n`);
        // The grid went on past failed runs; its exit status still says that some failed.
        if (r.failed > 0) throw new Error(`${r.failed} run${r.failed > 1 ? "s" : ""} of the grid failed (why: ${out}/report.md; run the command again to retry them)`);
      },
    )
    .command(
      "report <dir>",
      "Re-render results.csv and report.md of an experiment folder from its finished runs",
      (c) => c.positional("dir", { type: "string", demandOption: true }),
      (argv) => {
        const dir = String((argv as Record<string, unknown>)["dir"]);
        const n = writeReport(dir);
        process.stdout.write(`${n} finished runs; ${dir}/report.md, ${dir}/results.csv\n`);
      },
    );
}
