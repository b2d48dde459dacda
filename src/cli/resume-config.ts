import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DEFAULTS, type TrainConfig } from "../config/train-config.js";
import { badOption } from "../util/errors.js";

/**
 * Options that a resumed run may set differently from the run it continues: how it is run and
 * watched, never what it computes (docs/reliability.md, "Resume").
 */
export const RESUME_MAY_CHANGE: ReadonlySet<keyof TrainConfig> = new Set<keyof TrainConfig>([
  "resume",
  "out",
  "logLevel",
  "progress",
  "timeoutMs",
  "heartbeatMs",
  "heartbeatTimeout",
  "onWorkerFailure",
  "replaceTimeout",
  "maxReplacements",
  "maxRestarts",
  "checkpointEvery",
  "checkpointKeep",
  "transport",
  "backend",
]);

/** The TrainConfig a run directory's config.json holds (its other keys, the cluster map etc., dropped). */
export function storedConfig(dir: string): TrainConfig {
  const file = join(dir, "config.json");
  if (!existsSync(file)) throw badOption(`--resume ${dir}: no config.json there (is it a run directory?)`);
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw badOption(`--resume ${dir}: cannot read config.json: ${(err as Error).message.split("\n")[0]}`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) throw badOption(`--resume ${dir}: config.json does not hold a run's options`);
  const rec = data as Record<string, unknown>;
  const out = { ...DEFAULTS } as unknown as Record<string, unknown>;
  for (const key of Object.keys(DEFAULTS)) if (key in rec) out[key] = rec[key];
  if (rec["comm"] === "allreduce") throw badOption(`--resume ${dir}: an allreduce run has no server checkpoints to resume from`);
  return out as unknown as TrainConfig;
}

/**
 * The config of a resumed run: the stored one, with the options in RESUME_MAY_CHANGE taken from
 * `given` where they were set. Any other option set to a different value is refused in one line.
 */
export function resumeConfig(given: TrainConfig, explicit: ReadonlyMap<keyof TrainConfig, string>): TrainConfig {
  const dir = resolve(given.resume);
  const stored = storedConfig(dir);
  const config: TrainConfig = { ...stored, slow: { ...stored.slow } };
  for (const [key, where] of explicit) {
    if (key === "out") {
      if (given.out !== "" && resolve(given.out) !== dir) throw badOption(`${where}: a resumed run writes to its own run directory ${dir} (got ${JSON.stringify(given.out)})`);
      continue;
    }
    if (RESUME_MAY_CHANGE.has(key)) {
      (config as unknown as Record<string, unknown>)[key] = given[key];
      continue;
    }
    if (JSON.stringify(given[key]) !== JSON.stringify(stored[key])) {
      throw badOption(
        `${where}: --resume continues the run with its own options, and ${dir}/config.json has ${JSON.stringify(stored[key])} (got ${JSON.stringify(given[key])}); only ${[...RESUME_MAY_CHANGE].filter((k) => k !== "resume" && k !== "out").map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(", ")} may change`,
      );
    }
  }
  config.resume = dir;
  config.out = dir;
  return config;
}
