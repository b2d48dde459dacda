import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import type { Redis } from "ioredis";
import { serverShardCount } from "../../pipeline/units.js";
import type { TrainConfig } from "../../config/train-config.js";
import type { Progress, Summary } from "../train-run.js";
import type { ClusterKeys } from "./keys.js";

/**
 * queued: in BullMQ's wait list; waiting: a scheduler holds it and it waits for a gang;
 * starting: a gang is reserved and its tasks are being started; running: every rank started.
 */
export const JOB_STATES = ["queued", "waiting", "starting", "running", "succeeded", "failed", "cancelled"] as const;
export type JobState = (typeof JOB_STATES)[number];
export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(["succeeded", "failed", "cancelled"]);

export type TaskRole = "coordinator" | "server" | "worker";

export interface Task {
  role: TaskRole;
  rank: number;
}

/** One member of a reserved gang: which agent runs which task. */
export interface GangMember extends Task {
  agent: string;
}

export interface AttemptError {
  attempt: number;
  error: string;
  code?: string;
  at: number;
}

export interface JobRecord {
  id: string;
  name: string;
  state: JobState;
  config: TrainConfig;
  maxRetries: number;
  /** 0 before the first gang; then 1, 2, ... */
  attempt: number;
  submittedAt: number;
  startedAt: number | null;
  ranksRunningAt: number | null;
  finishedAt: number | null;
  gang: GangMember[];
  progress: Progress | null;
  summary: Summary | null;
  error: string;
  errors: AttemptError[];
  cancel: boolean;
  /** the attempt whose run directory the files belong to */
  filesAttempt: number;
}

/** What the coordinator task leaves for the scheduler when its run ends. */
export interface AttemptResult {
  status: "ok" | "failed";
  summary?: Summary;
  error?: string;
  code?: string;
  /** whether another attempt could succeed (a lost peer, a timeout) or not (bad input, divergence) */
  retryable?: boolean;
  /** step staleness -> count, from metrics.jsonl (for the Prometheus histogram) */
  stalenessCounts?: Record<string, number>;
}

/** What an agent reports about a task of an attempt. */
export interface TaskEvent extends Task {
  type: "started" | "exit";
  /** 0 for the first process of the task; n for its n-th restart (a shard) or replacement (a worker) */
  incarnation?: number;
  agent: string;
  host: string;
  pid: number | undefined;
  t: number;
  code?: number | null;
  signal?: string | null;
  /** exit: the last line of the task's log */
  last?: string;
}

/**
 * The tasks of a job, in gang order: the coordinator, its server shards (none for --comm
 * allreduce; per stage in a pipeline, see serverShardCount), N workers.
 */
export function gangTasks(config: Pick<TrainConfig, "servers" | "workers"> & Partial<Pick<TrainConfig, "comm" | "parallelism" | "stages" | "adaptive" | "model">>): Task[] {
  const tasks: Task[] = [{ role: "coordinator", rank: 0 }];
  const servers = serverShardCount(config);
  for (let k = 0; k < servers; k++) tasks.push({ role: "server", rank: k });
  for (let w = 0; w < config.workers; w++) tasks.push({ role: "worker", rank: w });
  return tasks;
}

export function taskName(t: Task): string {
  return t.role === "coordinator" ? "coordinator" : t.role === "server" ? `server shard ${t.rank}` : `worker ${t.rank}`;
}

/**
 * The log file of one process of a task, named as a local run names it: `server-0.log`; a
 * shard's n-th restart `server-0-restart-n.log`; a worker's n-th replacement
 * `worker-3-replacement-n.log`.
 */
export function taskLogName(role: TaskRole, rank: number, incarnation = 0): string {
  if (role === "coordinator") return "coordinator.log";
  if (incarnation === 0) return `${role}-${rank}.log`;
  return `${role}-${rank}-${role === "server" ? "restart" : "replacement"}-${incarnation}.log`;
}

export function resultField(attempt: number): string {
  return `result:${attempt}`;
}

function json<T>(text: string | undefined, fallback: T): T {
  if (text === undefined || text === "") return fallback;
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}

function numOrNull(text: string | undefined): number | null {
  return text === undefined || text === "" ? null : Number(text);
}

export function parseJobRecord(h: Record<string, string>): JobRecord | null {
  if (!h["id"] || !h["config"]) return null;
  return {
    id: h["id"],
    name: h["name"] ?? "",
    state: (h["state"] as JobState | undefined) ?? "queued",
    config: json<TrainConfig>(h["config"], {} as TrainConfig),
    maxRetries: Number(h["maxRetries"] ?? 0),
    attempt: Number(h["attempt"] ?? 0),
    submittedAt: Number(h["submittedAt"] ?? 0),
    startedAt: numOrNull(h["startedAt"]),
    ranksRunningAt: numOrNull(h["ranksRunningAt"]),
    finishedAt: numOrNull(h["finishedAt"]),
    gang: json<GangMember[]>(h["gang"], []),
    progress: json<Progress | null>(h["progress"], null),
    summary: json<Summary | null>(h["summary"], null),
    error: h["error"] ?? "",
    errors: json<AttemptError[]>(h["errors"], []),
    cancel: h["cancel"] === "1",
    filesAttempt: Number(h["filesAttempt"] ?? 0),
  };
}

export async function readJob(redis: Redis, keys: ClusterKeys, id: string): Promise<JobRecord | null> {
  return parseJobRecord(await redis.hgetall(keys.job(id)));
}

/** Files bigger than this are cut (a run's metrics.jsonl of a very long run; logs). */
export const MAX_FILE_BYTES = 64 * 1024 * 1024;

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && !name.includes(".tmp-")) out.push(p);
    }
  };
  walk(dir);
  return out;
}

/** Copies a run directory into the attempt's files hash (paths relative to the run directory). */
export async function uploadRunDir(redis: Redis, key: string, dir: string): Promise<number> {
  let n = 0;
  for (const file of listFiles(dir)) {
    const rel = relative(dir, file).split(sep).join("/");
    await uploadFile(redis, key, rel, file);
    n++;
  }
  return n;
}

export async function uploadFile(redis: Redis, key: string, rel: string, file: string): Promise<void> {
  let data = readFileSync(file);
  if (data.byteLength > MAX_FILE_BYTES) data = data.subarray(data.byteLength - MAX_FILE_BYTES);
  await redis.hset(key, rel, data);
}

/**
 * Writes an attempt's files under `out` (the same run directory a local run writes). Paths are
 * checked to stay inside `out`.
 */
export async function downloadRunDir(redis: Redis, key: string, out: string): Promise<string[]> {
  const files = await redis.hgetallBuffer(key);
  const root = resolve(out);
  const written: string[] = [];
  for (const [rel, data] of Object.entries(files)) {
    const dest = resolve(root, rel);
    if (!dest.startsWith(root + sep)) continue;
    mkdirSync(dirname(dest), { recursive: true });
    writeFileSync(dest, data);
    written.push(rel);
  }
  mkdirSync(root, { recursive: true });
  return written.sort();
}
