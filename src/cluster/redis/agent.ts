import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { cpus, hostname } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { TUNED_MALLOC_ENV } from "../local-launcher.js";
import { connectRedis, duplicateBlocking, redactUrl } from "./connection.js";
import { HealthServer } from "./health-server.js";
import { type TaskEvent, type TaskRole, taskLogName, taskName } from "./job-record.js";
import { ClusterKeys } from "./keys.js";

const ROLE_MAIN = fileURLToPath(new URL("../role-main.js", import.meta.url));
const COORDINATOR_MAIN = fileURLToPath(new URL("./coordinator-main.js", import.meta.url));

/** What a scheduler or a coordinator pushes to an agent's inbox. */
export type AgentCommand =
  | { type: "task"; job: string; attempt: number; role: TaskRole; rank: number; coordinator?: string; timeoutMs?: number; agentTtlMs?: number; incarnation?: number }
  /** every task of the attempt; with role and rank, only that task (a released worker) */
  | { type: "kill"; job: string; attempt: number; role?: TaskRole; rank?: number };

export interface AgentOptions {
  redis: string;
  prefix: string;
  /** shown in `ps-train jobs`/logs; the id adds a random suffix so a restarted agent is a new member */
  name: string;
  /** the address role processes bind and advertise (the pod IP on Kubernetes) */
  host: string;
  cpus: number;
  gpus: number;
  roles: TaskRole[];
  /** where coordinator tasks keep run directories and role tasks their logs */
  runsDir: string;
  heartbeatMs: number;
  metricsPort: number | null;
  connectTimeoutMs: number;
  log: Logger;
}

interface Child {
  key: string;
  job: string;
  attempt: number;
  role: TaskRole;
  rank: number;
  incarnation: number;
  proc: ChildProcess;
  log: string;
}

/**
 * A member of the pool: registers with its capacity, heartbeats, and runs the tasks pushed to its
 * inbox as child processes (the coordinator of a job, or the same role process a local run
 * starts). Children are tied to it by an IPC channel, so an agent killed with SIGKILL takes them
 * along; the scheduler then sees the agent's heartbeat stop and retries the job elsewhere.
 */
export class Agent {
  readonly id: string;
  readonly keys: ClusterKeys;
  private redis: Redis | null = null;
  private blocking: Redis | null = null;
  private readonly children = new Map<string, Child>();
  private readonly seen = new Set<string>();
  private heartbeat: NodeJS.Timeout | null = null;
  private stopping = false;
  private registered = false;
  private inboxLoop: Promise<void> | null = null;
  private health: HealthServer | null = null;
  readonly registry = new Registry();
  private readonly mTasks: Counter;
  private readonly mExits: Counter;
  private readonly mRunning: Gauge;

  constructor(private readonly o: AgentOptions) {
    this.keys = new ClusterKeys(o.prefix);
    this.id = `${o.name}-${randomBytes(3).toString("hex")}`;
    collectDefaultMetrics({ register: this.registry, prefix: "ps_train_agent_" });
    this.mTasks = new Counter({ name: "ps_train_agent_tasks_started_total", help: "Tasks started by this agent, by role", labelNames: ["role"], registers: [this.registry] });
    this.mExits = new Counter({ name: "ps_train_agent_task_exits_total", help: "Task processes that ended, by role and outcome (ok, failed, killed)", labelNames: ["role", "outcome"], registers: [this.registry] });
    this.mRunning = new Gauge({ name: "ps_train_agent_tasks_running", help: "Task processes running now, by role", labelNames: ["role"], registers: [this.registry] });
    new Gauge({ name: "ps_train_agent_busy", help: "1 while this agent belongs to a gang, 0 while idle", registers: [this.registry] }).set(0);
    new Gauge({ name: "ps_train_agent_info", help: "This agent's id and capacity", labelNames: ["id", "host", "roles"], registers: [this.registry] })
      .labels(this.id, o.host, o.roles.join(","))
      .set(1);
  }

  async start(): Promise<void> {
    this.redis = await connectRedis(this.o.redis, { timeoutMs: this.o.connectTimeoutMs, persistent: true, name: `ps-train-agent-${this.id}` });
    this.redis.on("error", (err: Error) => this.o.log.warn({ err: err.message }, "redis connection error"));
    this.blocking = duplicateBlocking(this.redis);
    if (this.o.metricsPort !== null) {
      this.health = new HealthServer(this.registry, () => this.readiness());
      const port = await this.health.listen(this.o.metricsPort);
      this.o.log.info({ port }, "serving /healthz /readyz /metrics");
    }
    await this.register();
    this.heartbeat = setInterval(() => void this.beat(), this.o.heartbeatMs);
    this.inboxLoop = this.readInbox();
    this.o.log.info({ id: this.id, redis: redactUrl(this.o.redis), host: this.o.host, roles: this.o.roles, cpus: this.o.cpus, gpus: this.o.gpus }, "agent registered");
  }

  private async readiness(): Promise<string | null> {
    if (!this.redis || this.redis.status !== "ready") return `redis ${this.redis?.status ?? "not connected"}`;
    if (!this.registered) return "not registered";
    return null;
  }

  private async register(): Promise<void> {
    const r = this.redis!;
    await r
      .multi()
      .hset(this.keys.agent(this.id), {
        id: this.id,
        name: this.o.name,
        host: this.o.host,
        pid: process.pid,
        cpus: this.o.cpus,
        gpus: this.o.gpus,
        roles: this.o.roles.join(","),
        job: "",
        task: "",
        startedAt: Date.now(),
      })
      .zadd(this.keys.agents, Date.now(), this.id)
      .publish(this.keys.wakeChannel, "agent")
      .exec();
    this.registered = true;
  }

  private busyGauge(busy: boolean): void {
    (this.registry.getSingleMetric("ps_train_agent_busy") as Gauge | undefined)?.set(busy ? 1 : 0);
  }

  private async beat(): Promise<void> {
    if (this.stopping || !this.redis) return;
    try {
      const res = await this.redis.multi().hget(this.keys.agent(this.id), "job").zadd(this.keys.agents, Date.now(), this.id).exec();
      const job = res?.[0]?.[1] as string | null | undefined;
      if (job === null || job === undefined) {
        // The pool dropped us (we were silent too long): whatever we ran was given up, so start clean.
        this.o.log.warn("dropped from the pool (missed heartbeats): killing tasks and registering again");
        this.killWhere(() => true);
        await this.register();
        return;
      }
      this.busyGauge(job !== "");
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, "heartbeat failed");
    }
  }

  private async readInbox(): Promise<void> {
    while (!this.stopping) {
      let item: [string, string] | null;
      try {
        item = await this.blocking!.blpop(this.keys.inbox(this.id), 1);
      } catch (err) {
        if (this.stopping) return;
        this.o.log.warn({ err: (err as Error).message }, "inbox read failed");
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      if (!item) continue;
      let cmd: AgentCommand;
      try {
        cmd = JSON.parse(item[1]) as AgentCommand;
      } catch {
        this.o.log.warn({ item: item[1].slice(0, 200) }, "ignored a malformed inbox message");
        continue;
      }
      try {
        await this.handle(cmd);
      } catch (err) {
        this.o.log.error({ err: (err as Error).message, cmd }, "command failed");
      }
    }
  }

  private async handle(cmd: AgentCommand): Promise<void> {
    if (cmd.type === "kill") {
      const one = cmd.role !== undefined && cmd.rank !== undefined;
      const n = this.killWhere((c) => c.job === cmd.job && c.attempt === cmd.attempt && (!one || (c.role === cmd.role && c.rank === cmd.rank)));
      this.o.log.info({ job: cmd.job, attempt: cmd.attempt, ...(one ? { task: taskName({ role: cmd.role!, rank: cmd.rank! }) } : {}), killed: n }, "kill");
      return;
    }
    if (cmd.type !== "task") return;
    // A restarted shard or a replacement worker is a new incarnation of the same task.
    const key = `${cmd.job}#${cmd.attempt}/${cmd.role}:${cmd.rank}.${cmd.incarnation ?? 0}`;
    // Idempotent: a re-sent task (a scheduler that restarted, a retried push) starts nothing new.
    if (this.seen.has(key)) return;
    this.seen.add(key);
    if (this.seen.size > 10_000) this.seen.delete(this.seen.values().next().value!);
    await this.spawnTask(cmd, key);
  }

  private async spawnTask(cmd: Extract<AgentCommand, { type: "task" }>, key: string): Promise<void> {
    const dir = resolve(this.o.runsDir, cmd.job, `a${cmd.attempt}`);
    mkdirSync(dir, { recursive: true });
    const incarnation = cmd.incarnation ?? 0;
    const log = join(dir, taskLogName(cmd.role, cmd.rank, incarnation));
    const env: NodeJS.ProcessEnv = { ...process.env, PS_TRAIN_BIND_HOST: this.o.host };
    let args: string[];
    if (cmd.role === "coordinator") {
      args = [COORDINATOR_MAIN, "--redis", this.o.redis, "--prefix", this.o.prefix, "--job", cmd.job, "--attempt", String(cmd.attempt), "--agent", this.id, "--runs-dir", resolve(this.o.runsDir), "--agent-ttl-ms", String(cmd.agentTtlMs ?? 10_000)];
    } else {
      for (const [k, v] of Object.entries(TUNED_MALLOC_ENV)) env[k] ??= v;
      if (!cmd.coordinator) throw new Error(`task ${key} has no coordinator endpoint`);
      // A shard's checkpoints stay on this agent, where its restarts run (docs/reliability.md).
      args = [ROLE_MAIN, "--role", cmd.role, "--rank", String(cmd.rank), "--coordinator", cmd.coordinator, "--timeout-ms", String(cmd.timeoutMs ?? 30000), "--checkpoint-root", dir];
    }
    const nodeArgs = (process.env["PS_TRAIN_NODE_ARGS"] ?? "").split(" ").filter(Boolean);
    const fd = openSync(log, "a");
    const proc = spawn(process.execPath, [...nodeArgs, ...args], { stdio: ["ignore", fd, fd, "ipc"], env });
    closeSync(fd);
    const child: Child = { key, job: cmd.job, attempt: cmd.attempt, role: cmd.role, rank: cmd.rank, incarnation, proc, log };
    this.children.set(key, child);
    this.mTasks.labels(cmd.role).inc();
    this.mRunning.labels(cmd.role).inc();
    this.o.log.info({ job: cmd.job, attempt: cmd.attempt, task: taskName(cmd), incarnation, pid: proc.pid }, "task started");
    proc.on("error", (err) => this.o.log.error({ err: err.message, task: key }, "task could not start"));
    proc.once("exit", (code, signal) => void this.onExit(child, code, signal));
    await this.report({ type: "started", role: cmd.role, rank: cmd.rank, incarnation, agent: this.id, host: this.o.host, pid: proc.pid, t: Date.now() }, cmd.job, cmd.attempt);
  }

  private async onExit(c: Child, code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    this.children.delete(c.key);
    this.mRunning.labels(c.role).dec();
    this.mExits.labels(c.role, signal ? "killed" : code === 0 ? "ok" : "failed").inc();
    this.o.log.info({ job: c.job, attempt: c.attempt, task: taskName(c), code, signal }, "task exited");
    if (!this.redis) return;
    // The log goes up before the exit is reported, so whoever reads the exit finds the log there.
    const rel = `logs/${taskLogName(c.role, c.rank, c.incarnation)}`;
    try {
      const data = readFileSync(c.log);
      await this.redis.hset(this.keys.files(c.job, c.attempt), rel, data.byteLength > 8 << 20 ? data.subarray(data.byteLength - (8 << 20)) : data);
    } catch {
      // no log (the process never wrote one)
    }
    await this.report(
      { type: "exit", role: c.role, rank: c.rank, incarnation: c.incarnation, agent: this.id, host: this.o.host, pid: c.proc.pid, t: Date.now(), code, signal, last: lastLogLine(c.log) },
      c.job,
      c.attempt,
    );
  }

  private async report(ev: TaskEvent, job: string, attempt: number): Promise<void> {
    try {
      await this.redis!.multi().rpush(this.keys.events(job, attempt), JSON.stringify(ev)).publish(this.keys.wakeChannel, "event").exec();
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, "could not report a task event");
    }
  }

  private killWhere(pred: (c: Child) => boolean): number {
    let n = 0;
    for (const c of this.children.values()) {
      if (pred(c) && c.proc.exitCode === null && c.proc.signalCode === null) {
        c.proc.kill("SIGKILL");
        n++;
      }
    }
    return n;
  }

  /** Leave the pool at once (so running gangs fail over now, not after the heartbeat timeout). */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.killWhere(() => true);
    const deadline = Date.now() + 3000;
    while (this.children.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (this.redis) {
      await this.redis
        .multi()
        .zrem(this.keys.agents, this.id)
        .del(this.keys.agent(this.id), this.keys.inbox(this.id))
        .publish(this.keys.wakeChannel, "agent")
        .exec()
        .catch(() => undefined);
    }
    this.blocking?.disconnect();
    await this.inboxLoop?.catch(() => undefined);
    await this.health?.close();
    this.redis?.disconnect();
  }
}

/** The last line of a task's log (its message, for a JSON log line). */
export function lastLogLine(file: string): string {
  try {
    const text = readFileSync(file, "utf8").trim();
    if (!text) return "";
    let last = text.split("\n").slice(-1)[0] ?? "";
    try {
      const rec = JSON.parse(last) as { msg?: unknown };
      if (typeof rec.msg === "string") last = rec.msg;
    } catch {
      // not a JSON line: quote it as it is
    }
    return last.slice(0, 300);
  } catch {
    return "";
  }
}

export function defaultCpus(): number {
  return cpus().length;
}

export function defaultAgentName(): string {
  return hostname();
}
