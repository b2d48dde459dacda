import { resolve } from "node:path";
import type { Argv } from "yargs";
import { REDIS_PASSWORD_ENV, REDIS_PASSWORD_FILE_ENV, REDIS_TLS_CA_ENV } from "../cluster/redis/connection.js";
import { badOption } from "../util/errors.js";

/** --redis-password-file and --redis-tls-ca, on every command that talks to Redis. */
export function redisSecurityOptions<T>(y: Argv<T>): Argv<T> {
  return y
    .option("redis-password-file", {
      type: "string",
      requiresArg: true,
      describe: `A file holding the Redis password (requirepass); never put it on the command line`,
      defaultDescription: `$${REDIS_PASSWORD_FILE_ENV}, $${REDIS_PASSWORD_ENV} or none`,
    })
    .option("redis-tls-ca", {
      type: "string",
      requiresArg: true,
      describe: "PEM file of the CA that signed the Redis server's certificate (with a rediss:// URL)",
      defaultDescription: `$${REDIS_TLS_CA_ENV} or the system CAs`,
    });
}

function pathArg(argv: Record<string, unknown>, flag: string): string | undefined {
  let raw = argv[flag];
  if (Array.isArray(raw)) raw = raw[raw.length - 1];
  if (raw === undefined) return undefined;
  if (typeof raw !== "string" || raw.trim() === "") throw badOption(`--${flag} must be a file name (got ${JSON.stringify(raw)})`);
  return resolve(raw);
}

/**
 * Puts --redis-password-file and --redis-tls-ca into `env` as absolute paths, so that the
 * processes started from here (an agent's coordinator tasks) connect the same way; the password
 * itself never goes on a command line. connectRedis reads them (redisAuth).
 */
export function applyRedisSecurity(argv: Record<string, unknown>, env: NodeJS.ProcessEnv): void {
  const file = pathArg(argv, "redis-password-file");
  if (file !== undefined) env[REDIS_PASSWORD_FILE_ENV] = file;
  const ca = pathArg(argv, "redis-tls-ca");
  if (ca !== undefined) env[REDIS_TLS_CA_ENV] = ca;
}
