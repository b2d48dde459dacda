import type { AsyncLrScale, OptimizerConfig } from "../config/train-config.js";

/**
 * Learning rate at progress t, measured in global steps (one global step = one gradient from
 * every worker, so the same schedule means the same thing in sync, async and SSP).
 */
export function learningRate(cfg: OptimizerConfig, t: number): number {
  let lr = cfg.lr;
  if (cfg.warmupSteps > 0 && t < cfg.warmupSteps) lr *= (t + 1) / cfg.warmupSteps;
  switch (cfg.lrSchedule) {
    case "constant":
      break;
    case "step":
      lr *= Math.pow(cfg.lrGamma, Math.floor(t / Math.max(1, cfg.lrStepSize)));
      break;
    case "cosine": {
      const total = Math.max(1, cfg.totalSteps - cfg.warmupSteps);
      const p = Math.min(1, Math.max(0, (t - cfg.warmupSteps) / total));
      lr *= 0.5 * (1 + Math.cos(Math.PI * p));
      break;
    }
  }
  return lr;
}

/**
 * The factor on the learning rate of one gradient applied on arrival (async and SSP) from one of
 * `workers` workers at `staleness` (see ASYNC_LR_SCALES).
 */
export function asyncStepScale(scale: AsyncLrScale, workers: number, staleness: number): number {
  switch (scale) {
    case "workers":
      return 1 / workers;
    case "none":
      return 1;
    case "staleness":
      return 1 / Math.max(1, staleness);
  }
}
