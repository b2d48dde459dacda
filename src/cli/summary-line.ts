import type { Summary } from "../cluster/train-run.js";

/** The one line a finished run prints on stdout (local runs and `submit --wait` alike). */
export function summaryLine(summary: Summary): string {
  return (
    (summary.task === "classification"
      ? `test accuracy ${(summary.testAccuracy * 100).toFixed(2)}%  loss ${summary.testLoss.toFixed(4)}  `
      : `test loss (MSE) ${summary.testLoss.toPrecision(4)}  `) +
    `train ${summary.trainSeconds.toFixed(2)} s  ${Math.round(summary.samplesPerSecond)} samples/s  ` +
    `staleness mean ${summary.staleness.mean.toFixed(2)} max ${summary.staleness.max}` +
    (summary.targetAccuracy !== null
      ? `  time to ${summary.targetAccuracy}: ${summary.timeToTargetSeconds === null ? "not reached" : summary.timeToTargetSeconds.toFixed(2) + " s"}`
      : "") +
    lostWorkers(summary) +
    (summary.pipeline
      ? `  pipeline ${summary.pipeline.stages} stages x ${summary.pipeline.microbatches} micro-batches` +
        `${summary.pipeline.replicas > 1 ? ` x ${summary.pipeline.replicas} replicas` : ""}, split after ${summary.pipeline.splitAt.join(",") || "-"}, ` +
        `bubble ${summary.pipeline.bubbleFraction.toFixed(2)} (ideal ${summary.pipeline.bubbleFractionIdeal.toFixed(2)})`
      : "")
  );
}

/** "  workers lost: 1 (shrink), 2 at the end" when a worker was lost (--on-worker-failure). */
function lostWorkers(summary: Summary): string {
  const lost = summary.workerFailures ?? [];
  if (lost.length === 0) return "";
  const replaced = lost.filter((f) => f.replaced === true).length;
  return `  workers lost: ${lost.length} (${summary.onWorkerFailure}${replaced > 0 ? `, ${replaced} replaced` : ""}), ${summary.workersAtEnd} at the end`;
}
