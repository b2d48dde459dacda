import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { ErrorCode, PsError } from "../util/errors.js";
import { peerName } from "./coordinator.js";
import type { Role } from "./messages.js";

const ROLE_MAIN = fileURLToPath(new URL("./role-main.js", import.meta.url));

/**
 * glibc returns big freed blocks to the OS (munmap) by default, and touching fresh pages costs
 * ~11 us per 4 KiB here: a new 16 MiB message buffer would cost ~45 ms. These keep freed memory
 * in the process so buffers are reused (measured by scripts/bench-ps.ts with both settings).
 */
export const TUNED_MALLOC_ENV: Record<string, string> = {
  MALLOC_MMAP_THRESHOLD_: "1073741824",
  MALLOC_TRIM_THRESHOLD_: "4294967296",
  MALLOC_TOP_PAD_: "268435456",
  // libzmq's I/O thread allocates from its own arena, capped at 64 MiB per heap, where the
  // settings above do not keep memory: messages of 64 MiB and more were mapped fresh every time
  // (641 -> 111 ms for a 64 MiB round with one worker, measured by bench:ps).
  MALLOC_ARENA_MAX: "1",
};

/**
 * V8 flags for role processes about their garbage collector. V8 scavenges and marks with helper
 * threads, and the main thread waits for them; when a run starts more role processes than the
 * machine has cores, those helpers wait for a core held by another process of the same run. Then
 * each process collects on its own thread (`--single-threaded-gc`). Measured here (2 cores, MNIST
 * MLP, 1 epoch, 4 alternating pairs): sync with 2 workers and a shard 5.90 → 5.20 s of training;
 * with 1 worker and 1 shard (2 processes) no gain, so it stays parallel there. Four more rounds
 * of all / workers only / none: 5.62 / 6.17 / 6.65 s on average. Against it: in bench:ps (16 MiB
 * messages, 4 workers and 2 shards as separate processes) single-threaded shards made the round
 * slower (37–43 → 47–62 ms, 3 pairs); a run with a large model may do better with
 * PS_TRAIN_PARALLEL_GC=1, which keeps V8's default. GC-thread flags in PS_TRAIN_NODE_ARGS win.
 */
export function roleGcArgs(planned: number, cores: number, env: NodeJS.ProcessEnv, userArgs: readonly string[]): string[] {
  if (env["PS_TRAIN_PARALLEL_GC"] === "1") return [];
  if (userArgs.some((a) => /single[-_]threaded[-_]gc|parallel[-_](scavenge|marking)/.test(a))) return [];
  return planned > cores ? ["--single-threaded-gc"] : [];
}

interface Child {
  role: Role;
  rank: number;
  proc: ChildProcess;
  log: string;
  exited: boolean;
  /** no longer part of the run (a lost worker): its exit is not reported */
  released: boolean;
}

/** Starts role processes on this machine and reports any that dies before it is told to stop. */
export class LocalLauncher {
  private readonly children: Child[] = [];
  private stopping = false;

  constructor(
    private readonly coordinatorEndpoint: string,
    private readonly timeoutMs: number,
    private readonly onUnexpectedExit: (err: Error, who?: { role: Role; rank: number }) => void,
    private readonly malloc: "tuned" | "default" = "tuned",
    /** how many role processes the run starts on this machine (see roleGcArgs) */
    private readonly planned = 0,
  ) {}

  start(role: Role, rank: number, logFile: string): void {
    const fd = openSync(logFile, "a");
    const env = { ...process.env };
    if (this.malloc === "tuned") for (const [k, v] of Object.entries(TUNED_MALLOC_ENV)) env[k] ??= v;
    // PS_TRAIN_NODE_ARGS passes V8/Node flags to role processes (e.g. --cpu-prof, --trace-gc).
    const userArgs = (process.env["PS_TRAIN_NODE_ARGS"] ?? "").split(" ").filter(Boolean);
    const nodeArgs = [...roleGcArgs(this.planned, availableParallelism(), process.env, userArgs), ...userArgs];
    const proc = spawn(
      process.execPath,
      [...nodeArgs, ROLE_MAIN, "--role", role, "--rank", String(rank), "--coordinator", this.coordinatorEndpoint, "--timeout-ms", String(this.timeoutMs)],
      { stdio: ["ignore", fd, fd, "ipc"], env },
    );
    closeSync(fd);
    const child: Child = { role, rank, proc, log: logFile, exited: false, released: false };
    this.children.push(child);
    proc.on("exit", (code, signal) => {
      child.exited = true;
      if (child.released) return;
      if (this.stopping && code === 0) return;
      if (this.stopping && signal === "SIGKILL") return;
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      this.onUnexpectedExit(new PsError(ErrorCode.PROCESS_EXIT, `${peerName(role, rank)} (pid ${proc.pid}) ${how}${this.tail(logFile)}`), { role, rank });
    });
    proc.on("error", (err) => {
      if (!child.released) this.onUnexpectedExit(new PsError(ErrorCode.PROCESS_EXIT, `${peerName(role, rank)} could not start: ${err.message}`), { role, rank });
    });
  }

  release(role: Role, rank: number): void {
    for (const c of this.children) {
      if (c.role !== role || c.rank !== rank || c.released) continue;
      c.released = true;
      if (!c.exited) c.proc.kill("SIGKILL");
    }
  }

  /** The live process of each role and rank (a restarted shard's newest one). */
  pids(): { role: Role; rank: number; pid: number | undefined }[] {
    const live = new Map<string, Child>();
    for (const c of this.children) live.set(`${c.role}:${c.rank}`, c);
    return [...live.values()].map((c) => ({ role: c.role, rank: c.rank, pid: c.proc.pid }));
  }

  /** Wait up to graceMs for every child to exit, then kill the rest. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    const deadline = Date.now() + graceMs;
    while (this.children.some((c) => !c.exited) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await this.killAll();
  }

  async killAll(): Promise<void> {
    this.stopping = true;
    const alive = this.children.filter((c) => !c.exited);
    for (const c of alive) c.proc.kill("SIGKILL");
    const deadline = Date.now() + 5000;
    while (alive.some((c) => !c.exited) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  private tail(logFile: string): string {
    try {
      const text = readFileSync(logFile, "utf8").trim();
      if (!text) return "";
      const lines = text.split("\n");
      let last = lines.slice(-1)[0] ?? "";
      try {
        const rec = JSON.parse(last) as { msg?: unknown };
        if (typeof rec.msg === "string") last = rec.msg;
      } catch {
        // not a JSON log line (e.g. a crash of node itself): quote it as it is
      }
      return `; last log line: ${last.slice(0, 300)} (log: ${logFile})`;
    } catch {
      return "";
    }
  }
}
