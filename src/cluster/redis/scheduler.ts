import type { Redis } from "ioredis";
import { type Job, Queue, UnrecoverableError, WaitingError, Worker } from "bullmq";
import type { Logger } from "pino";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { AgentCommand } from "./agent.js";
import { connectRedis, duplicateBlocking, redactUrl } from "./connection.js";
import { HealthServer } from "./health-server.js";
import type { JobData, JobOutcome } from "./job-data.js";
import { type AttemptError, type AttemptResult, type GangMember, gangTasks, type JobRecord, readJob, resultField, type TaskEvent, taskName } from "./job-record.js";
import { ClusterKeys } from "./keys.js";
import { ClusterScripts } from "./scripts.js";

export interface SchedulerOptions {
  redis: string;
  prefix: string;
  /** jobs in flight at once (waiting for a gang or running) */
  maxJobs: number;
  /** an agent silent for this long is dropped from the pool */
  agentTtlMs: number;
  /** BullMQ lock: a scheduler that dies holding a job gives it up after this long */
  lockMs: number;
  /** how long the job at the head of the line may wait for enough agents before it fails */
  gangTimeoutMs: number;
  /** how long finished jobs' records and run directories are kept in Redis */
  keepSeconds: number;
  metricsPort: number | null;
  connectTimeoutMs: number;
  log: Logger;
}

type Outcome = { kind: "ok"; result: AttemptResult } | { kind: "cancelled" } | { kind: "failed"; error: string; code?: string; retryable: boolean };

class HandOver extends Error {}

/**
 * The scheduler: a BullMQ worker on the jobs queue. For each job it waits (in submit order) until
 * a whole gang of idle agents can be reserved at once, hands the coordinator task to the gang's
 * first agent, and supervises the attempt until the coordinator reports its result. A lost agent or
 * a failed attempt is retried on a fresh gang up to the job's maxRetries. Every decision is a
 * compare-and-set in Redis, so a job whose scheduler restarts (or that BullMQ runs twice) is picked
 * up where it was: waiting, or supervising the gang that is still running.
 */
export class Scheduler {
  readonly keys: ClusterKeys;
  private redis: Redis | null = null;
  private sub: Redis | null = null;
  private scripts: ClusterScripts | null = null;
  private worker: Worker<JobData, JobOutcome> | null = null;
  private queue: Queue<JobData, JobOutcome> | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  private closing = false;
  private wakers: (() => void)[] = [];
  private health: HealthServer | null = null;
  /** job id -> its state, for the jobs this scheduler holds */
  private readonly held = new Map<string, string>();
  readonly registry = new Registry();
  private readonly m: ReturnType<Scheduler["makeMetrics"]>;

  constructor(private readonly o: SchedulerOptions) {
    this.keys = new ClusterKeys(o.prefix);
    this.m = this.makeMetrics();
  }

  private makeMetrics() {
    const r = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "ps_train_scheduler_" });
    new Gauge({
      name: "ps_train_queue_jobs",
      help: "Jobs in the BullMQ queue by BullMQ state (wait = queue depth)",
      labelNames: ["state"],
      registers: r,
      collect: async function (this: Gauge) {
        const q = schedulerQueue.get(this);
        if (!q) return;
        const counts = await q.getJobCounts("wait", "active", "delayed", "prioritized", "completed", "failed");
        for (const [state, n] of Object.entries(counts)) this.labels(state).set(n);
      },
    });
    new Gauge({
      name: "ps_train_agents",
      help: "Agents in the pool by state: idle, busy (in a gang)",
      labelNames: ["state"],
      registers: r,
      collect: async function (this: Gauge) {
        const s = schedulerOf.get(this);
        if (!s) return;
        const { idle, busy } = await s.agentCounts();
        this.labels("idle").set(idle);
        this.labels("busy").set(busy);
      },
    });
    new Gauge({
      name: "ps_train_jobs_held",
      help: "Jobs this scheduler holds, by job state (waiting for a gang, starting, running)",
      labelNames: ["state"],
      registers: r,
      collect: function (this: Gauge) {
        const s = schedulerOf.get(this);
        if (!s) return;
        this.reset();
        const n: Record<string, number> = { waiting: 0, starting: 0, running: 0 };
        for (const st of s.held.values()) n[st] = (n[st] ?? 0) + 1;
        for (const [st, v] of Object.entries(n)) this.labels(st).set(v);
      },
    });
    const metrics = {
      agentsLost: new Counter({ name: "ps_train_agents_lost_total", help: "Agents dropped from the pool for missing heartbeats", registers: r }),
      finished: new Counter({ name: "ps_train_jobs_finished_total", help: "Jobs finished, by outcome (succeeded, failed, cancelled)", labelNames: ["outcome"], registers: r }),
      attemptsFailed: new Counter({ name: "ps_train_job_attempts_failed_total", help: "Attempts that failed (each retried one counts)", labelNames: ["retried"], registers: r }),
      gangWait: new Histogram({ name: "ps_train_gang_wait_seconds", help: "Seconds a job waited in line for its gang", buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200], registers: r }),
      startLatency: new Histogram({ name: "ps_train_job_start_seconds", help: "Seconds from a gang's reservation to all its ranks running", buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60], registers: r }),
      duration: new Histogram({ name: "ps_train_job_duration_seconds", help: "Seconds from submit to the end, per finished job", buckets: [1, 5, 15, 60, 300, 1800, 7200, 28800], registers: r }),
      step: new Gauge({ name: "ps_train_job_global_step", help: "Global step of a running job", labelNames: ["job"], registers: r }),
      sps: new Gauge({ name: "ps_train_job_samples_per_second", help: "Training samples/s of a running job", labelNames: ["job"], registers: r }),
      loss: new Gauge({ name: "ps_train_job_loss", help: "Smoothed training loss of a running job", labelNames: ["job"], registers: r }),
      steps: new Counter({ name: "ps_train_steps_total", help: "Global steps of succeeded jobs", registers: r }),
      samples: new Counter({ name: "ps_train_samples_total", help: "Training samples of succeeded jobs", registers: r }),
      bytes: new Counter({ name: "ps_train_bytes_total", help: "Bytes pushed and pulled in succeeded jobs, by role and direction", labelNames: ["role", "direction"], registers: r }),
      staleness: new Histogram({ name: "ps_train_staleness", help: "Staleness of each worker step (clocks), succeeded jobs", buckets: [0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64], registers: r }),
    };
    return metrics;
  }

  async start(): Promise<void> {
    const o = this.o;
    this.redis = await connectRedis(o.redis, { timeoutMs: o.connectTimeoutMs, persistent: true, name: "ps-train-scheduler" });
    this.redis.on("error", (err: Error) => o.log.warn({ err: err.message }, "redis connection error"));
    this.scripts = new ClusterScripts(this.redis);
    this.sub = duplicateBlocking(this.redis);
    await this.sub.subscribe(this.keys.wakeChannel);
    this.sub.on("message", () => this.wakeAll());
    this.queue = new Queue<JobData, JobOutcome>(ClusterKeys.QUEUE, { connection: this.redis, prefix: this.keys.bullPrefix });
    for (const g of this.registry.getMetricsAsArray()) {
      schedulerOf.set(g as unknown as Gauge, this);
      schedulerQueue.set(g as unknown as Gauge, this.queue);
    }
    if (o.metricsPort !== null) {
      this.health = new HealthServer(this.registry, () => this.readiness());
      const port = await this.health.listen(o.metricsPort);
      o.log.info({ port }, "serving /healthz /readyz /metrics");
    }
    this.sweeper = setInterval(() => void this.sweep(), Math.max(200, Math.min(1000, o.agentTtlMs / 3)));
    this.worker = new Worker<JobData, JobOutcome>(ClusterKeys.QUEUE, (job, token) => this.process(job, token), {
      connection: this.redis.duplicate({ maxRetriesPerRequest: null }),
      prefix: this.keys.bullPrefix,
      concurrency: o.maxJobs,
      lockDuration: o.lockMs,
      stalledInterval: o.lockMs,
      // The handler is idempotent: a job whose scheduler died is simply picked up again.
      maxStalledCount: 1000,
      removeOnComplete: { age: o.keepSeconds },
      removeOnFail: { age: o.keepSeconds },
    });
    this.worker.on("error", (err) => o.log.warn({ err: err.message }, "queue worker error"));
    await this.worker.waitUntilReady();
    o.log.info({ redis: redactUrl(o.redis), prefix: o.prefix, maxJobs: o.maxJobs, agentTtlMs: o.agentTtlMs }, "scheduler ready");
  }

  private async readiness(): Promise<string | null> {
    if (!this.redis || this.redis.status !== "ready") return `redis ${this.redis?.status ?? "not connected"}`;
    if (!this.worker?.isRunning()) return "queue worker not running";
    if (this.closing) return "shutting down";
    return null;
  }

  async agentCounts(): Promise<{ idle: number; busy: number }> {
    const r = this.redis!;
    const ids = await r.zrangebyscore(this.keys.agents, Date.now() - this.o.agentTtlMs, "+inf");
    if (ids.length === 0) return { idle: 0, busy: 0 };
    const p = r.pipeline();
    for (const id of ids) p.hget(this.keys.agent(id), "job");
    const res = (await p.exec()) ?? [];
    let idle = 0;
    let busy = 0;
    for (const [, job] of res) {
      if (job === null || job === undefined) continue;
      if (job === "") idle++;
      else busy++;
    }
    return { idle, busy };
  }

  /** Drop agents that stopped heartbeating: their gangs fail over, and they leave the pool. */
  private async sweep(): Promise<void> {
    try {
      const r = this.redis!;
      const dead = await r.zrangebyscore(this.keys.agents, "-inf", Date.now() - this.o.agentTtlMs);
      for (const id of dead) {
        const removed = await r.zrem(this.keys.agents, id);
        if (removed === 0) continue;
        const info = await r.hgetall(this.keys.agent(id));
        await r.del(this.keys.agent(id), this.keys.inbox(id));
        this.m.agentsLost.inc();
        this.o.log.warn({ agent: id, host: info["host"], job: info["job"] || undefined }, "agent lost (no heartbeat): dropped from the pool");
      }
      if (dead.length > 0) this.wakeAll();
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, "sweep failed");
    }
  }

  private wakeAll(): void {
    for (const w of this.wakers.splice(0)) w();
  }

  /** Until something changes in the cluster (pub/sub wake) or `ms` passes. */
  private napping(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wakers.push(done);
    });
  }

  private async handOver(job: Job<JobData, JobOutcome>, token: string | undefined): Promise<never> {
    await job.moveToWait(token);
    throw new WaitingError();
  }

  private async ensureRecord(job: Job<JobData, JobOutcome>): Promise<void> {
    const id = job.id!;
    const key = this.keys.job(id);
    const d = job.data;
    // Submit writes the record first; a job queued some other way gets one here (no overwrite).
    const created = await this.redis!.hsetnx(key, "id", id);
    if (created === 1) {
      await this.redis!.hset(key, {
        name: d.name ?? "",
        state: "queued",
        config: JSON.stringify(d.config),
        maxRetries: d.maxRetries ?? 0,
        attempt: 0,
        submittedAt: d.submittedAt ?? job.timestamp,
      });
      await this.redis!.zadd(this.keys.jobIndex, d.submittedAt ?? job.timestamp, id);
    }
  }

  private async process(job: Job<JobData, JobOutcome>, token: string | undefined): Promise<JobOutcome> {
    const id = job.id!;
    try {
      await this.ensureRecord(job);
      let transient = 0;
      for (;;) {
        const rec = await readJob(this.redis!, this.keys, id);
        if (!rec) throw new UnrecoverableError(`job ${id} has no record in Redis`);
        this.held.set(id, rec.state);
        if (rec.state === "succeeded") {
          const s = rec.summary;
          return { state: "succeeded", attempt: rec.attempt, testAccuracy: s?.testAccuracy ?? NaN, testLoss: s?.testLoss ?? NaN, wallSeconds: s?.wallSeconds ?? NaN };
        }
        if (rec.state === "failed" || rec.state === "cancelled") throw new UnrecoverableError(rec.error || rec.state);
        if (this.closing) await this.handOver(job, token);
        try {
          if (rec.state === "queued" || rec.state === "waiting") {
            if (rec.cancel) {
              await this.finish(rec, { kind: "cancelled" }, ["queued", "waiting"]);
              continue;
            }
            await this.waitForGang(rec);
          } else {
            await this.supervise(rec);
          }
          transient = 0;
        } catch (err) {
          // A Redis hiccup (a restart, a dropped connection) must not fail the job: every step
          // above starts from the record, so going round again resumes where it was.
          if (err instanceof HandOver || ++transient > 30) throw err;
          this.o.log.warn({ job: id, err: (err as Error).message }, "error while handling a job; retrying in 1 s");
          await this.napping(1000);
        }
      }
    } catch (err) {
      if (err instanceof HandOver) await this.handOver(job, token);
      throw err;
    } finally {
      this.held.delete(id);
    }
  }

  private async waitForGang(rec: JobRecord): Promise<void> {
    const r = this.redis!;
    const id = rec.id;
    const attempt = rec.attempt + 1;
    const key = this.keys.job(id);
    await this.scripts!.transition(key, ["queued", "waiting"], null, { state: "waiting", waitingSince: Date.now() });
    await r.zadd(this.keys.gangQueue, "NX", rec.submittedAt, id);
    this.held.set(id, "waiting");
    const tasks = gangTasks(rec.config).map((t) => `${t.role}:${t.rank}`);
    const servers = tasks.filter((t) => t.startsWith("server:")).length;
    const need = `${tasks.length} agents (coordinator + ${servers} server${servers === 1 ? "" : "s"} + ${rec.config.workers} worker${rec.config.workers > 1 ? "s" : ""})`;
    const t0 = Date.now();
    let headSince: number | null = null;
    let lastNote = "";
    for (;;) {
      if (this.closing) throw new HandOver();
      if ((await r.hget(key, "cancel")) === "1") return;
      const res = await this.scripts!.reserveGang(
        { agents: this.keys.agents, gangQueue: this.keys.gangQueue, job: key, agentPrefix: this.keys.agentPrefix, jobPrefix: this.keys.jobPrefix },
        id,
        attempt,
        tasks,
        this.o.agentTtlMs,
      );
      const [what, ...rest] = res;
      let note: string;
      if (what === "ok") {
        this.m.gangWait.observe((Date.now() - t0) / 1000);
        this.o.log.info({ job: id, attempt, agents: rest }, "gang reserved");
        await r.hset(key, "waitingFor", "");
        const cmd: AgentCommand = { type: "task", job: id, attempt, role: "coordinator", rank: 0, agentTtlMs: this.o.agentTtlMs };
        await r.rpush(this.keys.inbox(rest[0]!), JSON.stringify(cmd));
        return;
      }
      if (what === "absent") {
        const now = await readJob(r, this.keys, id);
        if (!now || now.state !== "waiting") return; // another holder of this job moved it on
        await r.zadd(this.keys.gangQueue, "NX", rec.submittedAt, id);
        continue;
      }
      if (what === "behind") {
        headSince = null;
        note = `in line behind job ${rest[0]}`;
      } else {
        headSince ??= Date.now();
        const alive = await r.zcount(this.keys.agents, Date.now() - this.o.agentTtlMs, "+inf");
        note = `needs ${need}; ${rest[0]} idle of ${alive} alive agents (none left for ${rest[1]?.replace(":", " ")})`;
        if (Date.now() - headSince > this.o.gangTimeoutMs) {
          await r.zrem(this.keys.gangQueue, id);
          await this.finish(rec, { kind: "failed", error: `no gang within ${this.o.gangTimeoutMs} ms: ${note}`, retryable: false }, ["waiting"], true);
          return;
        }
      }
      if (note !== lastNote) {
        lastNote = note;
        await r.hset(key, "waitingFor", note);
        this.o.log.info({ job: id, attempt }, `waiting: ${note}`);
      }
      await this.napping(500);
    }
  }

  /** Watch one attempt until its coordinator reports, an agent is lost, or the job is cancelled. */
  private async supervise(rec: JobRecord): Promise<void> {
    const r = this.redis!;
    const id = rec.id;
    const attempt = rec.attempt;
    const key = this.keys.job(id);
    const gang = rec.gang;
    const coordinator = gang[0];
    if (!coordinator) {
      await this.endAttempt(rec, { kind: "failed", error: `attempt ${attempt} has no gang`, retryable: true });
      return;
    }
    const hbLimit = Math.max(30_000, 2 * rec.config.timeoutMs);
    const startLimit = rec.config.timeoutMs + 10_000 + this.o.agentTtlMs;
    const t0 = Date.now();
    const started = new Set<string>();
    let cursor = 0;
    let coordinatorExit: TaskEvent | null = null;
    let exitSeenAt = 0;
    let resultSeenAt = 0;
    let pushed = false;
    this.held.set(id, rec.state);
    for (;;) {
      const events = await r.lrange(this.keys.events(id, attempt), cursor, -1);
      cursor += events.length;
      for (const text of events) {
        const ev = JSON.parse(text) as TaskEvent;
        if (ev.type === "started") {
          started.add(`${ev.role}:${ev.rank}`);
          if (started.size === gang.length) {
            const ok = await this.scripts!.transition(key, ["starting"], attempt, { state: "running", ranksRunningAt: ev.t });
            if (ok) {
              this.m.startLatency.observe((ev.t - (rec.startedAt ?? ev.t)) / 1000);
              this.o.log.info({ job: id, attempt, seconds: (ev.t - (rec.startedAt ?? ev.t)) / 1000 }, "all ranks running");
            }
            this.held.set(id, "running");
          }
        } else if (ev.role === "coordinator") {
          coordinatorExit = ev;
          exitSeenAt ||= Date.now();
        }
      }
      if (!pushed && !started.has("coordinator:0") && rec.state === "starting") {
        // A scheduler that restarted may not know whether the task reached the agent: resend it (the agent ignores a duplicate).
        const cmd: AgentCommand = { type: "task", job: id, attempt, role: "coordinator", rank: 0, agentTtlMs: this.o.agentTtlMs };
        await r.rpush(this.keys.inbox(coordinator.agent), JSON.stringify(cmd));
        pushed = true;
      }
      const [cancel, resultText, hb, progress] = await r.hmget(key, "cancel", resultField(attempt), `hb:${attempt}`, "progress");
      if (progress) this.observeProgress(id, progress);
      let outcome: Outcome | null;
      const result = resultText ? (JSON.parse(resultText) as AttemptResult) : null;
      if (result) resultSeenAt ||= Date.now();
      if (cancel === "1") outcome = { kind: "cancelled" };
      else if (result && (coordinatorExit || Date.now() - resultSeenAt > 5000)) {
        outcome =
          result.status === "ok"
            ? { kind: "ok", result }
            : { kind: "failed", error: result.error ?? "the coordinator reported a failure", retryable: result.retryable ?? true, ...(result.code ? { code: result.code } : {}) };
      } else if (coordinatorExit && !result && Date.now() - exitSeenAt > 1000) {
        const how = coordinatorExit.signal ? `was killed by ${coordinatorExit.signal}` : `exited with code ${coordinatorExit.code}`;
        outcome = { kind: "failed", error: `the coordinator (pid ${coordinatorExit.pid} on agent ${coordinatorExit.agent}) ${how}${coordinatorExit.last ? `; last log line: ${coordinatorExit.last}` : ""}`, retryable: true };
      } else {
        // Under --on-worker-failure shrink the coordinator goes on without a worker whose agent is lost.
        const needed = rec.config.onWorkerFailure === "shrink" ? gang.filter((g) => g.role !== "worker") : gang;
        outcome = await this.lostAgent(needed, `${id}#${attempt}`);
        if (!outcome && !started.has("coordinator:0") && Date.now() - t0 > startLimit) {
          outcome = { kind: "failed", error: `agent ${coordinator.agent} did not start the coordinator within ${startLimit} ms`, retryable: true };
        }
        if (!outcome && started.has("coordinator:0") && hb && Date.now() - Number(hb) > hbLimit) {
          outcome = { kind: "failed", error: `the coordinator on agent ${coordinator.agent} stopped reporting for ${Date.now() - Number(hb)} ms`, retryable: true };
        }
      }
      if (outcome) {
        await this.endAttempt(rec, outcome);
        return;
      }
      if (this.closing) throw new HandOver();
      await this.napping(250);
    }
  }

  /** A gang member that left the pool, stopped heartbeating, or was re-registered fresh. */
  private async lostAgent(gang: GangMember[], tag: string): Promise<Outcome | null> {
    const r = this.redis!;
    const scores = await r.zmscore(this.keys.agents, ...gang.map((g) => g.agent));
    const p = r.pipeline();
    for (const g of gang) p.hget(this.keys.agent(g.agent), "job");
    const jobs = (await p.exec()) ?? [];
    const now = Date.now();
    for (let i = 0; i < gang.length; i++) {
      const g = gang[i]!;
      const seen = scores[i];
      const holds = jobs[i]?.[1];
      if (seen === null || seen === undefined || holds === null || holds === undefined) {
        return { kind: "failed", error: `agent ${g.agent} running ${taskName(g)} was lost (dropped from the pool after missing heartbeats)`, retryable: true };
      }
      if (now - Number(seen) > this.o.agentTtlMs) {
        return { kind: "failed", error: `agent ${g.agent} running ${taskName(g)} sent no heartbeat for ${now - Number(seen)} ms`, retryable: true };
      }
      if (holds !== tag) return { kind: "failed", error: `agent ${g.agent} running ${taskName(g)} left the gang (it restarted)`, retryable: true };
    }
    return null;
  }

  private observeProgress(id: string, text: string): void {
    try {
      const p = JSON.parse(text) as { globalStep: number; samplesPerSecond: number; loss: number };
      this.m.step.labels(id).set(p.globalStep);
      this.m.sps.labels(id).set(p.samplesPerSecond);
      if (Number.isFinite(p.loss)) this.m.loss.labels(id).set(p.loss);
    } catch {
      // a progress record from another version: skip
    }
  }

  /** Kill and release the gang, then succeed, retry or fail the job (compare-and-set on the attempt). */
  private async endAttempt(rec: JobRecord, outcome: Outcome): Promise<void> {
    const r = this.redis!;
    const id = rec.id;
    const attempt = rec.attempt;
    const tag = `${id}#${attempt}`;
    const kill: AgentCommand = { type: "kill", job: id, attempt };
    const agents = [...new Set(rec.gang.map((g) => g.agent))];
    for (const a of agents) await r.rpush(this.keys.inbox(a), JSON.stringify(kill));
    await this.scripts!.releaseGang(this.keys.agentPrefix, tag, agents);
    await r.publish(this.keys.wakeChannel, "released");
    for (const g of [this.m.step, this.m.sps, this.m.loss]) g.remove(id);
    if (outcome.kind === "failed" && outcome.retryable && attempt <= rec.maxRetries) {
      const errors: AttemptError[] = [...rec.errors, { attempt, error: outcome.error, ...(outcome.code ? { code: outcome.code } : {}), at: Date.now() }];
      const ok = await this.scripts!.transition(this.keys.job(id), ["starting", "running"], attempt, {
        state: "waiting",
        error: outcome.error,
        errors: JSON.stringify(errors),
        filesAttempt: attempt,
        waitingSince: Date.now(),
      });
      if (ok) {
        this.m.attemptsFailed.labels("true").inc();
        // Back in line at its original place: a retry goes before jobs submitted after it.
        await r.zadd(this.keys.gangQueue, "NX", rec.submittedAt, id);
        this.o.log.warn({ job: id, attempt, error: outcome.error }, `attempt failed; retrying (${attempt} of ${rec.maxRetries + 1})`);
      }
      return;
    }
    if (outcome.kind === "failed") this.m.attemptsFailed.labels("false").inc();
    await this.finish(rec, outcome, ["starting", "running"]);
  }

  private async finish(rec: JobRecord, outcome: Outcome, from: string[], noAttempt = false): Promise<void> {
    const r = this.redis!;
    const id = rec.id;
    const now = Date.now();
    const fields: Record<string, string | number> = { finishedAt: now };
    if (!noAttempt && rec.attempt > 0) fields["filesAttempt"] = rec.attempt;
    let state: string;
    if (outcome.kind === "ok") {
      state = "succeeded";
      fields["summary"] = JSON.stringify(outcome.result.summary ?? null);
      fields["error"] = "";
    } else if (outcome.kind === "cancelled") {
      state = "cancelled";
      fields["error"] = "cancelled";
    } else {
      state = "failed";
      const attempts = rec.attempt;
      const errors: AttemptError[] = rec.attempt > 0 ? [...rec.errors, { attempt: rec.attempt, error: outcome.error, ...(outcome.code ? { code: outcome.code } : {}), at: now }] : rec.errors;
      fields["errors"] = JSON.stringify(errors);
      fields["error"] = attempts > 1 ? `${outcome.error} (after ${attempts} attempts)` : outcome.error;
    }
    fields["state"] = state;
    const ok = await this.scripts!.transition(this.keys.job(id), from, noAttempt ? null : rec.attempt, fields);
    if (!ok) return;
    await r.zrem(this.keys.gangQueue, id);
    const keep = this.o.keepSeconds;
    const p = r.pipeline().expire(this.keys.job(id), keep);
    for (let a = 1; a <= Math.max(rec.attempt, 1); a++) p.expire(this.keys.events(id, a), keep).expire(this.keys.files(id, a), keep);
    await p.exec();
    this.m.finished.labels(state).inc();
    this.m.duration.observe((now - rec.submittedAt) / 1000);
    if (outcome.kind === "ok") this.observeSummary(outcome.result);
    this.o.log.info({ job: id, attempt: rec.attempt, state, error: fields["error"] || undefined }, `job ${state}`);
  }

  private observeSummary(res: AttemptResult): void {
    const s = res.summary;
    if (s) {
      this.m.steps.inc(s.steps);
      this.m.samples.inc(s.samples);
      this.m.bytes.labels("worker", "sent").inc(s.bytesByRole.worker.sent);
      this.m.bytes.labels("worker", "received").inc(s.bytesByRole.worker.received);
      this.m.bytes.labels("server", "sent").inc(s.bytesByRole.server.sent);
      this.m.bytes.labels("server", "received").inc(s.bytesByRole.server.received);
    }
    for (const [v, n] of Object.entries(res.stalenessCounts ?? {})) for (let i = 0; i < n; i++) this.m.staleness.observe(Number(v));
  }

  /**
   * Stop taking jobs. The jobs held here go back to the queue (their gangs keep running) and the
   * next scheduler picks each up where it was.
   */
  async stop(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.wakeAll();
    if (this.sweeper) clearInterval(this.sweeper);
    await this.worker?.close();
    await this.queue?.close();
    await this.health?.close();
    this.sub?.disconnect();
    this.redis?.disconnect();
  }
}

/** prom-client calls collect() with the metric as `this`: these find the scheduler behind it. */
const schedulerOf = new WeakMap<Gauge, Scheduler>();
const schedulerQueue = new WeakMap<Gauge, Queue<JobData, JobOutcome>>();
