/**
 * Runs the experiments shipped in experiments/ and writes docs/RESULTS.md from their results.
 *
 *   npm run experiments                         # every experiment, then docs/RESULTS.md
 *   npm run experiments -- --only 2,4           # some of them (by number or file name)
 *   npm run experiments -- --render-only        # only re-render docs/RESULTS.md from the results
 *   npm run experiments -- --seeds 1            # fewer seeds than the files ask for (a quick look)
 *
 * Each experiment runs as `ps-train experiment experiments/NAME.yaml --out RESULTS/NAME`
 * (default RESULTS = results/experiments), so an interrupted sitting is resumed by running the
 * same command again: finished runs are not repeated. Then, per experiment, its results.csv,
 * report.md and plots are copied to docs/results/experiments/NAME/ and docs/RESULTS.md gets a
 * section with the claim, the command, a table, the plots and a verdict computed from the runs
 * by the rule printed beside it. One JSON line per experiment goes to stdout.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { readExperimentFile } from "../src/cli/experiment-commands.js";
import { renderResults, type Sitting } from "../src/experiment/results-doc.js";
import { positiveInts } from "./bench-util.js";

const ROOT = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const CLI = join(ROOT, "dist", "src", "cli", "main.js");

interface Args {
  only: string[];
  seeds: number | null;
  results: string;
  docs: string;
  experiments: string;
  renderOnly: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { only: [], seeds: null, results: join(ROOT, "results", "experiments"), docs: join(ROOT, "docs"), experiments: join(ROOT, "experiments"), renderOnly: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) fail(`${k} needs a value`);
      return x;
    };
    if (k === "--only") a.only = v().split(",").map((s) => s.trim()).filter(Boolean);
    else if (k === "--seeds") {
      try {
        a.seeds = positiveInts(v(), "seeds")[0] ?? fail("--seeds needs a value");
      } catch (err) {
        fail((err as Error).message);
      }
    }
    else if (k === "--results") a.results = resolve(v());
    else if (k === "--docs") a.docs = resolve(v());
    else if (k === "--experiments") a.experiments = resolve(v());
    else if (k === "--render-only") a.renderOnly = true;
    else fail(`unknown option ${k} (--only, --seeds, --results, --docs, --experiments, --render-only)`);
  }
  return a;
}

function fail(msg: string): never {
  process.stderr.write(`experiments: ${msg}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

function runExperiment(file: string, out: string, seeds: number | null): Promise<number> {
  const args = [CLI, "experiment", file, "--out", out, "--log-level", "warn", "--progress", "off", ...(seeds !== null ? ["--seeds", String(seeds)] : [])];
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, args, { stdio: ["ignore", "inherit", "inherit"], cwd: ROOT });
    p.on("error", rej);
    p.on("exit", (code, signal) => res(code ?? (signal ? 128 : 1)));
  });
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (!existsSync(a.experiments)) fail(`${a.experiments}: no such folder`);
  const all = readdirSync(a.experiments).filter((f) => f.endsWith(".yaml")).map((f) => basename(f, ".yaml")).sort();
  const pick = a.only.length ? all.filter((n) => a.only.some((o) => n === o || n.startsWith(`${o}-`))) : all;
  if (a.only.length && pick.length !== a.only.length) fail(`--only ${a.only.join(",")}: no such experiment (have ${all.join(", ")})`);
  for (const n of pick) readExperimentFile(join(a.experiments, `${n}.yaml`)); // bad files fail before anything runs
  let sitting: Sitting | null = null;
  if (!a.renderOnly) {
    const t0 = Date.now();
    const loadBefore = loadavg()[0]!;
    for (const n of pick) {
      process.stderr.write(`experiments: ${n}\n`);
      const code = await runExperiment(join(a.experiments, `${n}.yaml`), join(a.results, n), a.seeds);
      if (code !== 0) process.stderr.write(`experiments: ${n} exited ${code} (its failed runs are in its report); going on\n`);
    }
    sitting = { started: new Date(t0).toISOString().replace(/\.\d+Z$/, "Z"), minutes: (Date.now() - t0) / 60_000, loadBefore, loadAfter: loadavg()[0]! };
    writeFileSync(join(a.results, "sitting.json"), JSON.stringify(sitting) + "\n");
  } else if (existsSync(join(a.results, "sitting.json"))) {
    sitting = JSON.parse(readFileSync(join(a.results, "sitting.json"), "utf8")) as Sitting;
  }
  mkdirSync(a.docs, { recursive: true });
  writeFileSync(join(a.docs, "RESULTS.md"), renderResults(a, all, sitting, (o) => process.stdout.write(JSON.stringify(o) + "\n")));
  process.stderr.write(`experiments: wrote ${join(a.docs, "RESULTS.md")}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`experiments: ${(err as Error).message}\n`);
  process.exit(1);
});
