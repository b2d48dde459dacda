/**
 * npm run chaos [-- --epochs 10 --interval 10 --workers 4 --servers 2 --checkpoint-every 50
 *                  --seed 1 --mode async --model mlp --dataset mnist --out DIR --quick]
 *
 * The chaos benchmark: the same ps-train run twice, one after the other, on this machine:
 *
 *   undisturbed  `ps-train --mode async --workers 4 --servers 2 --model mlp` on MNIST, with
 *                checkpoints and --on-worker-failure wait, nothing killed;
 *   chaos        the same run, during which every --interval seconds one of its role processes
 *                (a worker or a server shard, drawn at random with --seed among those alive) is
 *                killed with SIGKILL.
 *
 * A killed shard is restarted by the run from its newest checkpoint (lost updates counted by the
 * run); a killed worker is replaced (wait) and its replacement takes the rank. Faults are injected
 * only while training runs: from the first step reported in metrics.jsonl until the workers have
 * done --stop-at (90%) of their steps, so that none lands in start-up or the final evaluation
 * (where a death fails the run by design, docs/reliability.md).
 *
 * stdout: one JSON line per fault ({"bench":"chaos","fault":i,...}), one per run
 * ({"bench":"chaos","run":"undisturbed"|"chaos",...}) and a summary line with faults injected and
 * survived (all of them when the run finished every step, none when it failed), how the run
 * handled them (shard restarts; worker failures recorded and replacements that joined: a
 * replacement killed before it joined is one more failure, survived by the next replacement),
 * lost updates, and both final test accuracies with their difference in points. Progress in words on stderr. The run directories stay under --out, with
 * each run's own log (its stderr at --log-level) beside them as undisturbed.log and chaos.log.
 * Exit 0 when the chaos run finished; 1 when it failed (the summary line says why).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const CLI = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));

interface Options {
  mode: string;
  model: string;
  dataset: string;
  epochs: number;
  workers: number;
  servers: number;
  intervalS: number;
  checkpointEvery: number;
  seed: number;
  stopAt: number;
  out: string;
  backend: string;
  logLevel: string;
}

interface Fault {
  fault: number;
  tSeconds: number;
  role: "server" | "worker";
  rank: number;
  pid: number;
  /** the workers' mean step when it was injected */
  atStep: number;
}

interface RunSummary {
  status?: string;
  testAccuracy: number;
  wallSeconds: number;
  steps: number;
  restarts: number;
  lostUpdates: number;
  restartLog: { shard: number; restoredFrom: number | null; lostUpdates: number; seconds: number }[];
  workerFailures: { rank: number; replaced?: boolean; atStep: number }[];
  checkpoints: number;
}

function usage(msg: string): never {
  process.stderr.write(`chaos: ${msg}\n`);
  process.exit(2);
}

function options(): Options {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        mode: { type: "string", default: "async" },
        model: { type: "string", default: "mlp" },
        dataset: { type: "string", default: "mnist" },
        epochs: { type: "string", default: "10" },
        workers: { type: "string", default: "4" },
        servers: { type: "string", default: "2" },
        interval: { type: "string", default: "10" },
        "checkpoint-every": { type: "string", default: "50" },
        seed: { type: "string", default: "1" },
        "stop-at": { type: "string", default: "0.9" },
        backend: { type: "string", default: "auto" },
        "log-level": { type: "string", default: "warn" },
        out: { type: "string" },
        quick: { type: "boolean", default: false },
      },
    }));
  } catch (err) {
    usage((err as Error).message);
  }
  const int = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) usage(`--${name} must be an integer >= ${min}, got "${v}"`);
    return n;
  };
  const num = (name: string, v: string, min: number, max: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= min || n > max) usage(`--${name} must be a number in (${min}, ${max}], got "${v}"`);
    return n;
  };
  const o: Options = {
    mode: values.mode!,
    model: values.model!,
    dataset: values.dataset!,
    epochs: int("epochs", values.epochs!, 1),
    workers: int("workers", values.workers!, 1),
    servers: int("servers", values.servers!, 1),
    intervalS: num("interval", values.interval!, 0, 3600),
    checkpointEvery: int("checkpoint-every", values["checkpoint-every"]!, 1),
    seed: int("seed", values.seed!, 0),
    stopAt: num("stop-at", values["stop-at"]!, 0, 1),
    backend: values.backend!,
    logLevel: values["log-level"]!,
    out: resolve(values.out ?? mkdtempSync(join(tmpdir(), "ps-train-chaos-"))),
  };
  if (values.quick) Object.assign(o, { dataset: "synthetic", model: "logreg", epochs: 1, intervalS: 2, checkpointEvery: 20 });
  if (existsSync(join(o.out, "undisturbed")) || existsSync(join(o.out, "chaos"))) usage(`--out ${o.out} already holds a chaos run; give a new folder`);
  return o;
}

/** The run's command line: the same for both runs but --out. */
function runArgs(o: Options, out: string): string[] {
  const args = [
    "--mode", o.mode, "--model", o.model, "--dataset", o.dataset, "--epochs", String(o.epochs),
    "--workers", String(o.workers), "--servers", String(o.servers), "--seed", String(o.seed), "--backend", o.backend,
    "--checkpoint-every", String(o.checkpointEvery), "--on-worker-failure", "wait",
    // Every fault must be one the run can take: no cap on restarts or replacements.
    "--max-restarts", "1000", "--max-replacements", "1000",
    "--out", out, "--progress", "off", "--log-level", o.logLevel,
  ];
  if (o.dataset === "synthetic") args.push("--lr", "0.3", "--batch-size", "16", "--max-steps", "3000");
  return args;
}

/** xorshift32: the fault sequence depends on --seed only. */
function rng(seed: number): () => number {
  let x = seed * 2654435761 + 1 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/** The live role processes started by `parent`: their role and rank from the command line. */
function roleProcesses(parent: number): { role: "server" | "worker"; rank: number; pid: number }[] {
  const out: { role: "server" | "worker"; rank: number; pid: number }[] = [];
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
      if (ppid !== parent || state === "Z") continue;
      const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (!args.some((a) => a.endsWith("role-main.js"))) continue;
      const role = args[args.indexOf("--role") + 1];
      const rank = Number(args[args.indexOf("--rank") + 1]);
      if ((role === "server" || role === "worker") && Number.isInteger(rank)) out.push({ role, rank, pid });
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

/** The mean over workers of the last step each reported in metrics.jsonl (0 before the first). */
function meanStep(out: string, workers: number): number {
  let text: string;
  try {
    text = readFileSync(join(out, "metrics.jsonl"), "utf8");
  } catch {
    return 0;
  }
  const last = new Array<number>(workers).fill(0);
  for (const line of text.split("\n")) {
    if (!line.includes('"type":"step"')) continue;
    try {
      const r = JSON.parse(line) as { worker?: number; step?: number };
      if (typeof r.worker === "number" && typeof r.step === "number" && r.worker < workers) last[r.worker] = Math.max(last[r.worker]!, r.step);
    } catch {
      // a line being written
    }
  }
  return last.reduce((a, b) => a + b, 0) / workers;
}

function stepsPerWorker(out: string): number | null {
  try {
    return (JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as { stepsPerWorker: number }).stepsPerWorker;
  } catch {
    return null;
  }
}

let current: ChildProcess | null = null;
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    // the run's role processes are tied to it by an IPC channel and end with it
    current?.kill("SIGKILL");
    process.exit(130);
  });
}

/** Run ps-train to its end; with `chaos`, kill a role process every interval while it trains. */
async function run(o: Options, name: "undisturbed" | "chaos"): Promise<{ code: number | null; stderr: string; faults: Fault[]; summary: RunSummary | null; out: string }> {
  const out = join(o.out, name);
  const t0 = Date.now();
  const proc = spawn(process.execPath, [CLI, ...runArgs(o, out)], { stdio: ["ignore", "ignore", "pipe"] });
  current = proc;
  // the coordinator's log (stderr) is kept beside the run directory
  mkdirSync(o.out, { recursive: true });
  const log = createWriteStream(join(o.out, `${name}.log`));
  let stderr = "";
  proc.stderr!.on("data", (d: Buffer) => {
    log.write(d);
    stderr = (stderr + d.toString()).slice(-20_000);
  });
  const exited = new Promise<number | null>((r) => proc.on("exit", (code) => r(code)));
  let done = false;
  void exited.then(() => (done = true));
  const faults: Fault[] = [];
  if (name === "chaos") {
    const random = rng(o.seed);
    let next = Date.now() + o.intervalS * 1000;
    while (!done) {
      await Promise.race([exited, new Promise((r) => setTimeout(r, 200))]);
      if (done || Date.now() < next) continue;
      const total = stepsPerWorker(out);
      const step = meanStep(out, o.workers);
      // training has started, and is not in its last (1 - stop-at) part
      if (total === null || step < 1 || step > o.stopAt * total) continue;
      const live = roleProcesses(proc.pid!);
      if (live.length === 0) continue;
      const victim = live[Math.floor(random() * live.length)]!;
      try {
        process.kill(victim.pid, "SIGKILL");
      } catch {
        continue; // it ended on its own meanwhile
      }
      const f: Fault = { fault: faults.length + 1, tSeconds: (Date.now() - t0) / 1000, role: victim.role, rank: victim.rank, pid: victim.pid, atStep: Math.round(step) };
      faults.push(f);
      process.stdout.write(`${JSON.stringify({ bench: "chaos", ...f })}\n`);
      process.stderr.write(`chaos: fault ${f.fault} at ${f.tSeconds.toFixed(1)} s: killed ${f.role} ${f.rank} (pid ${f.pid}) at step ~${f.atStep}/${total}\n`);
      next = Date.now() + o.intervalS * 1000;
    }
  }
  const code = await exited;
  current = null;
  await new Promise((r) => log.end(r));
  let summary: RunSummary | null = null;
  try {
    summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as RunSummary;
  } catch {
    // the run failed before writing it
  }
  return { code, stderr, faults, summary, out };
}

async function main(): Promise<number> {
  const o = options();
  process.stderr.write(`chaos: runs under ${o.out}\n`);
  process.stderr.write(`chaos: undisturbed run (${o.mode}, ${o.workers} workers, ${o.servers} shards, ${o.model} on ${o.dataset}, ${o.epochs} epochs)\n`);
  const calm = await run(o, "undisturbed");
  if (calm.code !== 0 || !calm.summary) {
    const line = calm.stderr.trim().split("\n").pop() ?? "";
    process.stdout.write(`${JSON.stringify({ bench: "chaos", summary: true, status: "failed", error: `the undisturbed run failed: ${line}` })}\n`);
    return 1;
  }
  process.stdout.write(`${JSON.stringify({ bench: "chaos", run: "undisturbed", testAccuracy: calm.summary.testAccuracy, wallSeconds: calm.summary.wallSeconds, steps: calm.summary.steps, checkpoints: calm.summary.checkpoints })}\n`);
  process.stderr.write(`chaos: undisturbed: test accuracy ${(calm.summary.testAccuracy * 100).toFixed(2)}% in ${calm.summary.wallSeconds.toFixed(1)} s\n`);
  process.stderr.write(`chaos: chaos run, a fault every ${o.intervalS} s\n`);
  const chaos = await run(o, "chaos");
  const s = chaos.summary;
  const ok = chaos.code === 0 && s !== null;
  const shardRestarts = s?.restarts ?? 0;
  const workerFailures = s?.workerFailures.length ?? 0;
  const replacements = s?.workerFailures.filter((f) => f.replaced).length ?? 0;
  const injectedShards = chaos.faults.filter((f) => f.role === "server").length;
  const injectedWorkers = chaos.faults.length - injectedShards;
  // The run finished every step: it survived every fault (a shard killed during its own restart
  // is covered by one restart record; a replacement killed before it joined by the next one).
  const survived = ok && s.steps > 0 ? chaos.faults.length : 0;
  if (s) {
    process.stdout.write(
      `${JSON.stringify({ bench: "chaos", run: "chaos", testAccuracy: s.testAccuracy, wallSeconds: s.wallSeconds, steps: s.steps, checkpoints: s.checkpoints, restartLog: s.restartLog, workerFailures: s.workerFailures })}\n`,
    );
  }
  const delta = s ? (s.testAccuracy - calm.summary.testAccuracy) * 100 : null;
  const line = {
    bench: "chaos",
    summary: true,
    status: ok ? "ok" : "failed",
    ...(ok ? {} : { error: chaos.stderr.trim().split("\n").pop() ?? "" }),
    mode: o.mode,
    model: o.model,
    dataset: o.dataset,
    workers: o.workers,
    servers: o.servers,
    epochs: o.epochs,
    intervalSeconds: o.intervalS,
    checkpointEvery: o.checkpointEvery,
    seed: o.seed,
    faultsInjected: chaos.faults.length,
    shardFaults: injectedShards,
    workerFaults: injectedWorkers,
    faultsSurvived: survived,
    shardRestarts,
    workerFailuresRecorded: workerFailures,
    workerReplacements: replacements,
    lostUpdates: s?.lostUpdates ?? null,
    testAccuracyUndisturbed: calm.summary.testAccuracy,
    testAccuracyChaos: s?.testAccuracy ?? null,
    accuracyDeltaPoints: delta === null ? null : Number(delta.toFixed(2)),
    withinOnePoint: delta === null ? false : Math.abs(delta) <= 1,
    wallSecondsUndisturbed: calm.summary.wallSeconds,
    wallSecondsChaos: s?.wallSeconds ?? null,
    out: o.out,
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
  process.stderr.write(
    ok
      ? `chaos: ${survived}/${chaos.faults.length} faults survived (${shardRestarts} shard restarts, ${workerFailures} worker failures, ${replacements} replacements joined), ${s.lostUpdates} updates lost; accuracy ${(s.testAccuracy * 100).toFixed(2)}% vs ${(calm.summary.testAccuracy * 100).toFixed(2)}% undisturbed (${delta! >= 0 ? "+" : ""}${delta!.toFixed(2)} points)\n`
      : `chaos: the chaos run failed after ${chaos.faults.length} faults: ${line.error}\n`,
  );
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`chaos: ${err instanceof Error ? err.message : String(err)}\n`);
    current?.kill("SIGKILL");
    process.exit(1);
  },
);
