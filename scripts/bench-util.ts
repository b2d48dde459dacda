/** Helpers shared by the benchmark scripts. */
import { type ChildProcess, fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { removeIpcDir } from "../src/transport/endpoint.js";
import { removeShmDir } from "../src/transport/shm.js";

/** The value after `--name` on the command line, or `def` when the flag is absent. */
export function argValue(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? (process.argv[i + 1] ?? def) : def;
}

/** Busy and total CPU seconds of the whole machine, all cores (null where /proc/stat is missing). */
export function machineCpu(): { busy: number; total: number } | null {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, x) => a + x, 0);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    const hz = 100;
    return { busy: (total - idle) / hz, total: total / hz };
  } catch {
    return null;
  }
}

/** Busy fraction of the whole machine over `ms` (NaN without /proc/stat). */
export async function machineBusy(ms: number): Promise<number> {
  const a = machineCpu();
  await new Promise((r) => setTimeout(r, ms));
  const b = machineCpu();
  return a && b ? (b.busy - a.busy) / (b.total - a.total || 1) : NaN;
}

/** Wait (at most `maxMs`) until other processes leave the machine mostly idle. */
export async function waitQuiet(maxBusy: number, maxMs: number, who = "bench"): Promise<void> {
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline) if (!((await machineBusy(2000)) > maxBusy)) return;
  process.stderr.write(`${who}:   the machine stayed busy for ${maxMs / 1000} s; measuring anyway\n`);
}

export function quantiles(xs: number[]): { median: number; min: number; max: number } {
  const t = [...xs].sort((a, b) => a - b);
  const mid = t.length >> 1;
  const median = t.length % 2 ? t[mid]! : (t[mid - 1]! + t[mid]!) / 2;
  return { median, min: t[0]!, max: t[t.length - 1]! };
}

export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|K|M|G)?$/i.exec(s.trim());
  if (!m) throw new Error(`bad size "${s}" (use e.g. 64KiB, 16MiB)`);
  const unit = (m[2] ?? "B").toLowerCase()[0];
  const mult = unit === "k" ? 1024 : unit === "m" ? 1024 ** 2 : unit === "g" ? 1024 ** 3 : 1;
  const bytes = Math.round(Number(m[1]) * mult);
  if (bytes < 4 || bytes % 4 !== 0) throw new Error(`size "${s}" must be a positive multiple of 4 bytes (float32)`);
  return bytes;
}

/** A comma-separated list of integers >= min (1 by default). */
export function positiveInts(s: string, what: string, min = 1): number[] {
  const xs = s
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean)
    .map(Number);
  for (const x of xs) if (!Number.isInteger(x) || x < min) throw new Error(`--${what}: ${x} is not ${min === 1 ? "a positive integer" : `an integer >= ${min}`}`);
  return xs;
}


/**
 * A benchmark child's line to its driver over the Node IPC channel: messages from the driver
 * queue until the child asks for them (`next`), `send` reports, `fail` reports an error and
 * exits 1. The child exits when the driver goes away. `intercept` takes a message before it is
 * queued (true: handled, e.g. a stop flag).
 */
export function driverChannel<ToChild extends { type: string }, FromChild>(driver: string, intercept?: (m: ToChild) => boolean) {
  const inbox: ToChild[] = [];
  let waiter: (() => void) | null = null;
  process.on("disconnect", () => process.exit(0));
  process.on("message", (m: ToChild) => {
    if (intercept?.(m)) return;
    inbox.push(m);
    const w = waiter;
    waiter = null;
    w?.();
  });
  return {
    send(m: FromChild): void {
      process.send?.(m);
    },
    /** The next driver message, which must be one of `types`; no deadline (see above). */
    async next<K extends ToChild["type"]>(...types: K[]): Promise<Extract<ToChild, { type: K }>> {
      for (;;) {
        const m = inbox.shift();
        if (m !== undefined) {
          if ((types as string[]).includes(m.type)) return m as Extract<ToChild, { type: K }>;
          throw new Error(`expected ${types.join(" or ")} from the ${driver}, got ${m.type}`);
        }
        await new Promise<void>((resolve) => (waiter = resolve));
      }
    },
    /** Report the error to the driver, then exit 1 (once the message is out, or after 2 s). */
    fail(err: unknown): void {
      const m = { type: "error", message: err instanceof Error ? err.message : String(err) };
      if (process.send && process.connected) process.send(m, undefined, {}, () => process.exit(1));
      else process.exit(1);
      setTimeout(() => process.exit(1), 2000);
    },
  };
}

export type DriverChannel<ToChild extends { type: string }, FromChild> = ReturnType<typeof driverChannel<ToChild, FromChild>>;

/** Every child process a benchmark driver has started and not seen exit (killAllChildren kills them). */
export const liveChildren = new Set<ChildProcess>();

/** the run tag of the live children's ipc socket folder and shared-memory files (null: they use none); killAllChildren removes them */
let childIpcTag: string | null = null;

/** The children started from now on bind ipc sockets (and keep --transport shm files) under `tag`'s folders: killAllChildren removes them. */
export function setChildIpcTag(tag: string): void {
  childIpcTag = tag;
}

/** SIGKILL every live child (on exit, SIGINT, SIGTERM, SIGHUP, or after a failure) and remove their ipc socket folder. */
export function killAllChildren(): void {
  for (const p of liveChildren) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  if (childIpcTag !== null) {
    removeIpcDir(childIpcTag);
    removeShmDir(childIpcTag);
  }
  childIpcTag = null;
}

/** A driver kills its children (killAllChildren) when it exits, and on SIGINT, SIGTERM or SIGHUP, saying so, then exits 130. */
export function killChildrenOnExit(who: string): void {
  process.on("exit", killAllChildren);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const)
    process.on(sig, () => {
      process.stderr.write(`${who}: ${sig}, killing ${liveChildren.size} child process(es)\n`);
      killAllChildren();
      process.exit(130);
    });
}

/**
 * A benchmark driver's child processes (the script itself re-invoked with other arguments) and
 * what they have said: every message is kept until someone waits for it (none is lost to a
 * race), a child that reports an error, dies, or stays silent for `stallMs` while waited on fails
 * the driver (`failed` rejects) with an error naming it. `consume` sees each message first
 * (true: handled there, not queued).
 */
export class ChildProcesses<ToChild extends { type: string }, FromChild extends { type: string }> {
  readonly named = new Map<ChildProcess, string>();
  private readonly inbox = new Map<ChildProcess, FromChild[]>();
  readonly lastHeard = new Map<ChildProcess, number>();
  private failure: ((e: Error) => void) | null = null;
  /** rejects when any child fails, dies or reports an error */
  readonly failed = new Promise<never>((_, reject) => (this.failure = reject));
  private closing = false;

  constructor(
    private readonly script: string,
    /** who needs the children, for the error when one dies ("the bench", "the soak") */
    private readonly who: string,
    readonly env: NodeJS.ProcessEnv,
    private readonly stallMs: number,
    private readonly consume: (proc: ChildProcess, m: FromChild) => boolean = () => false,
  ) {
    this.failed.catch(() => undefined);
  }

  start(name: string, args: string[]): ChildProcess {
    // PS_TRAIN_NODE_ARGS passes Node/V8 flags to the children, as ps-train does.
    const execArgv = (process.env["PS_TRAIN_NODE_ARGS"] ?? "").split(" ").filter(Boolean);
    const proc = fork(this.script, args, { env: this.env, execArgv, stdio: ["ignore", "inherit", "inherit", "ipc"] });
    liveChildren.add(proc);
    this.named.set(proc, name);
    this.inbox.set(proc, []);
    this.lastHeard.set(proc, Date.now());
    proc.on("error", (err) => this.failure?.(new Error(`${name}: ${err.message}`)));
    proc.on("exit", () => liveChildren.delete(proc));
    // 'close' comes after the IPC channel has delivered everything the child sent.
    proc.on("close", (code, signal) => {
      liveChildren.delete(proc);
      if (code !== 0 || !this.closing)
        this.failure?.(new Error(`${name} (pid ${proc.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`} while ${this.who} still needed it`));
    });
    proc.on("message", (m: FromChild) => {
      this.lastHeard.set(proc, Date.now());
      if (m.type === "error") this.failure?.(new Error(`${name} (pid ${proc.pid}): ${(m as { message?: unknown }).message}`));
      else if (!this.consume(proc, m)) this.inbox.get(proc)?.push(m);
    });
    return proc;
  }

  send(procs: ChildProcess[], m: ToChild): void {
    for (const p of procs) p.send(m);
  }

  /** The next message of `type` from `proc`; fails when the child stays silent for stallMs while we wait. */
  async wait<T extends FromChild["type"]>(proc: ChildProcess, type: T): Promise<Extract<FromChild, { type: T }>> {
    const box = this.inbox.get(proc) ?? [];
    const since = Date.now();
    for (;;) {
      const i = box.findIndex((m) => m.type === type);
      if (i >= 0) return box.splice(i, 1)[0] as Extract<FromChild, { type: T }>;
      if (Date.now() - Math.max(since, this.lastHeard.get(proc) ?? 0) > this.stallMs)
        throw new Error(`no ${type} from ${this.named.get(proc)} (pid ${proc.pid}): silent for ${this.stallMs / 1000} s`);
      await Promise.race([new Promise((r) => setTimeout(r, 2)), this.failed]);
    }
  }

  async waitAll<T extends FromChild["type"]>(procs: ChildProcess[], type: T): Promise<Extract<FromChild, { type: T }>[]> {
    const out: Extract<FromChild, { type: T }>[] = [];
    for (const p of procs) out.push(await this.wait(p, type));
    return out;
  }

  /** Ask every child to exit (`exit` message), wait at most 5 s, then kill what is left; not graceful: kill at once. */
  async close(exit: ToChild, graceful = true): Promise<void> {
    this.closing = true;
    const all = [...this.named.keys()];
    if (graceful) {
      for (const p of all) if (p.connected) p.send(exit);
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && all.some((p) => liveChildren.has(p))) await new Promise((r) => setTimeout(r, 5));
    }
    for (const p of all) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  }
}
