/** What one step's exchange tells the worker's loop. */
export interface StepResult {
  /** the run is stopping: this was the last step */
  stopping: boolean;
  /** how many updates behind the weights this gradient was computed on were (0 in sync) */
  staleness: number;
  /** the step had to wait for slower workers (SSP/sync) */
  waited: boolean;
  /** elastic allreduce: the group re-formed and rolled back; the loop goes on from this step */
  redoFrom?: number;
}

/**
 * How a worker turns its gradient into the next weights: push to the parameter-server shards
 * and read back (ParameterClient), or allreduce with the other workers and apply the optimizer
 * locally (AllreduceExchange). Either way `weights` holds the weights for the next step.
 */
export interface GradientExchange {
  readonly weights: Float32Array;
  step(clock: number, gradient: Float32Array): Promise<StepResult>;
  /** frames for the DONE message (rank 0 of an allreduce run sends its final weights) */
  finalFrames(): Buffer[];
  readonly bytesSent: number;
  readonly bytesReceived: number;
  close(): void;
}
