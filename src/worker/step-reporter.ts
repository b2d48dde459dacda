import type { ControlClient } from "../cluster/control-client.js";
import type { ProgressMsg, StepRecord } from "../cluster/messages.js";
import { MsgType } from "../transport/header.js";

/** How often a worker sends its step records to the coordinator. */
const PROGRESS_EVERY_MS = 100;

/**
 * A worker's step records, sent to the coordinator as PROGRESS messages: batched, at most one
 * every PROGRESS_EVERY_MS. Every kind of worker (data parallel, pipeline stage, tensor parallel)
 * reports through one.
 */
export class StepReporter {
  private pending: StepRecord[] = [];
  private lastReport: number;

  constructor(
    private readonly control: ControlClient,
    private readonly rank: number,
    /** the start of training: step records carry their end time since then */
    readonly t0 = performance.now(),
  ) {
    this.lastReport = t0;
  }

  /** Record a step that ended at `now` (performance.now()); the batch goes out when it is due. */
  async add(rec: StepRecord, now: number): Promise<void> {
    this.pending.push(rec);
    if (now - this.lastReport >= PROGRESS_EVERY_MS) {
      this.lastReport = now;
      await this.flush();
    }
  }

  /** Send whatever is recorded and not sent yet. */
  async flush(): Promise<void> {
    if (this.pending.length === 0) return;
    const msg: ProgressMsg = { rank: this.rank, steps: this.pending };
    this.pending = [];
    await this.control.send(MsgType.PROGRESS, msg);
  }
}
