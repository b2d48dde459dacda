#!/usr/bin/env node
import type { TrainConfig } from "../config/train-config.js";
import { prepareRun, runLocal, type Summary } from "../cluster/train-run.js";
import { enableCurveFromEnv } from "../transport/sockets.js";
import { errorLine, PsError } from "../util/errors.js";
import { addClusterCommands, clusterHandlers } from "./cluster-commands.js";
import { addExperimentCommands } from "./experiment-commands.js";
import { addKeysCommands } from "./keys-command.js";
import { makeLogger } from "./logger.js";
import { addPlanCommand } from "./plan-command.js";
import { buildParser } from "./options.js";
import { ProgressBar } from "./progress-bar.js";
import { summaryLine } from "./summary-line.js";

async function train(config: TrainConfig): Promise<void> {
  const log = makeLogger(config.logLevel);
  // --curve-keys: this process is the coordinator; refused peers are worth a warning.
  await enableCurveFromEnv("coordinator", (msg, fields) => log.warn(fields, msg));
  const prep = await prepareRun(config);
  const showBar = config.progress === "on" || (config.progress === "auto" && process.stderr.isTTY === true);
  const bar = showBar ? new ProgressBar(process.stderr) : null;
  log.info(
    { mode: config.mode, workers: config.workers, servers: config.servers, model: config.model, dataset: config.dataset, backend: prep.backend, params: prep.model.size, stepsPerWorker: prep.stepsPerWorker },
    "starting run",
  );
  let summary: Summary;
  try {
    summary = await runLocal(prep, {
      onProgress: (p) => bar?.update(p),
      onEval: (e) => {
        bar?.done();
        log.info({ epoch: +e.epoch.toFixed(3), step: Math.floor(e.globalStep), testAccuracy: +e.testAccuracy.toFixed(4), testLoss: +e.testLoss.toFixed(4), trainSeconds: +e.t.toFixed(2) }, "eval");
      },
      log: (msg, fields) => log.debug(fields ?? {}, msg),
      warn: (msg, fields) => log.warn(fields ?? {}, msg),
    });
  } finally {
    bar?.done();
  }
  log.info(
    {
      out: config.out || undefined,
      testAccuracy: summary.testAccuracy,
      trainSeconds: +summary.trainSeconds.toFixed(2),
      wallSeconds: +summary.wallSeconds.toFixed(2),
      samplesPerSecond: Math.round(summary.samplesPerSecond),
      timeToTargetSeconds: summary.timeToTargetSeconds,
      staleness: summary.staleness,
    },
    "run finished",
  );
  process.stdout.write(`${summaryLine(summary)}\n`);
}

async function main(argv: string[]): Promise<number> {
  try {
    await addPlanCommand(addKeysCommands(addExperimentCommands(addClusterCommands(buildParser(argv, { train }), clusterHandlers)))).parseAsync();
    return 0;
  } catch (err) {
    process.stderr.write(errorLine(err) + "\n");
    if (process.env["PS_TRAIN_DEBUG"] && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return err instanceof PsError ? err.exitCode : 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  // tfjs and zeromq may hold handles open; the run is over.
  setTimeout(() => process.exit(code), 50).unref();
});
