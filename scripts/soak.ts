/**
 * npm run soak [-- --seconds 600 --warmup-seconds 30 --window-seconds 60 --workers 4
 *                  --params 266610 --transport tcp|ipc --quick]
 *
 * A soak of parameter-server pushes at the highest rate the server sustains, with real
 * processes: does the push rate hold, and does the server's resident memory stay flat?
 *
 *   one server-shard process   a ServerShard (src/ps/server-shard.ts) in async mode, plain SGD
 *                              (lr 0.01, no momentum), --params floats, served by serveShard
 *                              (src/ps/server-main.ts) on a bound ROUTER with the options of the
 *                              ps-train server process
 *   W pusher processes         each a ParameterClient (src/worker/ps-client.ts) doing
 *                              pushPull(clock++, gradient) in a closed loop, one request in
 *                              flight, as fast as replies come back; the gradient is a constant
 *                              1e-7 so the weights stay small and finite
 *
 * After --warmup-seconds (not counted) the run lasts --seconds, cut into windows of
 * --window-seconds. Every pusher reports its push count with a timestamp about once a second;
 * the pushes of a window are those counts interpolated at the window's edges, summed over the
 * pushers. Every second the driver reads the server process's /proc/<pid>/status (VmRSS: resident
 * memory now; VmHWM: its peak so far) and /proc/<pid>/stat (CPU time).
 * MB in the output is MiB (2^20 bytes).
 *
 * stdout, one JSON line per window:
 *   {"bench":"soak","window":i,"tSeconds":<end of window, s after warm-up>,"pushesPerSecond":..,
 *    "serverRssMB":<at the window's end>,"serverRssMaxMB":<max of the 1 s samples in the window>,
 *    "serverCpuCores":<server CPU seconds / window seconds>,"machineBusy":<all cores, 0..1>,
 *    "load1":<1-minute load average at the window's end>,"pushesPerSecondByWorker":[..]}
 * and a summary line {"bench":"soak","summary":true,...}: first, last and median window rates,
 * rateHeld = last / first, resident memory at the end of warm-up (rssStartMB) and at the end
 * (rssEndMB), peak resident memory over the first and the last window, VmHWM at the end,
 * rssGrowthMB = end - start, the server's error counters, whether all its weights are finite,
 * and whether the pushes it applied equal the pushes the pushers counted.
 * Progress in words on stderr.
 *
 * The children are this script re-invoked with --role server|pusher, coordinated over the Node
 * IPC channel, with the tuned glibc malloc settings ps-train's launcher gives its processes
 * (TUNED_MALLOC_ENV; settings already in the environment win). Every wait of the driver has a
 * deadline: a child that exits, reports an error or stays silent for 30 s ends the soak with an
 * error naming it; children exit when the driver goes away, and the driver kills them all on
 * exit, SIGINT, SIGTERM and SIGHUP and removes the ipc socket folder.
 * Node/V8 flags for the children go in PS_TRAIN_NODE_ARGS, as for ps-train.
 * Bad options: one line on stderr, exit 2. A failed soak: exit 1.
 */
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { TUNED_MALLOC_ENV } from "../src/cluster/local-launcher.js";
import { DEFAULTS, type OptimizerConfig, type TransportName } from "../src/config/train-config.js";
import { createMode } from "../src/modes/index.js";
import { maxShardFrameBytes, serveShard } from "../src/ps/server-main.js";
import { ServerShard } from "../src/ps/server-shard.js";
import { allFinite } from "../src/transport/frames.js";
import { bindAddress } from "../src/transport/endpoint.js";
import { bindSocket, newBoundRouter } from "../src/transport/sockets.js";
import { ParameterClient } from "../src/worker/ps-client.js";
import { ChildProcesses, type DriverChannel, driverChannel, killAllChildren, killChildrenOnExit, machineCpu, quantiles, setChildIpcTag } from "./bench-util.js";

const SELF = fileURLToPath(import.meta.url);
const RUN_ID = 0x50a4;
/** the longest a child may stay silent while the driver needs to hear from it */
const STALL_MS = 30_000;
/** a pusher's per-request deadline inside ParameterClient (a dead or hung server) */
const REQUEST_TIMEOUT_MS = 20_000;
/** how often a pusher reports its count */
const REPORT_MS = 1000;
/** plain SGD at this rate, every push the constant gradient GRAD */
const LR = 0.01;
const GRAD = 1e-7;

type ToChild =
  | { type: "start"; endpoint: string; params: number }
  | { type: "go" }
  | { type: "stop" }
  | { type: "stats" }
  | { type: "exit" };
interface ServerStats {
  appliedGradients: number;
  version: number;
  errors: Record<string, number>;
  rejectedGradients: number;
  weightsFinite: boolean;
  /** process.memoryUsage() of the server at the end, MiB */
  heapUsedMB: number;
  externalMB: number;
  arrayBuffersMB: number;
}
type FromChild =
  | { type: "endpoint"; endpoint: string }
  | { type: "ready" }
  /** pushes completed so far, at wall time t (ms since the epoch, sub-ms) */
  | { type: "count"; t: number; pushes: number }
  | { type: "stopped"; t: number; pushes: number }
  | { type: "stats"; stats: ServerStats }
  | { type: "error"; message: string };

const MiB = 2 ** 20;
const round1 = (x: number) => Math.round(x * 10) / 10;
const wallNow = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------- child roles

/** The line to the driver, in a child process (set up by child()). */
let channel: DriverChannel<ToChild, FromChild> | null = null;
const send = (m: FromChild): void => channel?.send(m);
const next = <K extends ToChild["type"]>(...types: K[]) => channel!.next(...types);
function fail(err: unknown): void {
  if (channel) channel.fail(err);
  else process.exit(1);
}
/** set by a stop message while a pusher's loop runs */
let stopRequested = false;

async function serverRole(workers: number, params: number, transport: TransportName, tag: string): Promise<void> {
  const optimizer: OptimizerConfig = { ...DEFAULTS, optimizer: "sgd", lr: LR, momentum: 0, weightDecay: 0, lrSchedule: "constant", warmupSteps: 0, totalSteps: 0 };
  const range = { start: 0, end: params };
  const shard = new ServerShard({ shard: 0, runId: RUN_ID, range, workers, mode: createMode("async", 0), optimizer, init: new Float32Array(params) });
  // The options of the ps-train server process (src/ps/server-main.ts).
  const router = newBoundRouter("soak shard 0", { linger: 0, receiveHighWaterMark: 1000, sendHighWaterMark: 1000, mandatory: false, maxMessageSize: maxShardFrameBytes(range) });
  await bindSocket(router, bindAddress(transport, tag, "server-0"));
  const endpoint = router.lastEndpoint;
  if (!endpoint) throw new Error("the bound ROUTER reports no endpoint");
  let stopping = false;
  const serving = serveShard(router, shard).catch((err: unknown) => {
    if (!stopping) fail(err);
  });
  send({ type: "endpoint", endpoint });
  for (;;) {
    const m = await next("stats", "exit");
    if (m.type === "exit") break;
    const mem = process.memoryUsage();
    send({
      type: "stats",
      stats: {
        appliedGradients: shard.appliedGradients,
        version: shard.version,
        errors: { ...shard.errors },
        rejectedGradients: shard.rejectedGradients,
        weightsFinite: allFinite(shard.weights),
        heapUsedMB: round1(mem.heapUsed / MiB),
        externalMB: round1(mem.external / MiB),
        arrayBuffersMB: round1(mem.arrayBuffers / MiB),
      },
    });
  }
  stopping = true;
  router.close();
  await serving;
}

async function pusherRole(rank: number): Promise<void> {
  const start = await next("start");
  const weights = new Float32Array(start.params);
  const gradient = new Float32Array(start.params).fill(GRAD);
  const ps = new ParameterClient(RUN_ID, rank, [{ shard: 0, endpoint: start.endpoint, range: { start: 0, end: start.params } }], weights, REQUEST_TIMEOUT_MS);
  await ps.pull(0);
  send({ type: "ready" });
  await next("go");
  let clock = 0;
  let pushes = 0;
  send({ type: "count", t: wallNow(), pushes });
  let nextReport = performance.now() + REPORT_MS;
  while (!stopRequested) {
    await ps.pushPull(clock++, gradient);
    pushes++;
    const now = performance.now();
    if (now >= nextReport) {
      send({ type: "count", t: wallNow(), pushes });
      nextReport = now + REPORT_MS;
    }
  }
  send({ type: "stopped", t: wallNow(), pushes });
  ps.close();
  await next("exit");
}

async function child(): Promise<void> {
  const { values } = parseArgs({
    options: {
      role: { type: "string" },
      rank: { type: "string" },
      workers: { type: "string" },
      params: { type: "string" },
      transport: { type: "string" },
      tag: { type: "string" },
    },
  });
  // Exits when the driver goes away (it exited or was killed): nobody wants our results.
  channel = driverChannel<ToChild, FromChild>("soak driver", (m) => {
    if (m.type !== "stop") return false;
    stopRequested = true;
    return true;
  });
  try {
    if (values.role === "server") await serverRole(Number(values.workers), Number(values.params), values.transport as TransportName, values.tag ?? "soak");
    else if (values.role === "pusher") await pusherRole(Number(values.rank));
    else throw new Error(`unknown --role ${values.role}`);
    process.exit(0);
  } catch (err) {
    fail(err);
  }
}

// ---------------------------------------------------------------- driver

class UsageError extends Error {}

/** The child processes, what they have said, and each pusher's count reports. */
class Children extends ChildProcesses<ToChild, FromChild> {
  /** each pusher's count reports, in order */
  readonly counts = new Map<ChildProcess, { t: number; pushes: number }[]>();

  constructor(env: NodeJS.ProcessEnv) {
    // count reports go to `counts` only; a pusher's last count comes with "stopped", which is also queued
    super(SELF, "the soak", env, STALL_MS, (proc, m) => {
      if (m.type !== "count" && m.type !== "stopped") return false;
      this.counts.get(proc)?.push({ t: m.t, pushes: m.pushes });
      return m.type === "count";
    });
  }

  override start(name: string, args: string[]): ChildProcess {
    const proc = super.start(name, args);
    this.counts.set(proc, []);
    return proc;
  }

  /** Fail when a child has been silent for STALL_MS (pushers report every second while they push). */
  checkSilence(procs: ChildProcess[]): void {
    const now = Date.now();
    for (const p of procs) {
      const quiet = now - (this.lastHeard.get(p) ?? now);
      if (quiet > STALL_MS) throw new Error(`${this.named.get(p)} (pid ${p.pid}) has been silent for ${(quiet / 1000).toFixed(0)} s`);
    }
  }

  /** Sleep until wall time `t`, or fail at once when a child fails. */
  async until(t: number): Promise<void> {
    await Promise.race([sleep(Math.max(0, t - Date.now())), this.failed]);
  }

  /** Ask every child to exit, wait (at most 5 s), then kill what is left. */
  async closeAll(): Promise<void> {
    await this.close({ type: "exit" });
    killAllChildren();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A pusher's count at wall time `t`, interpolated between the reports either side (clamped at the ends). */
function countAt(samples: { t: number; pushes: number }[], t: number): number {
  const j = samples.findIndex((s) => s.t >= t);
  if (j < 0) return samples[samples.length - 1]?.pushes ?? 0;
  if (j === 0) return samples[0]!.pushes;
  const a = samples[j - 1]!;
  const b = samples[j]!;
  return a.pushes + ((b.pushes - a.pushes) * (t - a.t)) / (b.t - a.t || 1);
}

interface ProcSample {
  /** seconds after go */
  tick: number;
  rssKiB: number;
  hwmKiB: number;
  /** CPU seconds of the server process so far (user + sys, all threads) */
  cpu: number;
  machine: { busy: number; total: number } | null;
  load1: number;
}

function readServer(pid: number, tick: number): ProcSample {
  let status: string;
  let stat: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch (err) {
    throw new Error(`cannot read /proc/${pid} of the server process: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const kib = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status);
    if (!m) throw new Error(`/proc/${pid}/status has no ${key}`);
    return Number(m[1]);
  };
  // fields after the command name "(...)": state is field 3, utime 14, stime 15 (clock ticks, 100 Hz)
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpu = (Number(f[11]) + Number(f[12])) / 100;
  return { tick, rssKiB: kib("VmRSS"), hwmKiB: kib("VmHWM"), cpu, machine: machineCpu(), load1: loadavg()[0] ?? NaN };
}

const USAGE = `usage: npm run soak -- [--seconds 600] [--warmup-seconds 30] [--window-seconds 60] [--workers 4]
                       [--params 266610] [--transport tcp|ipc] [--quick]
`;

interface Options {
  seconds: number;
  warmup: number;
  window: number;
  workers: number;
  params: number;
  transport: TransportName;
}

function options(): Options | null {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        seconds: { type: "string", default: "600" },
        "warmup-seconds": { type: "string", default: "30" },
        "window-seconds": { type: "string", default: "60" },
        workers: { type: "string", default: "4" },
        params: { type: "string", default: "266610" },
        transport: { type: "string", default: "tcp" },
        quick: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err), { cause: err });
  }
  if (values.help) {
    process.stderr.write(USAGE);
    return null;
  }
  const int = (name: string, s: string, min: number) => {
    const x = Number(s);
    if (s.trim() === "" || !Number.isInteger(x) || x < min) throw new UsageError(`--${name}: ${s} is not an integer >= ${min}`);
    return x;
  };
  const quick = values.quick;
  const o: Options = {
    seconds: int("seconds", quick ? "20" : values.seconds, 1),
    warmup: int("warmup-seconds", quick ? "5" : values["warmup-seconds"], 0),
    window: int("window-seconds", quick ? "5" : values["window-seconds"], 1),
    workers: int("workers", values.workers, 1),
    params: int("params", values.params, 1),
    transport: values.transport as TransportName,
  };
  if (values.transport !== "tcp" && values.transport !== "ipc") throw new UsageError(`--transport: ${values.transport} is not tcp or ipc`);
  if (o.window > o.seconds) throw new UsageError(`--window-seconds ${o.window} is longer than --seconds ${o.seconds}`);
  return o;
}

async function driver(o: Options): Promise<void> {
  const tag = `soak-${process.pid}-${randomBytes(3).toString("hex")}`;
  if (o.transport === "ipc") setChildIpcTag(tag);
  // As ps-train's launcher: the tuned malloc settings, unless the environment sets them already.
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(TUNED_MALLOC_ENV)) env[k] ??= v;
  const kids = new Children(env);
  const common = ["--workers", String(o.workers), "--params", String(o.params), "--transport", o.transport, "--tag", tag];
  let graceful = false;
  try {
    const t0 = Date.now();
    const server = kids.start("server", ["--role", "server", ...common]);
    const serverPid = server.pid;
    if (serverPid === undefined) throw new Error("the server process has no pid");
    const { endpoint } = await kids.wait(server, "endpoint");
    const pushers = Array.from({ length: o.workers }, (_, r) => kids.start(`pusher ${r}`, ["--role", "pusher", "--rank", String(r), ...common]));
    for (const p of pushers) p.send({ type: "start", endpoint, params: o.params } satisfies ToChild);
    await kids.waitAll(pushers, "ready");
    process.stderr.write(
      `soak: server pid ${serverPid} on ${endpoint}, ${o.workers} pushers of ${o.params} floats ready in ${((Date.now() - t0) / 1000).toFixed(1)} s; ` +
        `${o.warmup} s warm-up, then ${o.seconds} s in windows of ${o.window} s; load average ${loadavg().map((x) => x.toFixed(2)).join(" ")}\n`,
    );

    const go = Date.now();
    for (const p of pushers) p.send({ type: "go" } satisfies ToChild);
    const samples: ProcSample[] = [readServer(serverPid, 0)];
    const windows = Math.ceil(o.seconds / o.window);
    const edge = (i: number) => o.warmup + Math.min(i * o.window, o.seconds);
    const lines: Record<string, unknown>[] = [];
    /** pushes of all pushers from `a` to `b` seconds after go, and each pusher's */
    const pushesBetween = (a: number, b: number) => pushers.map((p) => countAt(kids.counts.get(p)!, go + b * 1000) - countAt(kids.counts.get(p)!, go + a * 1000));
    const sampleAt = (tick: number) => samples.find((s) => s.tick === tick)!;
    /** the window lines whose end every pusher has reported past */
    const flush = () => {
      while (lines.length < windows) {
        const i = lines.length;
        const a = edge(i);
        const b = edge(i + 1);
        const endWall = go + b * 1000;
        if (!pushers.every((p) => (kids.counts.get(p)!.at(-1)?.t ?? 0) >= endWall)) return;
        if (!samples.some((s) => s.tick === b)) return;
        const per = pushesBetween(a, b);
        const secs = b - a;
        const inWindow = samples.filter((s) => s.tick > a && s.tick <= b);
        const s0 = sampleAt(a);
        const s1 = sampleAt(b);
        const line = {
          bench: "soak",
          window: i,
          tSeconds: b - o.warmup,
          pushesPerSecond: round1(per.reduce((x, y) => x + y, 0) / secs),
          serverRssMB: round1(s1.rssKiB / 1024),
          serverRssMaxMB: round1(Math.max(...inWindow.map((s) => s.rssKiB)) / 1024),
          serverCpuCores: Math.round(((s1.cpu - s0.cpu) / secs) * 100) / 100,
          machineBusy: s0.machine && s1.machine ? Math.round(((s1.machine.busy - s0.machine.busy) / (s1.machine.total - s0.machine.total || 1)) * 100) / 100 : null,
          load1: Math.round(s1.load1 * 100) / 100,
          pushesPerSecondByWorker: per.map((x) => round1(x / secs)),
        };
        lines.push(line);
        process.stdout.write(JSON.stringify(line) + "\n");
        process.stderr.write(
          `soak: window ${i + 1}/${windows} (t=${line.tSeconds} s): ${line.pushesPerSecond} pushes/s, server RSS ${line.serverRssMB} MiB (max ${line.serverRssMaxMB}), ` +
            `server CPU ${line.serverCpuCores} cores, machine ${line.machineBusy === null ? "?" : (line.machineBusy * 100).toFixed(0)}% busy, load ${line.load1}\n`,
        );
      }
    };

    const last = o.warmup + o.seconds;
    for (let tick = 1; tick <= last; tick++) {
      await kids.until(go + tick * 1000);
      samples.push(readServer(serverPid, tick));
      kids.checkSilence(pushers);
      if (tick === o.warmup) {
        const w = pushesBetween(0, o.warmup).reduce((x, y) => x + y, 0);
        process.stderr.write(`soak: warm-up done: ${(w / Math.max(1, o.warmup)).toFixed(1)} pushes/s, server RSS ${(sampleAt(tick).rssKiB / 1024).toFixed(1)} MiB\n`);
      }
      flush();
    }
    for (const p of pushers) p.send({ type: "stop" } satisfies ToChild);
    await kids.waitAll(pushers, "stopped");
    flush();
    if (lines.length !== windows) throw new Error(`only ${lines.length} of ${windows} windows could be measured`);
    server.send({ type: "stats" } satisfies ToChild);
    const { stats } = await kids.wait(server, "stats");
    const end = readServer(serverPid, last);

    const rates = lines.map((l) => l["pushesPerSecond"] as number);
    const first = lines[0]!;
    const lastLine = lines[lines.length - 1]!;
    const rssStart = sampleAt(o.warmup).rssKiB / 1024;
    const rssEnd = sampleAt(last).rssKiB / 1024;
    const pushesCounted = pushers.reduce((a, p) => a + (kids.counts.get(p)!.at(-1)?.pushes ?? 0), 0);
    const serverErrors = Object.values(stats.errors).reduce((a, x) => a + x, 0);
    const summary = {
      bench: "soak",
      summary: true,
      seconds: o.seconds,
      warmupSeconds: o.warmup,
      windowSeconds: o.window,
      workers: o.workers,
      params: o.params,
      transport: o.transport,
      pushesPerSecondFirstWindow: first["pushesPerSecond"],
      pushesPerSecondLastWindow: lastLine["pushesPerSecond"],
      pushesPerSecondMedian: round1(quantiles(rates).median),
      pushesPerSecondMin: quantiles(rates).min,
      pushesPerSecondMax: quantiles(rates).max,
      rateHeld: Math.round(((lastLine["pushesPerSecond"] as number) / (first["pushesPerSecond"] as number)) * 1000) / 1000,
      rssStartMB: round1(rssStart),
      rssEndMB: round1(rssEnd),
      peakRssStartMB: first["serverRssMaxMB"],
      peakRssEndMB: lastLine["serverRssMaxMB"],
      vmHwmMB: round1(end.hwmKiB / 1024),
      rssGrowthMB: round1(rssEnd - rssStart),
      serverErrors,
      serverErrorCounts: stats.errors,
      rejectedGradients: stats.rejectedGradients,
      weightsFinite: stats.weightsFinite,
      pushesApplied: stats.appliedGradients,
      pushesCounted,
      countsAgree: stats.appliedGradients === pushesCounted,
      serverHeapUsedMB: stats.heapUsedMB,
      serverExternalMB: stats.externalMB,
      serverArrayBuffersMB: stats.arrayBuffersMB,
    };
    process.stdout.write(JSON.stringify(summary) + "\n");
    process.stderr.write(
      `soak: ${summary.pushesPerSecondMedian} pushes/s median (first ${summary.pushesPerSecondFirstWindow}, last ${summary.pushesPerSecondLastWindow}, held ${summary.rateHeld}); ` +
        `server RSS ${summary.rssStartMB} -> ${summary.rssEndMB} MiB (${summary.rssGrowthMB >= 0 ? "+" : ""}${summary.rssGrowthMB}), VmHWM ${summary.vmHwmMB} MiB; ` +
        `${serverErrors} server errors, weights ${stats.weightsFinite ? "finite" : "NOT FINITE"}, ${pushesCounted} pushes counted, ${stats.appliedGradients} applied\n`,
    );
    graceful = true;
  } finally {
    if (graceful) await kids.closeAll();
    else killAllChildren();
  }
}

if (process.argv.includes("--role")) void child();
else {
  killChildrenOnExit("soak");
  let o: Options | null;
  try {
    o = options();
  } catch (err) {
    // one line: parseArgs messages may run on over several
    process.stderr.write(`soak: ${(err instanceof Error ? err.message : String(err)).split("\n")[0]}\n`);
    process.exit(err instanceof UsageError ? 2 : 1);
  }
  if (o === null) process.exit(0);
  driver(o).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`soak: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
