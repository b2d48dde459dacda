/**
 * npm run bench:ps [-- --sizes 1MiB,16MiB --workers 1,4 --shards 1,2 --transports tcp,ipc,shm
 *                     --malloc tuned|default|both --seconds 0.6 | --iters 20 --warmup auto|3
 *                     --max-foreign 0.15 --quick --verbose]
 *
 * The parameter-server round of ps-train with real processes: K server-shard processes
 * (ServerShard in sync mode, plain SGD, served by serveShard on a bound ROUTER) and N worker
 * processes (the worker's ParameterClient, one DEALER per shard). One round: every worker pushes
 * S bytes of gradient split over the K shards by partitionKeys, the shards average the N
 * gradients and apply SGD, and every worker receives S bytes of new weights.
 *
 *   round       the period between worker 0's consecutive pushPull completions (steady state;
 *               in sync mode every worker finishes a round together), warm-up rounds excluded
 *   push_pull   per round, the slowest worker's send-to-new-weights time
 *   server_GBps 2·N·S / round median (GB = 1e9 bytes; bytes through all shards together)
 *
 * The K + N processes of one (malloc, transport, N, K) group are started once and measure every
 * size in turn: per size each server builds a fresh ServerShard on a freshly bound ROUTER and
 * each worker a fresh ParameterClient (so a size never inherits sockets or weights, but does
 * inherit a warm JIT and malloc heap, as a long training run would). Warm-up (--warmup auto)
 * lasts until each worker has received ~48 MiB (see warmupFor); the timed rounds then fill about
 * --seconds (5..50 rounds; 3 when a round takes over 0.25 s), or exactly --iters.
 * After every measurement the machine's CPU time is compared with the bench's own: when other
 * processes took more than --max-foreign of the 2 cores, the size is measured again (twice at
 * most) once the machine is quiet; `foreign_cpu_frac` reports the share.
 *
 * One JSON line per measurement on stdout with the keys of ../shared/peers' ps_round lines
 * (both median_s/min_s/max_s/server_GBps and summarize.py's round_*_s / server_GBps_median),
 * plus per-round diagnostics: time inside ServerShard.handle summed over the shards, CPU
 * (user/sys, all threads) and minor page faults of the shards together and of one worker, and
 * whether the final weights are right. Progress and the same diagnostics in words on stderr.
 *
 * The children are this script re-invoked with --role server|worker, coordinated over the Node
 * IPC channel. Every wait of the driver has a deadline; a child that dies, fails or stays silent
 * ends the bench with an error naming it; children exit when the driver goes away, and the
 * driver kills them all on exit, SIGINT, SIGTERM and SIGHUP.
 * --curve off|on|both measures with CURVE on every socket as well (keys from --curve-keys DIR, or
 * fresh ones in a temporary folder): the cost of encryption, in docs/security.md.
 * Node/V8 flags for the children (e.g. --cpu-prof) go in PS_TRAIN_NODE_ARGS, as for ps-train;
 * extra glibc settings (e.g. MALLOC_ARENA_MAX=1) pass through the environment.
 */
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { constants, PerformanceObserver } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { TUNED_MALLOC_ENV } from "../src/cluster/local-launcher.js";
import { DEFAULTS, type OptimizerConfig, type TransportName } from "../src/config/train-config.js";
import { createMode } from "../src/modes/index.js";
import { type KeyRange, partitionKeys } from "../src/ps/key-range.js";
import { serveShard } from "../src/ps/server-main.js";
import { ServerShard } from "../src/ps/server-shard.js";
import { CURVE_KEYS_ENV, generateCurveKeys, loadCurveKeys } from "../src/transport/curve-keys.js";
import { bindAddress } from "../src/transport/endpoint.js";
import { ShmFiles, shmDir } from "../src/transport/shm.js";
import { bindSocket, enableCurveFromEnv, newBoundRouter } from "../src/transport/sockets.js";
import { ParameterClient, type ShardEndpoint } from "../src/worker/ps-client.js";
import { ChildProcesses, type DriverChannel, driverChannel, killAllChildren, killChildrenOnExit, machineCpu, parseSize, positiveInts, quantiles, setChildIpcTag, waitQuiet } from "./bench-util.js";

const SELF = fileURLToPath(import.meta.url);
const RUN_ID = 0x5eed;
/** the longest a child may stay silent while the driver waits for it */
const STALL_MS = 30_000;
/** a worker's per-request deadline inside ParameterClient (a dead or hung shard) */
const REQUEST_TIMEOUT_MS = 20_000;
/** the gradient every worker pushes, and plain SGD at this rate: after T rounds every weight is -LR·G·T */
const LR = 0.01;
const GRAD = 1;
type Malloc = "tuned" | "default";

type ToChild =
  | { type: "shard"; cell: number; range: KeyRange; warmup: number }
  | { type: "map"; servers: ShardEndpoint[]; size: number }
  | { type: "warm"; rounds: number }
  | { type: "go"; iters: number }
  | { type: "stop" }
  | { type: "exit" };
/** CPU seconds (all threads: V8 and libzmq's I/O thread) and minor page faults of one process */
interface Usage {
  user: number;
  sys: number;
  faults: number;
  /** main-thread GC pauses (seconds) and how many of them were full mark-compacts */
  gc: number;
  majorGcs: number;
}
interface ServerStats {
  /** rounds applied after warm-up, which `handleSeconds` and `usage` cover */
  rounds: number;
  handleSeconds: number;
  usage: Usage;
  /** CPU seconds from the driver's go to stop (to tell our load from other processes') */
  cpuSinceGo: number;
  errors: Record<string, number>;
}
type FromChild =
  | { type: "endpoint"; endpoint: string }
  | { type: "ready" }
  | { type: "warmed"; latencies: number[] }
  | { type: "progress"; done: number }
  | { type: "times"; ends: number[]; latencies: number[]; first: number; last: number; usage: Usage; cpuSinceGo: number }
  | { type: "stats"; stats: ServerStats }
  | { type: "error"; message: string };

// ---------------------------------------------------------------- child roles

let gcSeconds = 0;
let majorGcs = 0;
/** Count this process's GC pauses (children only; entries arrive a little after each GC). */
function observeGc(): void {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcSeconds += e.duration / 1000;
      if ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majorGcs++;
    }
  }).observe({ entryTypes: ["gc"] });
}

function usage(): Usage {
  const u = process.resourceUsage();
  return { user: u.userCPUTime / 1e6, sys: u.systemCPUTime / 1e6, faults: u.minorPageFault, gc: gcSeconds, majorGcs };
}

function usageSince(u0: Usage): Usage {
  const u = usage();
  return { user: u.user - u0.user, sys: u.sys - u0.sys, faults: u.faults - u0.faults, gc: u.gc - u0.gc, majorGcs: u.majorGcs - u0.majorGcs };
}

function cpuOf(u: Usage): number {
  return u.user + u.sys;
}

/** The line to the driver, in a child process (set up by child()). */
let channel: DriverChannel<ToChild, FromChild> | null = null;
const send = (m: FromChild): void => channel?.send(m);
const next = <K extends ToChild["type"]>(...types: K[]) => channel!.next(...types);
function fail(err: unknown): void {
  if (channel) channel.fail(err);
  else process.exit(1);
}

async function serverRole(shard: number, workers: number, transport: TransportName, tag: string): Promise<void> {
  const optimizer: OptimizerConfig = { ...DEFAULTS, optimizer: "sgd", lr: LR, momentum: 0, weightDecay: 0, lrSchedule: "constant", warmupSteps: 0, totalSteps: 0 };
  for (;;) {
    const m = await next("shard", "exit");
    if (m.type === "exit") return;
    const files = transport === "shm" ? new ShmFiles(shmDir(tag)) : null;
    const s = new ServerShard({
      shard,
      runId: RUN_ID,
      range: m.range,
      workers,
      mode: createMode("sync", 0),
      optimizer,
      init: new Float32Array(m.range.end - m.range.start),
      ...(files ? { shm: files } : {}),
    });
    // Time spent inside the state machine (finite check, accumulate, SGD, reply copy), and this
    // process's CPU time and page faults, from the end of the warm-up rounds on.
    let handleMs = 0;
    let u0: Usage | null = null;
    const handle = s.handle.bind(s);
    s.handle = (from, frames, now) => {
      const t0 = performance.now();
      const out = handle(from, frames, now);
      if (u0 !== null) handleMs += performance.now() - t0;
      else if (s.version >= m.warmup) u0 = usage();
      return out;
    };
    // The options of the ps-train server process (src/ps/server-main.ts).
    const router = newBoundRouter(`bench shard ${shard}`, { linger: 0, receiveHighWaterMark: 1000, sendHighWaterMark: 1000, mandatory: false });
    await bindSocket(router, bindAddress(transport, tag, `server-${shard}-${m.cell}`));
    const endpoint = router.lastEndpoint;
    if (!endpoint) throw new Error("the bound ROUTER reports no endpoint");
    let stopping = false;
    const serving = serveShard(router, s).catch((err: unknown) => {
      if (!stopping) fail(err);
    });
    send({ type: "endpoint", endpoint });
    await next("go");
    const atGo = usage();
    await next("stop");
    stopping = true;
    send({
      type: "stats",
      stats: {
        rounds: s.version - m.warmup,
        handleSeconds: handleMs / 1000,
        usage: u0 ? usageSince(u0) : { user: 0, sys: 0, faults: 0, gc: 0, majorGcs: 0 },
        cpuSinceGo: cpuOf(usageSince(atGo)),
        errors: s.errors,
      },
    });
    router.close();
    await serving;
    s.dispose(); // its arrays' memory goes to the next size's shard
    files?.close();
  }
}

async function workerRole(rank: number, transport: TransportName, tag: string): Promise<void> {
  for (;;) {
    const map = await next("map", "exit");
    if (map.type === "exit") return;
    const size = map.size;
    const weights = new Float32Array(size);
    const gradient = new Float32Array(size).fill(GRAD);
    const ps = new ParameterClient(RUN_ID, rank, map.servers, weights, REQUEST_TIMEOUT_MS, transport === "shm" ? new ShmFiles(shmDir(tag)) : null);
    await ps.pull(0);
    send({ type: "ready" });
    let clock = 0;
    // Warm-up, except its last round: the driver sizes the timed phase from these round times.
    const warm = await next("warm");
    const warmLatencies: number[] = [];
    for (let i = 0; i < warm.rounds; i++) {
      const t0 = performance.now();
      await ps.pushPull(clock++, gradient);
      warmLatencies.push((performance.now() - t0) / 1000);
    }
    send({ type: "warmed", latencies: warmLatencies });
    // The last warm-up round (it absorbs the skew of the go message between workers), then the
    // timed rounds, each timed from the previous round's end.
    const go = await next("go");
    const atGo = usage();
    const total = 1 + go.iters;
    const ends = new Float64Array(total);
    const latencies = new Float64Array(total);
    let lastProgress = performance.now();
    let u0 = usage();
    for (let i = 0; i < total; i++) {
      const t0 = performance.now();
      await ps.pushPull(clock++, gradient);
      const t1 = performance.now();
      ends[i] = t1;
      latencies[i] = t1 - t0;
      if (i === 0) u0 = usage();
      if (t1 - lastProgress > 1000) {
        send({ type: "progress", done: i + 1 });
        lastProgress = t1;
      }
    }
    const u = usageSince(u0);
    ps.close();
    send({ type: "times", ends: Array.from(ends), latencies: Array.from(latencies), first: weights[0] ?? NaN, last: weights[size - 1] ?? NaN, usage: u, cpuSinceGo: cpuOf(usageSince(atGo)) });
  }
}

async function child(): Promise<void> {
  const { values } = parseArgs({
    options: {
      role: { type: "string" },
      rank: { type: "string" },
      workers: { type: "string" },
      transport: { type: "string" },
      tag: { type: "string" },
    },
  });
  observeGc();
  // Exits when the driver goes away (it exited or was killed): nobody wants our results.
  channel = driverChannel<ToChild, FromChild>("bench driver");
  try {
    // --curve on: the driver hands the key folder down as PS_TRAIN_CURVE_KEYS, as ps-train does.
    await enableCurveFromEnv(values.role === "server" ? "server" : "worker");
    if (values.role === "server") await serverRole(Number(values.rank), Number(values.workers), values.transport as TransportName, values.tag ?? "bench");
    else if (values.role === "worker") await workerRole(Number(values.rank), values.transport as TransportName, values.tag ?? "bench");
    else throw new Error(`unknown --role ${values.role}`);
    process.exit(0);
  } catch (err) {
    fail(err);
  }
}

// ---------------------------------------------------------------- driver

interface GroupSpec {
  transport: TransportName;
  malloc: Malloc;
  workers: number;
  shards: number;
  /** the folder of CURVE keys, or null: no CURVE */
  curveKeys: string | null;
}

interface Cell {
  sizeBytes: number;
  /** timed rounds; undefined: as many as fit in `seconds`, judged from the warm-up rounds */
  iters: number | undefined;
  seconds: number;
  warmup: number;
  verbose: boolean;
}

/** The K server and N worker processes of one group, and what they have said. */
class Group extends ChildProcesses<ToChild, FromChild> {
  readonly servers: ChildProcess[];
  readonly workers: ChildProcess[];
  readonly tag: string;
  private cells = 0;

  constructor(readonly spec: GroupSpec) {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of Object.keys(TUNED_MALLOC_ENV)) delete env[k];
    if (spec.malloc === "tuned") Object.assign(env, TUNED_MALLOC_ENV);
    delete env[CURVE_KEYS_ENV];
    if (spec.curveKeys !== null) env[CURVE_KEYS_ENV] = spec.curveKeys;
    // progress reports only show that a child is alive (lastHeard): not queued
    super(SELF, "the bench", env, STALL_MS, (_, m) => m.type === "progress");
    this.tag = `bench-${process.pid}-${randomBytes(3).toString("hex")}`;
    if (spec.transport !== "tcp") setChildIpcTag(this.tag);
    const common = ["--workers", String(spec.workers), "--transport", spec.transport, "--tag", this.tag];
    this.servers = Array.from({ length: spec.shards }, (_, k) => this.start(`server shard ${k}`, ["--role", "server", "--rank", String(k), ...common]));
    this.workers = Array.from({ length: spec.workers }, (_, r) => this.start(`worker ${r}`, ["--role", "worker", "--rank", String(r), ...common]));
  }

  /** Ask every child to exit, wait (bounded), then kill what is left; after a failure, kill at once. */
  async closeGroup(graceful: boolean): Promise<void> {
    await this.close({ type: "exit" }, graceful);
    killAllChildren();
  }

  /** One measurement: a fresh shard per server and client per worker, warm-up, timed rounds. */
  async measure(cell: Cell): Promise<Record<string, unknown>> {
    const { workers: n, shards: k } = this.spec;
    const size = Math.floor(cell.sizeBytes / 4);
    const ranges = partitionKeys(size, k);
    const t0 = performance.now();
    const id = this.cells++;
    ranges.forEach((range, i) => this.servers[i]!.send({ type: "shard", cell: id, range, warmup: cell.warmup } satisfies ToChild));
    const endpoints = await this.waitAll(this.servers, "endpoint");
    const servers: ShardEndpoint[] = endpoints.map((m, i) => ({ shard: i, endpoint: m.endpoint, range: ranges[i]! }));
    this.send(this.workers, { type: "map", servers, size });
    await this.waitAll(this.workers, "ready");
    const setup = performance.now() - t0;

    this.send(this.workers, { type: "warm", rounds: cell.warmup - 1 });
    const warmed = await this.waitAll(this.workers, "warmed");
    const iters = cell.iters ?? itersFor(warmed[0]!.latencies, cell, n);
    const machine0 = machineCpu();
    const own0 = process.cpuUsage();
    this.send(this.servers, { type: "go", iters });
    this.send(this.workers, { type: "go", iters });
    const results = await this.waitAll(this.workers, "times");
    const machine1 = machineCpu();
    const own = process.cpuUsage(own0);
    this.send(this.servers, { type: "stop" });
    const stats = (await this.waitAll(this.servers, "stats")).map((m) => m.stats);

    const w = cell.warmup;
    const ends0 = results[0]!.ends;
    const periods = ends0.slice(1).map((e, i) => (e - ends0[i]!) / 1000);
    const pushPull = periods.map((_, i) => Math.max(...results.map((r) => r.latencies[i + 1]!)) / 1000);
    const round = quantiles(periods);
    const pp = quantiles(pushPull);
    const rounds = w + iters;
    const expect = -LR * GRAD * rounds;
    const correct = results.every((r) => Math.abs(r.first - expect) < 1e-4 * rounds && Math.abs(r.last - expect) < 1e-4 * rounds);
    // Server-side figures per timed round, summed over the shards; worker figures: mean per worker.
    const serverRounds = Math.max(1, Math.min(...stats.map((x) => x.rounds)));
    const handlePerRound = stats.reduce((a, x) => a + x.handleSeconds, 0) / serverRounds;
    const serverUser = stats.reduce((a, x) => a + x.usage.user, 0) / serverRounds;
    const serverSys = stats.reduce((a, x) => a + x.usage.sys, 0) / serverRounds;
    const serverFaults = stats.reduce((a, x) => a + x.usage.faults, 0) / serverRounds;
    const workerUser = results.reduce((a, r) => a + r.usage.user, 0) / n / iters;
    const workerSys = results.reduce((a, r) => a + r.usage.sys, 0) / n / iters;
    const workerFaults = results.reduce((a, r) => a + r.usage.faults, 0) / n / iters;
    const serverGc = stats.reduce((a, x) => a + x.usage.gc, 0) / serverRounds;
    const serverMajor = stats.reduce((a, x) => a + x.usage.majorGcs, 0) / serverRounds;
    const workerGc = results.reduce((a, r) => a + r.usage.gc, 0) / n / iters;
    const workerMajor = results.reduce((a, r) => a + r.usage.majorGcs, 0) / n / iters;
    // CPU the machine spent in the measured interval beyond this bench's processes: another
    // process sharing the cores (the figures of such a measurement are not to be trusted).
    const ours = results.reduce((a, r) => a + r.cpuSinceGo, 0) + stats.reduce((a, x) => a + x.cpuSinceGo, 0) + (own.user + own.system) / 1e6;
    const foreign = machine1 && machine0 ? Math.max(0, (machine1.busy - machine0.busy - ours) / (machine1.total - machine0.total || 1)) : NaN;
    const gbps = (2 * n * cell.sizeBytes) / round.median / 1e9;
    const errors = stats.flatMap((x) => Object.entries(x.errors).map(([key, v]) => `${key}:${v}`));
    const ms = (x: number) => (x * 1e3).toFixed(2);
    if (cell.verbose) process.stderr.write(`bench-ps:   rounds (ms, in order): ${periods.map(ms).join(" ")}\n`);
    process.stderr.write(
      `bench-ps:   round ${ms(round.median)} ms (${ms(round.min)}-${ms(round.max)}, ${periods.length} rounds after ${w}), ${gbps.toFixed(2)} GB/s; ` +
        `per round: shards handle() ${ms(handlePerRound)} ms, cpu ${ms(serverUser)} user + ${ms(serverSys)} sys ms, ${serverFaults.toFixed(0)} faults, ` +
        `GC ${ms(serverGc)} ms (${serverMajor.toFixed(2)} full); each worker cpu ${ms(workerUser)} + ${ms(workerSys)} ms, ${workerFaults.toFixed(0)} faults, ` +
        `GC ${ms(workerGc)} ms (${workerMajor.toFixed(2)} full); ` +
        `other processes ${(foreign * 100).toFixed(0)}% of the machine; set-up ${(setup / 1000).toFixed(2)} s, all ${((performance.now() - t0) / 1000).toFixed(2)} s` +
        `${correct ? "" : "; WRONG WEIGHTS"}${errors.length ? `; shard errors ${errors.join(",")}` : ""}\n`,
    );
    const extra = mallocExtra(this.env);
    return {
      bench: "ps_round",
      impl: `ps-train-zmq ${this.spec.transport}`,
      // summarize.py appends `variant` to the name in its table
      variant: `K=${k}${this.spec.curveKeys !== null ? " curve" : ""}`,
      malloc: this.spec.malloc,
      curve: this.spec.curveKeys !== null,
      ...(extra ? { malloc_extra: extra } : {}),
      n,
      shards: k,
      processes: n + k,
      size_bytes: cell.sizeBytes,
      size_MiB: cell.sizeBytes / 2 ** 20,
      warmup: w,
      reps: periods.length,
      median_s: round.median,
      min_s: round.min,
      max_s: round.max,
      round_median_s: round.median,
      round_min_s: round.min,
      round_max_s: round.max,
      push_pull_median_s: pp.median,
      push_pull_min_s: pp.min,
      push_pull_max_s: pp.max,
      server_GBps: gbps,
      server_GBps_median: gbps,
      server_handle_s_per_round: handlePerRound,
      server_user_s_per_round: serverUser,
      server_sys_s_per_round: serverSys,
      server_faults_per_round: serverFaults,
      worker_user_s_per_round: workerUser,
      worker_sys_s_per_round: workerSys,
      worker_faults_per_round: workerFaults,
      server_gc_s_per_round: serverGc,
      server_full_gcs_per_round: serverMajor,
      worker_gc_s_per_round: workerGc,
      worker_full_gcs_per_round: workerMajor,
      foreign_cpu_frac: foreign,
      correct,
    };
  }
}

/** glibc malloc settings in the children's environment beyond --malloc (e.g. MALLOC_ARENA_MAX=1). */
function mallocExtra(env: NodeJS.ProcessEnv): string {
  return Object.keys(env)
    .filter((k) => /^MALLOC_|^GLIBC_TUNABLES$/.test(k) && !(k in TUNED_MALLOC_ENV))
    .map((k) => `${k}=${env[k]}`)
    .join(" ");
}

/**
 * Warm-up rounds: zeromq.js hands received messages to JS zero-copy and frees them only when V8
 * collects the Buffer, so until the first few collections every receive lands in fresh heap
 * memory and pays its page faults (~10 us per 4 KiB page here): a 1 MiB round takes ~10 ms for
 * the first ~30 rounds, then ~1.5 ms; a 64 KiB round trip ~0.8-1 ms for several hundred, then ~0.3 ms.
 * Warm up until each worker has received ~48 MiB (at most 1000 rounds).
 */
function warmupFor(sizeBytes: number): number {
  return Math.max(sizeBytes >= 32 * 2 ** 20 ? 2 : 3, Math.min(1000, Math.ceil((48 * 2 ** 20) / sizeBytes)));
}

/**
 * Timed rounds: as many as fit in `cell.seconds` at the pace of the fastest warm-up round
 * (warm-up rounds are slower than the steady state), at least 5 (3 when a round takes over
 * 0.25 s) and at most 50. Without warm-up rounds to go by: by bytes, at ~1.5 GB/s.
 */
function itersFor(warmLatencies: number[], cell: Cell, workers: number): number {
  const est = warmLatencies.length ? Math.min(...warmLatencies) : (2 * workers * cell.sizeBytes) / 1.5e9;
  return Math.max(est > 0.25 ? 3 : 5, Math.min(50, Math.round(cell.seconds / est)));
}

const USAGE = `usage: npm run bench:ps -- [--sizes 1MiB,4MiB,16MiB,64MiB] [--workers 1,2,4,8] [--shards 1,2,4]
                          [--transports tcp,ipc,shm] [--malloc tuned|default|both]
                          [--seconds 0.6 | --iters N] [--warmup auto|N] [--max-foreign 0.15]
                          [--curve off|on|both] [--curve-keys DIR] [--quick] [--verbose]
`;

async function driver(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: "string", default: "1MiB,4MiB,16MiB,64MiB" },
      workers: { type: "string", default: "1,2,4,8" },
      shards: { type: "string", default: "1,2,4" },
      transports: { type: "string", default: "tcp,ipc,shm" },
      malloc: { type: "string", default: "tuned" },
      curve: { type: "string", default: "off" },
      "curve-keys": { type: "string" },
      iters: { type: "string" },
      seconds: { type: "string", default: "0.6" },
      warmup: { type: "string", default: "auto" },
      "max-foreign": { type: "string", default: "0.15" },
      quick: { type: "boolean", default: false },
      verbose: { type: "boolean", short: "v", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stderr.write(USAGE);
    return;
  }
  const sizes = (values.quick ? "64KiB,1MiB" : values.sizes).split(",").map(parseSize);
  const workers = positiveInts(values.quick ? "1,2" : values.workers, "workers");
  const shards = positiveInts(values.quick ? "1,2" : values.shards, "shards");
  const transports = values.transports.split(",").map((t) => t.trim());
  for (const t of transports) if (t !== "tcp" && t !== "ipc" && t !== "shm") throw new Error(`--transports: unknown transport ${t} (tcp, ipc, shm)`);
  const m = values.malloc;
  if (m !== "tuned" && m !== "default" && m !== "both") throw new Error(`--malloc: ${m} is not tuned, default or both`);
  const mallocs: Malloc[] = m === "both" ? ["tuned", "default"] : [m];
  const c = values.curve;
  if (c !== "off" && c !== "on" && c !== "both") throw new Error(`--curve: ${c} is not off, on or both`);
  let keyDir: string | null = null;
  if (c !== "off") {
    keyDir = values["curve-keys"] ?? join(mkdtempSync(join(tmpdir(), "bench-ps-keys-")), "keys");
    if (values["curve-keys"] === undefined) generateCurveKeys(keyDir, false);
    for (const role of ["server", "worker"] as const) loadCurveKeys(keyDir, role);
  }
  const curves: (string | null)[] = c === "both" ? [null, keyDir] : [keyDir];
  const fixedWarmup = values.warmup === "auto" ? undefined : Number(values.warmup);
  if (fixedWarmup !== undefined && (!Number.isInteger(fixedWarmup) || fixedWarmup < 1))
    throw new Error("--warmup must be auto or an integer >= 1 (the first timed round's period needs a round before it)");
  const seconds = Number(values.seconds);
  if (!(seconds > 0)) throw new Error("--seconds must be > 0");
  const iters = values.iters === undefined ? undefined : positiveInts(values.iters, "iters")[0];
  const maxForeign = Number(values["max-foreign"]);
  if (!(maxForeign >= 0)) throw new Error("--max-foreign must be a fraction of the machine, >= 0 (0: never measure again)");

  const total = curves.length * mallocs.length * transports.length * workers.length * shards.length * sizes.length;
  let i = 0;
  const t0 = performance.now();
  for (const curveKeys of curves)
  for (const malloc of mallocs)
    for (const transport of transports as TransportName[])
      for (const n of workers)
        for (const k of shards) {
          const spec: GroupSpec = { transport, malloc, workers: n, shards: k, curveKeys };
          const group = new Group(spec);
          let done = false;
          try {
            for (const sizeBytes of sizes) {
              const warmup = fixedWarmup ?? warmupFor(sizeBytes);
              i++;
              process.stderr.write(`bench-ps: [${i}/${total}] ${transport}${curveKeys !== null ? " curve" : ""} malloc=${malloc} N=${n} K=${k} size=${sizeBytes} rounds=${warmup}+${iters ?? `~${seconds} s`}\n`);
              const cell: Cell = { sizeBytes, iters, seconds, warmup, verbose: values.verbose };
              let line = await group.measure(cell);
              // Another process took a share of the 2 cores: wait for quiet and measure again (twice at most).
              for (let retry = 0; maxForeign > 0 && retry < 2 && (line["foreign_cpu_frac"] as number) > maxForeign; retry++) {
                process.stderr.write(`bench-ps:   other processes used ${((line["foreign_cpu_frac"] as number) * 100).toFixed(0)}% of the machine; measuring again once it is quiet\n`);
                await waitQuiet(maxForeign, 60_000, "bench-ps");
                line = await group.measure(cell);
              }
              process.stdout.write(JSON.stringify(line) + "\n");
            }
            done = true;
          } finally {
            await group.closeGroup(done);
          }
        }
  process.stderr.write(`bench-ps: ${total} measurements in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
}

if (process.argv.includes("--role")) void child();
else {
  killChildrenOnExit("bench-ps");
  driver().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`bench-ps: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
