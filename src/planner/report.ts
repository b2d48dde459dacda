/** The `ps-train plan` tables, as plain text. */
import type { EdgeCut, PlanResult, UnitCost } from "./partition.js";

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join("  ");
  return [line(head), w.map((n) => "-".repeat(n)).join("  "), ...rows.map(line)].join("\n");
}

const ms = (x: number) => x.toFixed(3);
const kib = (b: number) => (b / 1024).toFixed(1);

/** Bytes per second as "10.0 Mbit/s (1.25 MB/s)". */
export function bandwidthText(bps: number): string {
  const bits = bps * 8;
  const unit = bits >= 1e9 ? ["Gbit/s", 1e9] : bits >= 1e6 ? ["Mbit/s", 1e6] : ["kbit/s", 1e3];
  return `${(bits / (unit[1] as number)).toFixed(1)} ${unit[0] as string} (${(bps / 1e6).toFixed(2)} MB/s)`;
}

export function pipelineTable(units: readonly UnitCost[], plan: PlanResult, microbatches: number): string {
  const stageOf = (u: number) => plan.splitAt.filter((s) => s <= u).length;
  const rows = units.map((u, i) => [String(i + 1), u.name, ms(u.forwardMs), ms(u.backwardMs), kib(u.activationBytes), String(u.params), String(stageOf(i))]);
  const stages = plan.stageMs.map((s, k) => [String(k), ms(s.computeMs), ms(s.transferMs), ms(s.computeMs + s.transferMs)]);
  return [
    table(["unit", "layers", "fwd ms", "bwd ms", "out KiB", "params", "stage"], rows),
    "",
    table(["stage", "compute ms", "transfer ms", "total ms"], stages),
    "",
    `split after unit(s): ${plan.splitAt.join(",") || "(one stage)"}; bottleneck ${ms(plan.bottleneckMs)} ms per micro-batch; ` +
      `predicted step ${ms(plan.predictedStepMs)} ms with ${microbatches} micro-batch(es)`,
  ].join("\n");
}

export function edgeTable(cuts: readonly EdgeCut[], best: EdgeCut, objective: string): string {
  const rows = cuts.map((c) => [String(c.cut), c.after, ms(c.edgeMs), ms(c.transferMs), ms(c.serverMs), ms(c.latencyMs), c.energyMj.toFixed(3), c === best ? "<" : ""]);
  const where = best.cut === 0 ? "send the input, run everything on the server" : best.cut === cuts.length - 1 ? "run everything on the device" : `cut after ${best.after} (unit ${best.cut})`;
  return [table(["cut", "after", "device ms", "transfer ms", "server ms", "latency ms", "device mJ", ""], rows), "", `best for ${objective}: ${where}`].join("\n");
}
