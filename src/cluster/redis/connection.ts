import { Redis } from "ioredis";
import { badOption, ErrorCode, PsError } from "../../util/errors.js";

export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";

/** Checks a --redis value before anything connects: redis:// or rediss://, with a host. */
export function checkRedisUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw badOption(`--redis must be a redis://HOST:PORT[/DB] URL (got ${JSON.stringify(url)})`);
  }
  if ((u.protocol !== "redis:" && u.protocol !== "rediss:") || u.hostname === "") {
    throw badOption(`--redis must be a redis://HOST:PORT[/DB] URL (got ${JSON.stringify(url)})`);
  }
  return url;
}

/** The URL without a password, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url;
  }
}

export interface ConnectOptions {
  /** give up connecting after this long (every wait has a deadline) */
  timeoutMs: number;
  /**
   * Long-running processes (scheduler, agent) keep reconnecting after a Redis restart and never
   * fail a command for lack of a connection (BullMQ needs this); short commands fail fast.
   */
  persistent: boolean;
  name?: string;
}

/**
 * A connected client, or a PsError naming the URL once the deadline passes. REDIS_PASSWORD in
 * the environment (the Kubernetes Secret) is used when the URL carries no password.
 */
export async function connectRedis(url: string, opts: ConnectOptions): Promise<Redis> {
  checkRedisUrl(url);
  const password = process.env["REDIS_PASSWORD"];
  const redis = new Redis(url, {
    connectTimeout: Math.min(opts.timeoutMs, 10_000),
    maxRetriesPerRequest: opts.persistent ? null : 1,
    enableOfflineQueue: true,
    connectionName: opts.name,
    ...(password && !new URL(url).password ? { password } : {}),
    // keep trying (Redis may start after us, or restart) until the deadline below
    retryStrategy: (times) => Math.min(100 * times, 1000),
  });
  let lastError = "";
  redis.on("error", (err: Error) => {
    lastError = err.message;
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      new Promise<void>((resolve) => redis.once("ready", () => resolve())),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new PsError(ErrorCode.REDIS, `cannot reach Redis at ${redactUrl(url)} within ${opts.timeoutMs} ms${lastError ? `: ${lastError}` : ""}`)),
          opts.timeoutMs,
        );
      }),
    ]);
    await redis.ping();
  } catch (err) {
    redis.disconnect();
    if (err instanceof PsError) throw err;
    throw new PsError(ErrorCode.REDIS, `cannot use Redis at ${redactUrl(url)}: ${lastError || (err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
  return redis;
}

/** A second connection for blocking commands (BLPOP), with the same settings. */
export function duplicateBlocking(redis: Redis): Redis {
  const dup = redis.duplicate({ lazyConnect: false, maxRetriesPerRequest: null });
  dup.on("error", () => undefined);
  return dup;
}

/** Resolves with `v` after `ms`, or early when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
