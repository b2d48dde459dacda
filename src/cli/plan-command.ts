/**
 * `ps-train plan`: the partition planner on its own. Profiles each pipeline unit of the model on
 * this backend and prints the table, the chosen split points and the predicted step time; with
 * `--split edge-cloud`, Neurosurgeon's question: where to cut inference between a slow device and
 * a fast server for a given bandwidth, minimising latency or the device's energy.
 */
import type { Argv } from "yargs";
import { loadDataset } from "../data/load.js";
import { selectBackend } from "../model/backend.js";
import { createModel } from "../model/zoo.js";
import { measureBandwidth } from "../planner/bandwidth.js";
import { bestEdgeCut, DEFAULT_POWER, edgeCloudCuts, evaluateSplit, planSplits, type PowerModel } from "../planner/partition.js";
import { profileUnits } from "../planner/profile.js";
import { bandwidthText, edgeTable, pipelineTable } from "../planner/report.js";
import { badOption } from "../util/errors.js";
import { resolveTrainConfig, trainOptions } from "./options.js";

const BIT_UNITS: Record<string, number> = { bit: 1 / 8, kbit: 1e3 / 8, mbit: 1e6 / 8, gbit: 1e9 / 8, bps: 1 / 8, kbps: 1e3 / 8, mbps: 1e6 / 8, gbps: 1e9 / 8 };
const BYTE_UNITS: Record<string, number> = { "b/s": 1, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "kib/s": 1024, "mib/s": 1024 ** 2, "gib/s": 1024 ** 3 };

/** "10Mbit", "100Mbps", "1Gbit", "50MB/s", "12MiB/s" -> bytes per second. */
export function parseBandwidth(raw: unknown): number {
  const m = typeof raw === "string" ? /^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([a-z/]+)\s*$/i.exec(raw) : null;
  const unit = m ? (BIT_UNITS[m[2]!.toLowerCase()] ?? BYTE_UNITS[m[2]!.toLowerCase()]) : undefined;
  const v = m && unit !== undefined ? Number(m[1]) * unit : NaN;
  if (!(v > 0) || !Number.isFinite(v)) throw badOption(`--bandwidth must be a rate with a unit, e.g. 10Mbit, 100Mbps, 1Gbit or 50MB/s (got ${JSON.stringify(raw)})`);
  return v;
}

function positive(raw: unknown, flag: string, min = 0): number {
  const v = typeof raw === "number" ? raw : typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
  if (!Number.isFinite(v) || v < min || (min === 0 && v <= 0)) throw badOption(`${flag} must be a number ${min === 0 ? "> 0" : `>= ${min}`} (got ${JSON.stringify(raw)})`);
  return v;
}

/** --power COMPUTE,TRANSMIT,IDLE watts of the device. */
function parsePower(raw: unknown): PowerModel {
  if (raw === undefined) return DEFAULT_POWER;
  const parts = String(raw).split(",").map((p) => Number(p.trim()));
  if (parts.length !== 3 || parts.some((p) => !Number.isFinite(p) || p < 0)) throw badOption(`--power must be COMPUTE,TRANSMIT,IDLE watts, e.g. 2.5,1.3,0.3 (got ${JSON.stringify(raw)})`);
  return { computeWatts: parts[0]!, transmitWatts: parts[1]!, idleWatts: parts[2]! };
}

export function addPlanCommand<T>(y: Argv<T>): Argv<T> {
  return y.command(
    "plan",
    "Profile the model's layers and choose pipeline split points (or, with --split edge-cloud, Neurosurgeon's device/server cut)",
    (c) =>
      trainOptions(c)
        .option("split", { type: "string", choices: ["pipeline", "edge-cloud"], requiresArg: true, describe: "pipeline: split points for --stages; edge-cloud: where to cut inference between a device and a server", defaultDescription: "pipeline" })
        .option("bandwidth", { type: "string", requiresArg: true, describe: "Link rate, e.g. 10Mbit, 1Gbit, 50MB/s", defaultDescription: "measured over --transport on this machine" })
        .option("latency-ms", { type: "string", requiresArg: true, describe: "One-way link latency, ms (with --bandwidth)", defaultDescription: "0" })
        .option("edge-slowdown", { type: "string", requiresArg: true, describe: "edge-cloud: the device is this many times slower than this machine", defaultDescription: "8" })
        .option("objective", { type: "string", choices: ["latency", "energy"], requiresArg: true, describe: "edge-cloud: minimise end-to-end latency or the device's energy", defaultDescription: "latency" })
        .option("power", { type: "string", requiresArg: true, describe: "edge-cloud: device watts COMPUTE,TRANSMIT,IDLE", defaultDescription: "2.5,1.3,0.3" })
        .option("reps", { type: "string", requiresArg: true, describe: "Timed runs per layer (median)", defaultDescription: "5" })
        .option("json", { type: "boolean", describe: "Print the plan as one JSON line instead of tables" }),
    async (argv) => {
      const a = argv as Record<string, unknown>;
      const split = (a["split"] as string | undefined) ?? "pipeline";
      const cfg = resolveTrainConfig({ ...a, parallelism: a["parallelism"] ?? "model" });
      const reps = Math.round(positive(a["reps"] ?? "5", "--reps", 1));
      await selectBackend(cfg.backend);
      const data = await loadDataset(cfg.dataset, { seed: cfg.seed, trainLimit: 1, testLimit: 1 });
      const model = createModel(cfg.model, data.inputShape, data.numOutputs, data.task);
      const latencyMs = a["latency-ms"] !== undefined ? positive(a["latency-ms"], "--latency-ms", 0) : 0;
      const link =
        a["bandwidth"] !== undefined
          ? { bandwidth: parseBandwidth(a["bandwidth"]), latencyMs }
          : await measureBandwidth(cfg.transport, 1 << 20, 8, cfg.timeoutMs).then((m) => ({ bandwidth: m.bytesPerSecond, latencyMs: m.latencyMs }));
      const out = (o: Record<string, unknown>, text: string) => process.stdout.write(a["json"] ? `${JSON.stringify(o)}\n` : `${text}\n`);
      if (split === "edge-cloud") {
        const slowdown = positive(a["edge-slowdown"] ?? "8", "--edge-slowdown", 1);
        const objective = ((a["objective"] as string | undefined) ?? "latency") as "latency" | "energy";
        const power = parsePower(a["power"]);
        // inference: one sample, forward only
        const units = profileUnits(model, 1, reps, cfg.seed);
        const cuts = edgeCloudCuts(units, 4 * model.xSize, slowdown, link, power);
        const best = bestEdgeCut(cuts, objective);
        out(
          { split, model: cfg.model, backend: cfg.backend, bandwidthBytesPerSecond: link.bandwidth, latencyMs: link.latencyMs, edgeSlowdown: slowdown, objective, power, cuts, best },
          `model ${cfg.model}, link ${bandwidthText(link.bandwidth)}, latency ${link.latencyMs.toFixed(3)} ms, device ${slowdown}x slower, ` +
            `power compute ${power.computeWatts} W / transmit ${power.transmitWatts} W / idle ${power.idleWatts} W\n\n${edgeTable(cuts, best, objective)}`,
        );
      } else {
        const micro = Math.ceil(cfg.batchSize / cfg.microbatches);
        const units = profileUnits(model, micro, reps, cfg.seed);
        const plan = cfg.splitAt.length > 0 ? evaluateSplit(units, cfg.splitAt, cfg.microbatches, link) : planSplits(units, cfg.stages, cfg.microbatches, link);
        out(
          { split, model: cfg.model, backend: cfg.backend, stages: cfg.stages, microbatches: cfg.microbatches, microBatchSize: micro, bandwidthBytesPerSecond: link.bandwidth, latencyMs: link.latencyMs, units, plan },
          `model ${cfg.model}, ${cfg.stages} stage(s), batch ${cfg.batchSize} in ${cfg.microbatches} micro-batch(es) of ${micro}, link ${bandwidthText(link.bandwidth)}\n\n${pipelineTable(units, plan, cfg.microbatches)}`,
        );
      }
      model.dispose();
    },
  );
}
