#!/usr/bin/env node
/**
 * The coordinator task of one attempt of a cluster job, started by the agent the gang put it on:
 * the same prepareRun + runLocal as a local run, with role processes started by the gang's agents
 * (RemoteLauncher) and progress, the run directory and the outcome written to Redis.
 *
 *   node coordinator-main.js --redis URL --prefix P --job ID --attempt N --agent ID --runs-dir DIR --agent-ttl-ms MS
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pino } from "pino";
import type { TrainConfig } from "../../config/train-config.js";
import { enableCurveFromEnv } from "../../transport/sockets.js";
import { errorLine, PsError, ErrorCode } from "../../util/errors.js";
import { prepareRun, runLocal, type Progress } from "../train-run.js";
import { connectRedis } from "./connection.js";
import { type AttemptResult, readJob, resultField, uploadRunDir } from "./job-record.js";
import { ClusterKeys } from "./keys.js";
import { RemoteLauncher } from "./remote-launcher.js";

/** Errors another attempt on other agents could get past; bad input and divergence it could not. */
const RETRYABLE: ReadonlySet<string> = new Set([ErrorCode.PEER_LOST, ErrorCode.PROCESS_EXIT, ErrorCode.TIMEOUT]);

function stalenessCounts(metricsFile: string): Record<string, number> {
  const counts: Record<string, number> = {};
  try {
    for (const line of readFileSync(metricsFile, "utf8").split("\n")) {
      if (!line.includes('"type":"step"')) continue;
      const s = (JSON.parse(line) as { staleness?: unknown }).staleness;
      if (typeof s === "number") counts[s] = (counts[s] ?? 0) + 1;
    }
  } catch {
    // no metrics (the run failed before its first step)
  }
  return counts;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      redis: { type: "string" },
      prefix: { type: "string" },
      job: { type: "string" },
      attempt: { type: "string" },
      agent: { type: "string" },
      "runs-dir": { type: "string" },
      "agent-ttl-ms": { type: "string", default: "10000" },
    },
  });
  const attempt = Number(values.attempt);
  const agentTtlMs = Number(values["agent-ttl-ms"]);
  if (!values.redis || !values.prefix || !values.job || !values.agent || !values["runs-dir"] || !(attempt > 0) || !(agentTtlMs > 0)) {
    process.stderr.write("coordinator-main: usage: --redis URL --prefix P --job ID --attempt N --agent ID --runs-dir DIR [--agent-ttl-ms MS]\n");
    return 2;
  }
  const jobId = values.job;
  const log = pino({ base: { role: "coordinator", job: jobId, attempt, pid: process.pid } }, pino.destination({ dest: 2, sync: true }));
  // The agent going away (killed) must end this process too.
  process.on("disconnect", () => process.exit(3));
  const keys = new ClusterKeys(values.prefix);
  const redis = await connectRedis(values.redis, { timeoutMs: 30_000, persistent: true, name: `ps-train-coordinator-${jobId}` });
  redis.on("error", () => undefined);
  const jobKey = keys.job(jobId);
  const rec = await readJob(redis, keys, jobId);
  if (!rec || rec.attempt !== attempt || (rec.state !== "starting" && rec.state !== "running")) {
    log.warn({ state: rec?.state, current: rec?.attempt }, "attempt is no longer current; nothing to do");
    redis.disconnect();
    return 0;
  }
  const hb = setInterval(() => void redis.hset(jobKey, `hb:${attempt}`, Date.now()).catch(() => undefined), 1000);
  hb.unref();
  await redis.hset(jobKey, `hb:${attempt}`, Date.now());

  const out = join(values["runs-dir"], jobId, `a${attempt}`, "run");
  const config: TrainConfig = { ...rec.config, transport: "tcp", out, progress: "off" };
  let lastProgress = 0;
  let pendingProgress: Progress | null = null;
  const pushProgress = (p: Progress) => {
    pendingProgress = p;
    const now = Date.now();
    if (now - lastProgress < 250) return;
    lastProgress = now;
    pendingProgress = null;
    void redis.hset(jobKey, "progress", JSON.stringify(p), "progressAt", now).catch(() => undefined);
  };
  let result: AttemptResult;
  try {
    const prep = await prepareRun(config);
    // The agent's --curve-keys (PS_TRAIN_CURVE_KEYS): this process is the job's coordinator.
    if (await enableCurveFromEnv("coordinator", (msg, fields) => log.warn(fields, msg))) log.info("CURVE on");
    log.info({ mode: config.mode, workers: config.workers, servers: config.servers, backend: prep.backend, out }, "starting run");
    const summary = await runLocal(
      prep,
      { onProgress: pushProgress, log: (msg, fields) => log.debug(fields ?? {}, msg) },
      { launcher: (endpoint, timeoutMs, onExit) => new RemoteLauncher(redis, keys, jobId, attempt, rec.gang, endpoint, timeoutMs, agentTtlMs, onExit) },
    );
    if (pendingProgress) await redis.hset(jobKey, "progress", JSON.stringify(pendingProgress));
    result = { status: "ok", summary, stalenessCounts: stalenessCounts(join(out, "metrics.jsonl")) };
    log.info({ testAccuracy: summary.testAccuracy, wallSeconds: summary.wallSeconds }, "run finished");
  } catch (err) {
    const code = err instanceof PsError ? err.code : undefined;
    const message = errorLine(err).replace(/^ps-train: (PS_ERR_\w+: )?/, "");
    result = { status: "failed", error: message, retryable: code === undefined || RETRYABLE.has(code), ...(code ? { code } : {}) };
    log.error({ code }, `run failed: ${message}`);
  }
  try {
    await uploadRunDir(redis, keys.files(jobId, attempt), out);
  } catch (err) {
    log.warn({ err: (err as Error).message }, "could not upload the run directory");
  }
  await redis.hset(jobKey, resultField(attempt), JSON.stringify(result));
  await redis.publish(keys.wakeChannel, "result");
  clearInterval(hb);
  redis.disconnect();
  return result.status === "ok" ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${errorLine(err)}\n`);
    process.exit(1);
  },
);
