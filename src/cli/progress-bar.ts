import type { Progress } from "../cluster/train-run.js";
import { duration, type GridProgress } from "../experiment/run-grid.js";

/** One self-overwriting line on a terminal: epoch, step, loss, accuracy, samples/s. */
export class ProgressBar {
  private lastLen = 0;
  constructor(private readonly stream: NodeJS.WriteStream) {}

  update(p: Progress): void {
    const width = 24;
    const frac = p.totalSteps > 0 ? Math.min(1, p.globalStep / p.totalSteps) : 0;
    const filled = Math.round(frac * width);
    const bar = "█".repeat(filled) + "░".repeat(width - filled);
    const test = p.testAccuracy === null ? "" : ` test ${(p.testAccuracy * 100).toFixed(2)}%`;
    const line =
      `${bar} epoch ${p.epoch.toFixed(2)}/${p.epochs.toFixed(2)} step ${Math.floor(p.globalStep)}/${p.totalSteps}` +
      ` loss ${fmt(p.loss, 4)} acc ${fmt(p.accuracy * 100, 1)}%${test} ${Math.round(p.samplesPerSecond)} samples/s`;
    const cols = this.stream.columns || 120;
    const text = line.slice(0, cols - 1);
    this.stream.write(`\r${text}${" ".repeat(Math.max(0, this.lastLen - text.length))}`);
    this.lastLen = text.length;
  }

  done(): void {
    if (this.lastLen > 0) this.stream.write("\n");
    this.lastLen = 0;
  }
}

function fmt(v: number, digits: number): string {
  return Number.isFinite(v) ? v.toFixed(digits) : "-";
}

/**
 * The progress of an experiment grid on a terminal: one self-overwriting line with a bar over the
 * cells (the running cell counted by its own progress), the time left, and the running cell.
 * Lines written through line() appear above it.
 */
export class GridProgressBar {
  private lastLen = 0;
  constructor(private readonly stream: NodeJS.WriteStream) {}

  update(p: GridProgress): void {
    const width = 24;
    const frac = p.total > 0 ? Math.min(1, (p.done + p.fraction) / p.total) : 1;
    const filled = Math.round(frac * width);
    const text = `${"█".repeat(filled)}${"░".repeat(width - filled)} cell ${Math.min(p.done + 1, p.total)}/${p.total} ${(100 * frac).toFixed(0)}% ETA ${duration(p.etaSeconds)}  ${p.label}`.slice(0, (this.stream.columns || 120) - 1);
    this.stream.write(`\r${text}${" ".repeat(Math.max(0, this.lastLen - text.length))}`);
    this.lastLen = text.length;
  }

  line(text: string): void {
    this.clear();
    this.stream.write(`${text}\n`);
  }

  clear(): void {
    if (this.lastLen > 0) this.stream.write(`\r${" ".repeat(this.lastLen)}\r`);
    this.lastLen = 0;
  }
}
