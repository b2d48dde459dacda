import type { TrainConfig } from "../../config/train-config.js";

/** The payload of a BullMQ job on the jobs queue: the resolved training config and how to run it. */
export interface JobData {
  config: TrainConfig;
  name: string;
  maxRetries: number;
  submittedAt: number;
}

/** What the scheduler's BullMQ processor returns for a job that succeeded. */
export interface JobOutcome {
  state: "succeeded";
  attempt: number;
  testAccuracy: number;
  testLoss: number;
  wallSeconds: number;
}
