import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { Queue } from "bullmq";
import type { TrainConfig } from "../../config/train-config.js";
import { ErrorCode, PsError } from "../../util/errors.js";
import { connectRedis } from "./connection.js";
import type { JobData, JobOutcome } from "./job-data.js";
import { downloadRunDir, type JobRecord, parseJobRecord, readJob, TERMINAL_STATES } from "./job-record.js";
import { ClusterKeys } from "./keys.js";

export interface SubmitOptions {
  name: string;
  maxRetries: number;
}

/** `submit`, `jobs`, `job`, `cancel`: the user's side of the cluster. */
export class JobClient {
  private readonly queue: Queue<JobData, JobOutcome>;

  private constructor(
    readonly redis: Redis,
    readonly keys: ClusterKeys,
  ) {
    this.queue = new Queue<JobData, JobOutcome>(ClusterKeys.QUEUE, { connection: redis, prefix: keys.bullPrefix });
  }

  static async connect(url: string, prefix: string, timeoutMs: number): Promise<JobClient> {
    const redis = await connectRedis(url, { timeoutMs, persistent: false, name: "ps-train-client" });
    redis.on("error", () => undefined);
    return new JobClient(redis, new ClusterKeys(prefix));
  }

  /** Writes the job's record, then enqueues it; the id is returned at once. */
  async submit(config: TrainConfig, o: SubmitOptions): Promise<string> {
    const id = `${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
    const submittedAt = Date.now();
    const data: JobData = { config, name: o.name, maxRetries: o.maxRetries, submittedAt };
    await this.redis
      .multi()
      .hset(this.keys.job(id), { id, name: o.name, state: "queued", config: JSON.stringify(config), maxRetries: o.maxRetries, attempt: 0, submittedAt })
      .zadd(this.keys.jobIndex, submittedAt, id)
      .exec();
    try {
      await this.queue.add(o.name || "train", data, { jobId: id });
    } catch (err) {
      await this.redis.multi().del(this.keys.job(id)).zrem(this.keys.jobIndex, id).exec();
      throw err;
    }
    return id;
  }

  async get(id: string): Promise<JobRecord> {
    const rec = await readJob(this.redis, this.keys, id);
    if (!rec) throw new PsError(ErrorCode.NO_JOB, `no job ${JSON.stringify(id)} (see ps-train jobs)`);
    return rec;
  }

  /** The newest `limit` jobs, newest first; index entries of expired jobs are dropped. */
  async list(limit: number): Promise<JobRecord[]> {
    const ids = await this.redis.zrevrange(this.keys.jobIndex, 0, limit - 1);
    const p = this.redis.pipeline();
    for (const id of ids) p.hgetall(this.keys.job(id));
    const res = (await p.exec()) ?? [];
    const out: JobRecord[] = [];
    const gone: string[] = [];
    res.forEach(([, h], i) => {
      const rec = parseJobRecord((h ?? {}) as Record<string, string>);
      if (rec) out.push(rec);
      else gone.push(ids[i]!);
    });
    if (gone.length > 0) await this.redis.zrem(this.keys.jobIndex, ...gone);
    return out;
  }

  /** Asks for the job to stop. A queued job is removed at once; a running one's gang is killed by the scheduler. */
  async cancel(id: string): Promise<JobRecord> {
    const rec = await this.get(id);
    if (TERMINAL_STATES.has(rec.state)) return rec;
    await this.redis.hset(this.keys.job(id), "cancel", "1");
    const job = await this.queue.getJob(id);
    let removed = false;
    if (job && (await job.isWaiting())) {
      try {
        await job.remove();
        removed = true;
      } catch {
        // taken by a scheduler meanwhile: it sees the cancel flag
      }
    }
    if (removed || !job) {
      const now = Date.now();
      await this.redis.eval(
        "if redis.call('HGET', KEYS[1], 'state') == 'queued' then redis.call('HSET', KEYS[1], 'state', 'cancelled', 'error', 'cancelled', 'finishedAt', ARGV[1]) end return 1",
        1,
        this.keys.job(id),
        now,
      );
    }
    await this.redis.publish(this.keys.wakeChannel, "cancel");
    return this.get(id);
  }

  /**
   * Polls the job until it ends; `onUpdate` sees every change. The deadline is the caller's
   * (--wait-timeout-ms): past it this rejects and the job keeps going.
   */
  async follow(id: string, timeoutMs: number, onUpdate: (rec: JobRecord) => void): Promise<JobRecord> {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    for (;;) {
      const rec = await this.get(id);
      const sig = `${rec.state}|${rec.attempt}|${JSON.stringify(rec.progress)}|${rec.error}`;
      if (sig !== last) {
        last = sig;
        onUpdate(rec);
      }
      if (TERMINAL_STATES.has(rec.state)) return rec;
      if (Date.now() > deadline) throw new PsError(ErrorCode.TIMEOUT, `job ${id} is still ${rec.state} after ${timeoutMs} ms (it keeps going: ps-train job ${id})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Writes the run directory of the job's last attempt (config.json, metrics, summary, model, logs) under `out`. */
  async download(rec: JobRecord, out: string): Promise<string[]> {
    const attempt = rec.filesAttempt || rec.attempt;
    if (attempt < 1) return [];
    return downloadRunDir(this.redis, this.keys.files(rec.id, attempt), out);
  }

  /** Who would run a job now: schedulers consuming the queue (null where CLIENT LIST is not allowed) and live agents. */
  async pool(agentTtlMs = 10_000): Promise<{ schedulers: number | null; agents: number }> {
    const schedulers = await this.queue.getWorkersCount().catch(() => null);
    const agents = await this.redis.zcount(this.keys.agents, Date.now() - agentTtlMs, "+inf");
    return { schedulers, agents };
  }

  async close(): Promise<void> {
    await this.queue.close().catch(() => undefined);
    this.redis.disconnect();
  }
}
