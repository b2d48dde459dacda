import { readFileSync } from "node:fs";
import type { ConnectionOptions } from "node:tls";
import { Redis } from "ioredis";
import { badOption, ErrorCode, PsError } from "../../util/errors.js";

export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";

/** The Redis password itself (e.g. from a Kubernetes Secret); REDIS_PASSWORD is read too. */
export const REDIS_PASSWORD_ENV = "PS_TRAIN_REDIS_PASSWORD";
/** A file holding the Redis password (--redis-password-file): only its path travels to child processes. */
export const REDIS_PASSWORD_FILE_ENV = "PS_TRAIN_REDIS_PASSWORD_FILE";
/** A PEM file of the CA that signed the Redis server's certificate (--redis-tls-ca), for rediss:// URLs. */
export const REDIS_TLS_CA_ENV = "PS_TRAIN_REDIS_TLS_CA";

function readSecretFile(path: string, flag: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw badOption(`${flag}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

export interface RedisAuth {
  password?: string;
  tls?: ConnectionOptions;
}

/**
 * How to authenticate to and encrypt the connection to `url`: a password in the URL wins, then
 * the file of PS_TRAIN_REDIS_PASSWORD_FILE, then PS_TRAIN_REDIS_PASSWORD, then REDIS_PASSWORD;
 * rediss:// turns on TLS, verified against PS_TRAIN_REDIS_TLS_CA when given (the system CAs
 * otherwise). A file that cannot be read, or a CA for a plain redis:// URL, is PS_ERR_BAD_OPTION.
 */
export function redisAuth(url: string, env: NodeJS.ProcessEnv = process.env): RedisAuth {
  const u = new URL(url);
  const out: RedisAuth = {};
  if (!u.password) {
    const file = env[REDIS_PASSWORD_FILE_ENV];
    // A trailing newline (echo secret > file, a Secret made from a file) is not part of the password.
    const password = file ? readSecretFile(file, "--redis-password-file").replace(/\r?\n$/, "") : env[REDIS_PASSWORD_ENV] || env["REDIS_PASSWORD"];
    if (password) out.password = password;
  }
  const ca = env[REDIS_TLS_CA_ENV];
  if (ca && u.protocol !== "rediss:") throw badOption(`--redis-tls-ca needs a rediss:// URL (got ${redactUrl(url)})`);
  if (u.protocol === "rediss:") out.tls = ca ? { ca: readSecretFile(ca, "--redis-tls-ca") } : {};
  return out;
}

/** An error of Redis that no retry fixes: the password is missing or wrong. */
function authProblem(message: string): boolean {
  return /NOAUTH|WRONGPASS|invalid (username-)?password|AUTH.*(without any password|failed)/i.test(message);
}

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
 * A connected client, or a PsError naming the URL once the deadline passes, or at once when Redis
 * refuses the password. Password and TLS as redisAuth says (the URL carries no password then).
 */
export async function connectRedis(url: string, opts: ConnectOptions): Promise<Redis> {
  checkRedisUrl(url);
  const auth = redisAuth(url);
  const redis = new Redis(url, {
    connectTimeout: Math.min(opts.timeoutMs, 10_000),
    maxRetriesPerRequest: opts.persistent ? null : 1,
    enableOfflineQueue: true,
    connectionName: opts.name,
    ...(auth.password !== undefined ? { password: auth.password } : {}),
    ...(auth.tls !== undefined ? { tls: auth.tls } : {}),
    // keep trying (Redis may start after us, or restart) until the deadline below
    retryStrategy: (times) => Math.min(100 * times, 1000),
  });
  let lastError = "";
  let refused: (e: PsError) => void = () => undefined;
  redis.on("error", (err: Error) => {
    lastError = err.message;
    if (authProblem(err.message)) {
      const how = auth.password !== undefined ? "the password given was refused" : `give the password with --redis-password-file FILE or ${REDIS_PASSWORD_ENV}`;
      refused(new PsError(ErrorCode.REDIS, `Redis at ${redactUrl(url)} refused authentication (${err.message.split("\n")[0]}): ${how}`));
    }
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      new Promise<void>((resolve) => redis.once("ready", () => resolve())),
      new Promise<never>((_, reject) => {
        refused = reject;
      }),
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
