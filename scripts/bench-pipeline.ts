/**
 * npm run bench:pipeline [-- --models cnn,mlp --stages 1,2,3,4 --microbatches 1,2,4,8 --steps 30 ...]
 *
 * Samples/s and bubble fraction of pipeline (model) parallelism for each stage count K and
 * micro-batch count M, with the planner's split points, and the planner's predicted step time
 * beside the measured one. K larger than a model's units is skipped (mlp has 3). One JSON line
 * per run on stdout, read from the run's summary.json; progress on stderr.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULTS, type BackendName, type ModelName, type TrainConfig } from "../src/config/train-config.js";
import { prepareRun, runLocal } from "../src/cluster/train-run.js";
import { pipelineUnitCount } from "../src/pipeline/units.js";
import { positiveInts } from "./bench-util.js";

const { values: opt } = parseArgs({
  options: {
    models: { type: "string", default: "cnn,mlp" },
    stages: { type: "string", default: "1,2,3,4" },
    microbatches: { type: "string", default: "1,2,4,8" },
    steps: { type: "string", default: "30" },
    "batch-size": { type: "string", default: "64" },
    backend: { type: "string", default: "wasm" },
    dataset: { type: "string", default: "mnist" },
    "train-limit": { type: "string", default: "4096" },
    transport: { type: "string", default: "ipc" },
  },
});

const models = opt.models.split(",").map((m) => m.trim()) as ModelName[];
const dir = mkdtempSync(join(tmpdir(), "bench-pipeline-"));
try {
  for (const model of models) {
    for (const stages of positiveInts(opt.stages, "stages")) {
      if (stages > pipelineUnitCount(model)) continue;
      for (const microbatches of positiveInts(opt.microbatches, "microbatches")) {
        const cfg: TrainConfig = {
          ...DEFAULTS,
          parallelism: "model",
          stages,
          microbatches,
          workers: stages,
          model,
          mode: "sync",
          dataset: opt.dataset,
          trainLimit: Number(opt["train-limit"]),
          testLimit: 1000,
          batchSize: Number(opt["batch-size"]),
          maxSteps: Number(opt.steps),
          backend: opt.backend as BackendName,
          transport: opt.transport as TrainConfig["transport"],
          logLevel: "silent",
          progress: "off",
          timeoutMs: 60_000,
          out: join(dir, `${model}-k${stages}-m${microbatches}`),
        };
        process.stderr.write(`bench-pipeline: ${model} K=${stages} M=${microbatches}\n`);
        const prep = await prepareRun(cfg);
        const s = await runLocal(prep);
        const p = s.pipeline!;
        process.stdout.write(
          `${JSON.stringify({
            bench: "pipeline",
            model,
            backend: s.backend,
            stages,
            microbatches,
            batchSize: cfg.batchSize,
            splitAt: p.splitAt,
            stageUnits: p.stageUnits,
            steps: s.steps,
            samplesPerSecond: +s.samplesPerSecond.toFixed(1),
            stepMs: +((s.trainSeconds * 1000) / s.steps).toFixed(2),
            predictedStepMs: +p.predictedStepMs.toFixed(2),
            stageStepMs: +p.measuredStepMs.toFixed(2),
            bubbleFraction: +p.bubbleFraction.toFixed(3),
            bubbleFractionIdeal: +p.bubbleFractionIdeal.toFixed(3),
          })}\n`,
        );
      }
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
