import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** A role process of a run, as config.json's cluster.processes lists it. */
export interface ProcessInfo {
  role: string;
  rank: number;
  pid: number;
}

/** Poll f every 20 ms until it gives a value; past the deadline, fail naming `what`. */
export async function waitFor<T>(what: string, f: () => T | undefined, deadlineMs = 60_000): Promise<T> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`${what}: not within ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The role processes of the run in `out`, once its config.json is written (else undefined). */
export function processes(out: string): ProcessInfo[] | undefined {
  const file = join(out, "config.json");
  if (!existsSync(file)) return undefined;
  return (JSON.parse(readFileSync(file, "utf8")) as { cluster: { processes: ProcessInfo[] } }).cluster.processes;
}

/** The role processes of the run in `out`, waiting for its config.json. */
export function processesOf(out: string, deadlineMs = 60_000): Promise<ProcessInfo[]> {
  return waitFor(`config.json in ${out}`, () => processes(out), deadlineMs);
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
