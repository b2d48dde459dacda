import { resolve } from "node:path";
import type { Argv } from "yargs";
import { CURVE_KEYS_ENV, type CurveRole, loadCurveKeys } from "../transport/curve-keys.js";
import { badOption } from "../util/errors.js";

export const CURVE_KEYS_DESCRIBE =
  "Encrypt and authenticate every ZeroMQ socket with CURVE, with the keys in this folder (ps-train keys generate --out DIR); peers whose public key is not in DIR/allowlist get nothing";

/** Declares --curve-keys on a command. */
export function curveKeysOption<T>(y: Argv<T>): Argv<T> {
  return y.option("curve-keys", { type: "string", requiresArg: true, describe: CURVE_KEYS_DESCRIBE, defaultDescription: `$${CURVE_KEYS_ENV} or off` }).group(["curve-keys"], "Security:");
}

/**
 * The key folder of --curve-keys (or PS_TRAIN_CURVE_KEYS), checked for each role this process
 * will start, and put into `env` as an absolute path so that every process started from here
 * (role processes, an agent's tasks) finds it. Only the path travels: never a key. Returns null
 * when CURVE is off. A bad folder is one PS_ERR_BAD_OPTION line (exit 2).
 */
export function applyCurveKeys(argv: Record<string, unknown>, env: NodeJS.ProcessEnv, roles: readonly CurveRole[]): string | null {
  let raw = argv["curve-keys"];
  if (Array.isArray(raw)) raw = raw[raw.length - 1];
  if (raw === undefined) raw = env[CURVE_KEYS_ENV];
  if (raw === undefined || (typeof raw === "string" && raw.trim() === "" && argv["curve-keys"] === undefined)) return null;
  if (typeof raw !== "string" || raw.trim() === "") throw badOption(`--curve-keys must be a folder made by ps-train keys generate (got ${JSON.stringify(raw)})`);
  for (const role of roles) loadCurveKeys(raw, role);
  const dir = resolve(raw);
  env[CURVE_KEYS_ENV] = dir;
  return dir;
}
