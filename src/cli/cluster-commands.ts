/**
 * The cluster commands of `ps-train`: scheduler, agent, submit, jobs, job ID, cancel ID.
 * Options are validated here (one line, PS_ERR_BAD_OPTION, exit 2) before anything connects;
 * `submit` takes every training option of a local run and resolves and checks it the same way.
 */
import { resolve } from "node:path";
import type { Argv } from "yargs";
import type { TrainConfig } from "../config/train-config.js";
import { prepareRun } from "../cluster/train-run.js";
import { Agent, type AgentOptions, defaultAgentName, defaultCpus } from "../cluster/redis/agent.js";
import { checkRedisUrl, DEFAULT_REDIS_URL, REDIS_PASSWORD_ENV, redisAuth } from "../cluster/redis/connection.js";
import { applyCurveKeys } from "./curve-option.js";
import { applyRedisSecurity, redisSecurityOptions } from "./redis-security-option.js";
import { JobClient } from "../cluster/redis/job-client.js";
import { gangTasks, type JobRecord, type TaskRole } from "../cluster/redis/job-record.js";
import { Scheduler, type SchedulerOptions } from "../cluster/redis/scheduler.js";
import { RunDir } from "../metrics/run-dir.js";
import { badOption, ErrorCode, PsError } from "../util/errors.js";
import { makeLogger } from "./logger.js";
import { LOG_LEVELS, resolveTrainConfig, trainOptions } from "./options.js";
import { ProgressBar } from "./progress-bar.js";
import { summaryLine } from "./summary-line.js";

export const ROLES: readonly TaskRole[] = ["coordinator", "server", "worker"];

export interface ConnectionArgs {
  redis: string;
  prefix: string;
  connectTimeoutMs: number;
}

/** The scheduler's options as the command line gives them (the logger is made from --log-level). */
export type SchedulerArgs = Omit<SchedulerOptions, "log"> & { logLevel: string };

/** The agent's options as the command line gives them. */
export type AgentArgs = Omit<AgentOptions, "log"> & { logLevel: string };

export interface SubmitArgs extends ConnectionArgs {
  config: TrainConfig;
  name: string;
  maxRetries: number;
  wait: boolean;
  waitTimeoutMs: number;
  checkData: boolean;
  /** where --wait writes the run directory ("" = nowhere) */
  out: string;
}

export interface JobsArgs extends ConnectionArgs {
  limit: number;
  json: boolean;
}

export interface JobArgs extends ConnectionArgs {
  id: string;
  json: boolean;
  out: string;
}

export interface CancelArgs extends ConnectionArgs {
  id: string;
}

/** What each command does with its validated options (tests pass their own to check parsing only). */
export interface ClusterHandlers {
  scheduler: (a: SchedulerArgs) => Promise<void>;
  agent: (a: AgentArgs) => Promise<void>;
  submit: (a: SubmitArgs) => Promise<void>;
  jobs: (a: JobsArgs) => Promise<void>;
  job: (a: JobArgs) => Promise<void>;
  cancel: (a: CancelArgs) => Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// option parsing (raw strings from yargs, so messages can quote what the user typed)
// ---------------------------------------------------------------------------------------------

function intArg(argv: Record<string, unknown>, flag: string, min: number, fallback: number): number {
  let raw = argv[flag];
  if (Array.isArray(raw)) raw = raw[raw.length - 1];
  if (raw === undefined) return fallback;
  const text = String(raw).trim();
  const n = /^[+-]?\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw badOption(`--${flag} must be an integer >= ${min} (got ${JSON.stringify(raw)})`);
  return n;
}

function strArg(argv: Record<string, unknown>, flag: string, fallback: string, allowEmpty = false): string {
  let raw = argv[flag];
  if (Array.isArray(raw)) raw = raw[raw.length - 1];
  if (raw === undefined) return fallback;
  const s = String(raw);
  if (!allowEmpty && s.trim() === "") throw badOption(`--${flag} must be a non-empty string`);
  return s;
}

function portArg(argv: Record<string, unknown>): number | null {
  if (argv["metrics-port"] === undefined) return null;
  const p = intArg(argv, "metrics-port", 0, 0);
  if (p > 65535) throw badOption(`--metrics-port must be an integer from 0 to 65535 (got ${p})`);
  return p;
}

function idArg(argv: Record<string, unknown>): string {
  const id = String(argv["id"] ?? "").trim();
  if (!/^[A-Za-z0-9._-]{1,100}$/.test(id)) throw badOption(`job id must be letters, digits, '.', '_' or '-' (got ${JSON.stringify(argv["id"] ?? "")})`);
  return id;
}

function rolesArg(argv: Record<string, unknown>): TaskRole[] {
  const raw = strArg(argv, "roles", ROLES.join(","));
  const roles = raw.split(",").map((r) => r.trim()).filter(Boolean);
  for (const r of roles) if (!(ROLES as readonly string[]).includes(r)) throw badOption(`--roles must list coordinator, server, worker (got ${JSON.stringify(raw)})`);
  if (roles.length === 0) throw badOption(`--roles must name at least one role (got ${JSON.stringify(raw)})`);
  return [...new Set(roles)] as TaskRole[];
}

function connectionArgs(argv: Record<string, unknown>, env: NodeJS.ProcessEnv): ConnectionArgs {
  const redis = checkRedisUrl(strArg(argv, "redis", env["PS_TRAIN_REDIS"] || DEFAULT_REDIS_URL));
  applyRedisSecurity(argv, env);
  redisAuth(redis, env); // a password file or CA that cannot be read: one line, exit 2, before connecting
  const prefix = strArg(argv, "prefix", env["PS_TRAIN_PREFIX"] || "ps-train");
  if (!/^[A-Za-z0-9._:-]{1,64}$/.test(prefix)) throw badOption(`--prefix must be 1-64 letters, digits, '.', '_', ':' or '-' (got ${JSON.stringify(prefix)})`);
  return { redis, prefix, connectTimeoutMs: intArg(argv, "connect-timeout-ms", 1, 10_000) };
}

function logLevelArg(argv: Record<string, unknown>): string {
  const level = strArg(argv, "log-level", "info");
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw badOption(`--log-level must be one of ${LOG_LEVELS.join(", ")} (got ${JSON.stringify(level)})`);
  return level;
}

function connectionOptions<T>(y: Argv<T>): Argv<T> {
  return redisSecurityOptions(y)
    .option("redis", { type: "string", requiresArg: true, describe: `Redis URL, redis:// or rediss:// (TLS); password: --redis-password-file, $${REDIS_PASSWORD_ENV} or in the URL`, defaultDescription: `$PS_TRAIN_REDIS or ${DEFAULT_REDIS_URL}` })
    .option("prefix", { type: "string", requiresArg: true, describe: "Key prefix of this cluster in Redis", defaultDescription: "$PS_TRAIN_PREFIX or ps-train" })
    .option("connect-timeout-ms", { type: "string", requiresArg: true, describe: "Give up reaching Redis after this many ms", defaultDescription: "10000" });
}

function daemonOptions<T>(y: Argv<T>): Argv<T> {
  return connectionOptions(y)
    .option("metrics-port", { type: "string", requiresArg: true, describe: "Serve /healthz, /readyz and Prometheus /metrics on this port (0 = any free port)", defaultDescription: "off" })
    .option("log-level", { type: "string", requiresArg: true, describe: "Log verbosity", choices: [...LOG_LEVELS], defaultDescription: "info" });
}

// ---------------------------------------------------------------------------------------------
// the commands
// ---------------------------------------------------------------------------------------------

export function addClusterCommands<T>(y: Argv<T>, handlers: ClusterHandlers, env: NodeJS.ProcessEnv = process.env): Argv<T> {
  return y
    .command(
      "scheduler",
      "Run the cluster's scheduler: takes jobs off the Redis queue and gang-schedules them onto agents",
      (c) =>
        daemonOptions(c)
          .option("max-jobs", { type: "string", requiresArg: true, describe: "Jobs held at once (waiting for a gang or running)", defaultDescription: "256" })
          .option("agent-ttl-ms", { type: "string", requiresArg: true, describe: "Drop an agent that has not heartbeated for this long", defaultDescription: "10000" })
          .option("lock-ms", { type: "string", requiresArg: true, describe: "A scheduler that dies gives its jobs up after this long", defaultDescription: "30000" })
          .option("gang-timeout-ms", { type: "string", requiresArg: true, describe: "Fail the job at the head of the line after waiting this long for enough agents", defaultDescription: "3600000" })
          .option("keep-seconds", { type: "string", requiresArg: true, describe: "Keep finished jobs (records, run directories) in Redis this long", defaultDescription: "604800" }),
      async (argv) => {
        const a = argv as Record<string, unknown>;
        await handlers.scheduler({
          ...connectionArgs(a, env),
          maxJobs: intArg(a, "max-jobs", 1, 256),
          agentTtlMs: intArg(a, "agent-ttl-ms", 100, 10_000),
          lockMs: intArg(a, "lock-ms", 1000, 30_000),
          gangTimeoutMs: intArg(a, "gang-timeout-ms", 1, 3_600_000),
          keepSeconds: intArg(a, "keep-seconds", 1, 604_800),
          metricsPort: portArg(a),
          logLevel: logLevelArg(a),
        });
      },
    )
    .command(
      "agent",
      "Join the pool as an agent: runs the coordinator, server and worker tasks the scheduler gives it",
      (c) =>
        daemonOptions(c)
          .option("name", { type: "string", requiresArg: true, describe: "Name shown in logs and job records", defaultDescription: "the hostname" })
          .option("host", { type: "string", requiresArg: true, describe: "Address this agent's role processes bind and advertise (the pod IP on Kubernetes)", defaultDescription: "$PS_TRAIN_BIND_HOST or 127.0.0.1" })
          .option("cpus", { type: "string", requiresArg: true, describe: "CPUs this agent offers (recorded)", defaultDescription: "all" })
          .option("gpus", { type: "string", requiresArg: true, describe: "GPUs this agent offers; workers prefer agents with GPUs", defaultDescription: "0" })
          .option("roles", { type: "string", requiresArg: true, describe: "Tasks this agent accepts: a comma list of coordinator, server, worker", defaultDescription: "all three" })
          .option("runs-dir", { type: "string", requiresArg: true, describe: "Where run directories and task logs are written on this machine", defaultDescription: "runs/cluster" })
          .option("heartbeat-ms", { type: "string", requiresArg: true, describe: "Interval between heartbeats (keep well below the scheduler's --agent-ttl-ms)", defaultDescription: "1000" })
          .option("curve-keys", { type: "string", requiresArg: true, describe: "CURVE keys for every socket of the tasks this agent runs (a folder from ps-train keys generate; give every agent of the pool the same keys)", defaultDescription: "$PS_TRAIN_CURVE_KEYS or off" }),
      async (argv) => {
        const a = argv as Record<string, unknown>;
        // The role processes it starts inherit the folder's path (PS_TRAIN_CURVE_KEYS), never a key.
        applyCurveKeys(a, env, rolesArg(a));
        const host = strArg(a, "host", env["PS_TRAIN_BIND_HOST"] || "127.0.0.1");
        if (!/^[A-Za-z0-9.:-]+$/.test(host)) throw badOption(`--host must be an IP address or host name (got ${JSON.stringify(host)})`);
        await handlers.agent({
          ...connectionArgs(a, env),
          name: strArg(a, "name", defaultAgentName()),
          host,
          cpus: intArg(a, "cpus", 1, defaultCpus()),
          gpus: intArg(a, "gpus", 0, 0),
          roles: rolesArg(a),
          runsDir: strArg(a, "runs-dir", "runs/cluster"),
          heartbeatMs: intArg(a, "heartbeat-ms", 10, 1000),
          metricsPort: portArg(a),
          logLevel: logLevelArg(a),
        });
      },
    )
    .command(
      "submit",
      "Queue a training job on the cluster (every training option of a local run applies)",
      (c) =>
        connectionOptions(trainOptions(c))
          .option("name", { type: "string", requiresArg: true, describe: "A name for the job", defaultDescription: '""' })
          .option("max-retries", { type: "string", requiresArg: true, describe: "Retry a failed attempt (lost agent, lost peer) this many times on a fresh gang", defaultDescription: "2" })
          .option("wait", { type: "boolean", describe: "Follow the job to its end; exit 0 if it succeeded (and write --out), 1 if not" })
          .option("wait-timeout-ms", { type: "string", requiresArg: true, describe: "With --wait: stop following after this long (the job goes on)", defaultDescription: "86400000" })
          .option("check-data", { type: "boolean", describe: "Load the dataset and build the model here before queueing (--no-check-data when only the agents have the data)", defaultDescription: "true" }),
      async (argv) => {
        const a = argv as Record<string, unknown>;
        const conn = connectionArgs(a, env);
        const config = resolveTrainConfig(argv, env);
        const given = (flag: string) => a[flag] !== undefined;
        if (given("transport") && config.transport !== "tcp") throw badOption(`--transport ${config.transport}: cluster jobs run over tcp (leave --transport out)`);
        // Checkpoints stay on the agents that run the shards (docs/reliability.md); a retried attempt starts afresh.
        if (config.resume !== "") throw badOption(`--resume: resume is for local runs; a cluster job retries a failed attempt on a fresh gang instead (--max-retries)`);
        const wait = a["wait"] === true;
        if (config.out && !wait) throw badOption(`--out needs --wait (or fetch the run directory later: ps-train job ID --out DIR)`);
        const out = config.out;
        await handlers.submit({
          ...conn,
          config: { ...config, out: "", transport: "tcp" },
          name: strArg(a, "name", "", true),
          maxRetries: intArg(a, "max-retries", 0, 2),
          wait,
          waitTimeoutMs: intArg(a, "wait-timeout-ms", 1, 86_400_000),
          checkData: a["check-data"] !== false,
          out,
        });
      },
    )
    .command(
      "jobs",
      "List the cluster's jobs, newest first",
      (c) =>
        connectionOptions(c)
          .option("limit", { type: "string", requiresArg: true, describe: "Show at most this many", defaultDescription: "50" })
          .option("json", { type: "boolean", describe: "One JSON object per line instead of a table" }),
      async (argv) => {
        const a = argv as Record<string, unknown>;
        await handlers.jobs({ ...connectionArgs(a, env), limit: intArg(a, "limit", 1, 50), json: a["json"] === true });
      },
    )
    .command(
      "job <id>",
      "Show one job: config, state, progress, summary, errors (--out DIR writes its run directory)",
      (c) =>
        connectionOptions(c)
          .positional("id", { type: "string", describe: "The job id (ps-train jobs lists them)" })
          .option("json", { type: "boolean", describe: "The whole record as JSON" })
          .option("out", { type: "string", requiresArg: true, describe: "Write the run directory of its last attempt here" }),
      async (argv) => {
        const a = argv as Record<string, unknown>;
        const out = strArg(a, "out", "", true);
        if (out) RunDir.check(out);
        await handlers.job({ ...connectionArgs(a, env), id: idArg(a), json: a["json"] === true, out });
      },
    )
    .command(
      "cancel <id>",
      "Cancel a job: a queued job is dropped, a running job's processes are killed",
      (c) => connectionOptions(c).positional("id", { type: "string", describe: "The job id" }),
      async (argv) => {
        const a = argv as Record<string, unknown>;
        await handlers.cancel({ ...connectionArgs(a, env), id: idArg(a) });
      },
    );
}

// ---------------------------------------------------------------------------------------------
// what the commands do
// ---------------------------------------------------------------------------------------------

/** Resolves on SIGTERM or SIGINT (Kubernetes stops pods with SIGTERM). */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off("SIGTERM", on);
      process.off("SIGINT", on);
      resolve(sig);
    };
    process.on("SIGTERM", on);
    process.on("SIGINT", on);
  });
}

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d`;
}

function progressText(rec: JobRecord): string {
  if (rec.state === "succeeded") return "100%";
  const p = rec.progress;
  if (!p || !(p.totalSteps > 0)) return "-";
  return `${Math.floor((100 * p.globalStep) / p.totalSteps)}%`;
}

function accuracyText(rec: JobRecord): string {
  const acc = rec.summary?.testAccuracy ?? rec.progress?.testAccuracy ?? null;
  return acc === null || acc === undefined || !Number.isFinite(acc) ? "-" : `${(acc * 100).toFixed(2)}%`;
}

export function jobsTable(recs: JobRecord[], now = Date.now()): string {
  const rows = [["ID", "STATE", "PROGRESS", "MODE", "WORKERS", "ACCURACY", "AGE", "NAME"]];
  for (const r of recs) {
    const state = r.attempt > 1 && !["succeeded", "failed", "cancelled"].includes(r.state) ? `${r.state} (try ${r.attempt})` : r.state;
    rows.push([r.id, state, progressText(r), r.config.mode, `${r.config.workers}w/${r.config.comm === "allreduce" ? "allreduce" : `${r.config.servers}s`}`, accuracyText(r), age(now - r.submittedAt), r.name || "-"]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  return rows.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")).join("\n") + "\n";
}

function describeJob(r: JobRecord, waitingFor: string): string {
  const lines = [
    `job ${r.id}${r.name ? ` (${r.name})` : ""}: ${r.state}${r.attempt > 0 ? `, attempt ${r.attempt} of ${r.maxRetries + 1}` : ""}`,
    `  submitted ${new Date(r.submittedAt).toISOString()} (${age(Date.now() - r.submittedAt)} ago)`,
    `  config    --mode ${r.config.mode} --workers ${r.config.workers} --servers ${r.config.servers} --model ${r.config.model} --dataset ${r.config.dataset} --batch-size ${r.config.batchSize} --epochs ${r.config.epochs}${r.config.maxSteps ? ` --max-steps ${r.config.maxSteps}` : ""}`,
  ];
  if (waitingFor && (r.state === "waiting" || r.state === "queued")) lines.push(`  waiting   ${waitingFor}`);
  if (r.gang.length > 0) lines.push(`  gang      ${r.gang.map((g) => `${g.role === "coordinator" ? "coordinator" : `${g.role}:${g.rank}`}@${g.agent}`).join(" ")}`);
  if (r.ranksRunningAt && r.startedAt) lines.push(`  started   all ranks running ${((r.ranksRunningAt - r.startedAt) / 1000).toFixed(2)} s after the gang was reserved`);
  if (r.progress) lines.push(`  progress  step ${Math.floor(r.progress.globalStep)}/${r.progress.totalSteps}, loss ${r.progress.loss.toFixed(4)}, ${Math.round(r.progress.samplesPerSecond)} samples/s`);
  if (r.summary) lines.push(`  summary   ${summaryLine(r.summary)}`);
  for (const e of r.errors) lines.push(`  attempt ${e.attempt} failed: ${e.error}`);
  if (r.error && r.state !== "succeeded") lines.push(`  error     ${r.error}`);
  return lines.join("\n") + "\n";
}

async function withClient<T>(a: ConnectionArgs, f: (c: JobClient) => Promise<T>): Promise<T> {
  const client = await JobClient.connect(a.redis, a.prefix, a.connectTimeoutMs);
  try {
    return await f(client);
  } finally {
    await client.close();
  }
}

export const clusterHandlers: ClusterHandlers = {
  async scheduler(a) {
    const log = makeLogger(a.logLevel);
    const s = new Scheduler({ ...a, log });
    const stopped = untilSignal();
    await s.start();
    const sig = await stopped;
    log.info({ signal: sig }, "stopping: held jobs go back to the queue, their gangs keep running");
    await s.stop();
  },

  async agent(a) {
    const log = makeLogger(a.logLevel);
    const agent = new Agent({ ...a, runsDir: resolve(a.runsDir), log });
    const stopped = untilSignal();
    await agent.start();
    const sig = await stopped;
    log.info({ signal: sig }, "stopping: leaving the pool, killing running tasks");
    await agent.stop();
  },

  async submit(a) {
    if (a.out) RunDir.check(a.out);
    // The same checks a local run makes before it starts anything: data, partition, model fit.
    // Backends are the agents' business (an agent with a GPU loads tfjs-node-gpu), so check with cpu.
    if (a.checkData) await prepareRun({ ...a.config, backend: "cpu", out: "" });
    await withClient(a, async (client) => {
      const id = await client.submit(a.config, { name: a.name, maxRetries: a.maxRetries });
      if (!a.wait) {
        process.stdout.write(`${id}\n`);
        return;
      }
      process.stderr.write(`ps-train: submitted job ${id}\n`);
      const cfg = a.config;
      const showBar = cfg.progress === "on" || (cfg.progress === "auto" && process.stderr.isTTY === true);
      const bar = showBar ? new ProgressBar(process.stderr) : null;
      let lastState = "";
      let lastAttempt = 0;
      // A job nobody can run is not an error (a scheduler or agents may come), but say so once.
      const hint = setTimeout(() => {
        client.pool().then(
          ({ schedulers, agents }) => {
            if (lastState !== "queued" && lastState !== "waiting") return;
            if (schedulers === 0) process.stderr.write(`ps-train: job ${id}: no scheduler consumes the queue (start ps-train scheduler)\n`);
            else if (agents < gangTasks(cfg).length) process.stderr.write(`ps-train: job ${id}: ${agents} live agents, the job needs ${gangTasks(cfg).length}\n`);
          },
          () => undefined,
        );
      }, 5000);
      const rec = await client
        .follow(id, a.waitTimeoutMs, (r) => {
          if (r.state !== lastState || r.attempt !== lastAttempt) {
            bar?.done();
            if (r.attempt > lastAttempt && lastAttempt > 0 && r.errors.length > 0) process.stderr.write(`ps-train: job ${id}: attempt ${lastAttempt} failed: ${r.errors[r.errors.length - 1]!.error}; retrying\n`);
            if (r.state === "running") process.stderr.write(`ps-train: job ${id}: running on ${r.gang.length} agents (attempt ${r.attempt})\n`);
            else if (r.state === "waiting") process.stderr.write(`ps-train: job ${id}: waiting for a gang of ${gangTasks(cfg).length} idle agents\n`);
            lastState = r.state;
            lastAttempt = r.attempt;
          }
          if (r.progress && r.state === "running") bar?.update(r.progress);
        })
        .finally(() => {
          clearTimeout(hint);
          bar?.done();
        });
      if (a.out) await client.download(rec, a.out);
      if (rec.state !== "succeeded" || !rec.summary) {
        throw new PsError(ErrorCode.JOB_FAILED, `job ${id} ${rec.state}: ${rec.error || "no summary"}${a.out ? ` (run directory and logs in ${a.out})` : ""}`);
      }
      process.stdout.write(`${summaryLine(rec.summary)}\n`);
    });
  },

  async jobs(a) {
    await withClient(a, async (client) => {
      const recs = await client.list(a.limit);
      if (a.json) for (const r of recs) process.stdout.write(JSON.stringify({ id: r.id, name: r.name, state: r.state, attempt: r.attempt, progress: progressText(r), mode: r.config.mode, workers: r.config.workers, servers: r.config.servers, testAccuracy: r.summary?.testAccuracy ?? null, submittedAt: r.submittedAt, error: r.error || undefined }) + "\n");
      else process.stdout.write(jobsTable(recs));
    });
  },

  async job(a) {
    await withClient(a, async (client) => {
      const rec = await client.get(a.id);
      if (a.json) process.stdout.write(JSON.stringify(rec, null, 2) + "\n");
      else process.stdout.write(describeJob(rec, (await client.redis.hget(client.keys.job(a.id), "waitingFor")) ?? ""));
      if (a.out) {
        const files = await client.download(rec, a.out);
        process.stderr.write(`ps-train: wrote ${files.length} files of attempt ${rec.filesAttempt || rec.attempt} to ${a.out}\n`);
      }
    });
  },

  async cancel(a) {
    await withClient(a, async (client) => {
      const before = await client.get(a.id);
      if (["succeeded", "failed", "cancelled"].includes(before.state)) {
        process.stdout.write(`job ${a.id} already ${before.state}\n`);
        return;
      }
      const rec = await client.cancel(a.id);
      process.stdout.write(rec.state === "cancelled" ? `job ${a.id} cancelled\n` : `job ${a.id}: cancel requested (${rec.state}; the scheduler stops its processes)\n`);
    });
  },
};
