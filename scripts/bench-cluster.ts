/**
 * bench:cluster — the cluster's scheduling overheads, on this machine: a redis-server of its own,
 * `ps-train scheduler` and 4 `ps-train agent` processes, tiny jobs (synthetic data, logreg, 20
 * steps), submitted through the job client. Prints one JSON line per measurement:
 *
 *   submit_to_ranks_running  seconds from submit to every rank's process running (an idle pool),
 *                            with the split: submit -> gang reserved -> all ranks started
 *   jobs_per_minute          tiny jobs completed per minute with 4 agents, a queue of N at once
 *
 *   npm run bench:cluster [-- --repeats 7 --jobs 12]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { JobClient } from "../src/cluster/redis/job-client.js";
import type { JobRecord } from "../src/cluster/redis/job-record.js";
import { DEFAULTS, type TrainConfig } from "../src/config/train-config.js";
import { freePort } from "../src/util/free-port.js";
import { quantiles } from "./bench-util.js";

const CLI = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));
const AGENTS = 4;

function stats(xs: number[]) {
  const q = quantiles(xs);
  const r = (v: number) => +v.toFixed(3);
  return { n: xs.length, median: r(q.median), min: r(q.min), max: r(q.max) };
}

function tiny(over: Partial<TrainConfig> = {}): TrainConfig {
  return { ...DEFAULTS, dataset: "synthetic", model: "logreg", backend: "cpu", optimizer: "sgd", lr: 0.1, batchSize: 16, maxSteps: 20, transport: "tcp", logLevel: "warn", progress: "off", heartbeatMs: 250, timeoutMs: 15000, out: "", ...over };
}

async function until(client: JobClient, id: string, pred: (r: JobRecord) => boolean, timeoutMs = 120_000): Promise<JobRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await client.get(id);
    if (pred(r)) return r;
    if (Date.now() > deadline) throw new Error(`job ${id} stuck in ${r.state} for ${timeoutMs} ms (${r.error || "no error"})`);
    await new Promise((res) => setTimeout(res, 5));
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { repeats: { type: "string", default: "7" }, jobs: { type: "string", default: "12" } } });
  const repeats = Number(values.repeats);
  const nJobs = Number(values.jobs);
  const dir = mkdtempSync(join(tmpdir(), "ps-train-bench-cluster-"));
  const port = await freePort();
  const procs: ChildProcess[] = [];
  const redisProc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], { stdio: "ignore" });
  const url = `redis://127.0.0.1:${port}`;
  const prefix = "bench";
  const common = ["--redis", url, "--prefix", prefix, "--log-level", "warn"];
  let client: JobClient | null = null;
  try {
    client = await JobClient.connect(url, prefix, 10_000);
    procs.push(spawn(process.execPath, [CLI, "scheduler", ...common, "--agent-ttl-ms", "3000"], { stdio: "ignore" }));
    for (let i = 0; i < AGENTS; i++) procs.push(spawn(process.execPath, [CLI, "agent", ...common, "--name", `bench${i}`, "--runs-dir", join(dir, `agent${i}`), "--heartbeat-ms", "500"], { stdio: "ignore" }));
    const deadline = Date.now() + 30_000;
    while ((await client.redis.zcard(client.keys.agents)) < AGENTS) {
      if (Date.now() > deadline) throw new Error(`only ${await client.redis.zcard(client.keys.agents)} of ${AGENTS} agents registered within 30 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // one warm-up job (first imports of tfjs and bullmq in the page cache)
    const warm = await client.submit(tiny(), { name: "warm-up", maxRetries: 0 });
    await until(client, warm, (r) => r.state === "succeeded" || r.state === "failed");

    for (const shape of [{ workers: 1, servers: 1 }, { workers: 2, servers: 1 }]) {
      const total: number[] = [];
      const toGang: number[] = [];
      const toRanks: number[] = [];
      const toDone: number[] = [];
      for (let i = 0; i < repeats; i++) {
        const t0 = Date.now();
        const id = await client.submit(tiny(shape), { name: "latency", maxRetries: 0 });
        const running = await until(client, id, (r) => r.ranksRunningAt !== null || r.state === "failed");
        if (running.state === "failed") throw new Error(`job ${id} failed: ${running.error}`);
        const done = await until(client, id, (r) => r.state === "succeeded" || r.state === "failed");
        if (done.state !== "succeeded") throw new Error(`job ${id} ${done.state}: ${done.error}`);
        total.push((running.ranksRunningAt! - t0) / 1000);
        toGang.push((running.startedAt! - t0) / 1000);
        toRanks.push((running.ranksRunningAt! - running.startedAt!) / 1000);
        toDone.push((done.finishedAt! - t0) / 1000);
      }
      process.stdout.write(
        JSON.stringify({
          bench: "cluster",
          metric: "submit_to_ranks_running",
          unit: "s",
          agents: AGENTS,
          ...shape,
          ranks: shape.workers + shape.servers + 1,
          submitToRanksRunning: stats(total),
          submitToGangReserved: stats(toGang),
          gangReservedToRanksRunning: stats(toRanks),
          submitToSucceeded: stats(toDone),
        }) + "\n",
      );
    }

    const t0 = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < nJobs; i++) ids.push(await client.submit(tiny(), { name: `throughput-${i}`, maxRetries: 0 }));
    let failed = 0;
    let last = 0;
    for (const id of ids) {
      const r = await until(client, id, (x) => x.state === "succeeded" || x.state === "failed", 600_000);
      if (r.state !== "succeeded") failed++;
      last = Math.max(last, r.finishedAt ?? Date.now());
    }
    const seconds = (last - t0) / 1000;
    process.stdout.write(
      JSON.stringify({ bench: "cluster", metric: "jobs_per_minute", agents: AGENTS, ranksPerJob: 3, jobs: nJobs, failed, seconds: +seconds.toFixed(2), jobsPerMinute: +((60 * (nJobs - failed)) / seconds).toFixed(1), job: "synthetic logreg, 1 server + 1 worker, 20 steps of batch 16, cpu backend" }) + "\n",
    );
  } finally {
    await client?.close();
    for (const p of procs) p.kill("SIGTERM");
    await Promise.all(procs.map((p) => (p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once("exit", r)) : null)));
    redisProc.kill("SIGTERM");
    await new Promise((r) => redisProc.once("exit", r));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench:cluster: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
