/**
 * npm run bench:allreduce [-- --workers 2,4,8 --sizes 4KiB,1MiB,16MiB,64MiB --algo auto|ring|doubling[,..]
 *                           --transports ipc,tcp,shm --segment-bytes 262144[,..] --small-bytes 65536
 *                           --seconds 1 | --iters N --warmup auto|N --malloc tuned|default
 *                           --max-foreign 0.15 --timeout-ms 30000
 *                           --socket-buffer 0[,B..] --young-gc 16MiB[,0,..] --io-threads 2[,0,..]]
 *
 * ps-train's allreduce between real processes: N rank processes join a peer group through the
 * same coordinator rendezvous as a training run (READY with the bound endpoint, MAP with all of
 * them), then reduce a float32 buffer of S bytes (op sum) again and again. Each iteration is a
 * barrier, then the collective timed on every rank; the iteration's time is the slowest rank's.
 * Reported: median, min and max over the timed iterations after warm-up, algbw = S / t and
 * busbw = algbw · 2(N−1)/N (nccl-tests' definitions), one JSON line per measurement with both
 * this project's keys and those of ../shared/peers (impl, n, size_bytes, median_s, ...), so
 * `summarize.py` puts them in one table with gloo and OpenMPI.
 *
 * The N processes of one (transport, algo, segment, N) group are started once and measure every
 * size in turn. Warm-up lasts until each rank has reduced ~48 MiB (3..200 iterations: received
 * buffers come from fresh heap pages until the first garbage collections); the timed iterations
 * fill about --seconds at the pace of the fastest warm-up iteration (5..200), or exactly --iters.
 * The first warm-up iteration checks the result (every rank r contributes r+1, so every element
 * must be N(N+1)/2): `correct` in the output. Before each size the machine must be quiet: other
 * processes busier than --max-foreign of the 2 cores make it wait (60 s at most; `foreignBusy`
 * reports what it saw).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Allreducer, type AllreduceAlgo, ALLREDUCE_ALGOS, ALLREDUCE_DEFAULTS } from "../src/allreduce/allreducer.js";
import { DEFAULT_IO_THREADS, DEFAULT_YOUNG_GC_BYTES } from "../src/allreduce/peer-group.js";
import { joinPeerGroup, publishPeerMap } from "../src/allreduce/rendezvous.js";
import { ControlClient } from "../src/cluster/control-client.js";
import { Coordinator } from "../src/cluster/coordinator.js";
import { TUNED_MALLOC_ENV } from "../src/cluster/local-launcher.js";
import type { TransportName } from "../src/config/train-config.js";
import { bindAddress, removeIpcDir } from "../src/transport/endpoint.js";
import { removeShmDir } from "../src/transport/shm.js";
import { MsgType } from "../src/transport/header.js";
import { machineBusy, parseSize, positiveInts, quantiles, waitQuiet } from "./bench-util.js";
import { allocF32, freeF32 } from "../src/util/simd.js";

const SELF = fileURLToPath(import.meta.url);

interface RankConfig {
  runId: number;
  runTag: string;
  size: number;
  transport: TransportName;
  algo: AllreduceAlgo;
  segmentBytes: number;
  smallBytes: number;
  socketBufferBytes: number;
  youngGcBytes: number;
  ioThreads: number;
  timeoutMs: number;
}

interface CaseMsg {
  bytes: number;
  warmup: number;
  /** 0: as many as fit in `seconds` */
  iters: number;
  seconds: number;
}

interface CaseResult {
  rank: number;
  times: number[];
  warmup: number;
  correct: boolean;
  algoUsed: string;
}

// ---------------------------------------------------------------- rank process

async function rankMain(rank: number, coordinator: string, timeoutMs: number): Promise<void> {
  const control = new ControlClient(coordinator, "worker", rank, timeoutMs);
  process.on("disconnect", () => process.exit(3));
  const cfg = (await control.hello()).body as RankConfig;
  control.setRunId(cfg.runId);
  control.startHeartbeat(1000);
  const group = await joinPeerGroup(control, { rank, size: cfg.size, runId: cfg.runId, runTag: cfg.runTag, transport: cfg.transport, timeoutMs: cfg.timeoutMs, socketBufferBytes: cfg.socketBufferBytes, ioThreads: cfg.ioThreads, youngGcBytes: cfg.youngGcBytes });
  const ar = new Allreducer(group, { algo: cfg.algo, segmentBytes: cfg.segmentBytes, smallBytes: cfg.smallBytes });
  const one = new Float32Array(1);
  for (;;) {
    const m = await control.next([MsgType.START, MsgType.STOP], 600_000, "a case");
    if (m.header.type === MsgType.STOP) break;
    const c = m.body as CaseMsg;
    // Where a training worker keeps its gradient (the SIMD kernels' memory; plain with PS_TRAIN_SIMD=0).
    const buf = allocF32(c.bytes / 4);
    const expect = (cfg.size * (cfg.size + 1)) / 2;
    let correct = true;
    const run = async (): Promise<number> => {
      buf.fill(rank + 1);
      await group.barrier();
      const t0 = performance.now();
      await ar.allreduce(buf, "sum");
      return (performance.now() - t0) / 1000;
    };
    const warm: number[] = [];
    for (let i = 0; i < c.warmup; i++) {
      warm.push(await run());
      if (i === 0) for (let k = 0; k < buf.length; k++) if (buf[k] !== expect) correct = false;
    }
    // Rank 0 decides how many timed iterations fit, and tells the others.
    one[0] = c.iters > 0 ? c.iters : Math.max(5, Math.min(200, Math.round(c.seconds / Math.max(1e-6, Math.min(...warm)))));
    await ar.broadcast(one, 0);
    const times: number[] = [];
    for (let i = 0; i < one[0]!; i++) times.push(await run());
    const res: CaseResult = { rank, times, warmup: c.warmup, correct, algoUsed: ar.algoFor(c.bytes) };
    freeF32(buf);
    await control.send(MsgType.PROGRESS, res);
  }
  await group.barrier();
  group.close();
  control.close();
}

// ---------------------------------------------------------------- driver

const USAGE = `usage: npm run bench:allreduce -- [--workers 2,4,8] [--sizes 4KiB,1MiB,16MiB,64MiB]
                          [--algo auto|ring|doubling[,...]] [--transports ipc,tcp,shm]
                          [--segment-bytes B[,...]] [--small-bytes B] [--seconds 1 | --iters N]
                          [--warmup auto|N] [--malloc tuned|default] [--max-foreign 0.15] [--timeout-ms 30000]
                          [--socket-buffer 0|B[,...]] [--young-gc B|0[,...]] [--io-threads 2|N[,...]]
Lists sweep every combination. --socket-buffer: SO_SNDBUF/SO_RCVBUF (0 = OS default);
--young-gc: minor GC every B received (0 = off); --io-threads: libzmq I/O threads of the group's context (0 = the process's default context).
`;

function sizeOrZero(s: string): number {
  return s.trim() === "0" ? 0 : parseSize(s);
}

function warmupFor(bytes: number): number {
  return Math.max(3, Math.min(200, Math.ceil((48 * 2 ** 20) / bytes)));
}

async function group(o: { transport: TransportName; algo: AllreduceAlgo; segmentBytes: number; socketBufferBytes: number; youngGcBytes: number; ioThreads: number; smallBytes: number; N: number; sizes: number[]; iters: number; warmup: number | "auto"; seconds: number; malloc: string; maxForeign: number; timeoutMs: number }): Promise<void> {
  const runId = randomBytes(4).readUInt32LE(0) || 1;
  const runTag = `bench-ar-${process.pid}-${runId.toString(16)}`;
  const coord = new Coordinator(runId, o.timeoutMs);
  const children: ChildProcess[] = [];
  let stopping = false;
  const kill = () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  };
  process.once("exit", kill);
  try {
    const endpoint = await coord.bind(bindAddress("ipc", runTag, "coordinator"));
    const env = { ...process.env };
    if (o.malloc === "tuned") for (const [k, v] of Object.entries(TUNED_MALLOC_ENV)) env[k] ??= v;
    const nodeArgs = (process.env["PS_TRAIN_NODE_ARGS"] ?? "").split(" ").filter(Boolean);
    for (let r = 0; r < o.N; r++) {
      coord.expect("worker", r);
      const c = spawn(process.execPath, [...nodeArgs, SELF, "--rank", String(r), "--coordinator", endpoint, "--timeout-ms", String(o.timeoutMs)], { stdio: ["ignore", "inherit", "inherit", "ipc"], env });
      c.on("exit", (code, signal) => {
        if (!stopping || code !== 0) coord.fail(new Error(`rank ${r} (pid ${c.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}`));
      });
      children.push(c);
    }
    await coord.waitForHellos();
    coord.startWatchdog(1000, o.timeoutMs);
    const cfg: RankConfig = { runId, runTag, size: o.N, transport: o.transport, algo: o.algo, segmentBytes: o.segmentBytes, smallBytes: o.smallBytes, socketBufferBytes: o.socketBufferBytes, youngGcBytes: o.youngGcBytes, ioThreads: o.ioThreads, timeoutMs: o.timeoutMs };
    await coord.broadcast("worker", MsgType.CONFIG, cfg);
    await publishPeerMap(coord, o.N, o.timeoutMs);
    for (const bytes of o.sizes) {
      const before = await machineBusy(300);
      if (before > o.maxForeign) await waitQuiet(o.maxForeign, 60_000, "bench-allreduce");
      const warmup = o.warmup === "auto" ? warmupFor(bytes) : o.warmup;
      const c: CaseMsg = { bytes, warmup, iters: o.iters, seconds: o.seconds };
      await coord.broadcast("worker", MsgType.START, c);
      const results: CaseResult[] = [];
      await coord.collect(MsgType.PROGRESS, o.N, Math.max(o.timeoutMs, 600_000), (ev) => results.push(ev.body as CaseResult), () =>
        Array.from({ length: o.N }, (_, r) => r).filter((r) => !results.some((x) => x.rank === r)).map((r) => `worker:${r}`),
      );
      const iters = results[0]!.times.length;
      const slowest = Array.from({ length: iters }, (_, i) => Math.max(...results.map((x) => x.times[i]!)));
      const q = quantiles(slowest);
      const algbw = bytes / q.median / 1e9;
      const busbw = (algbw * 2 * (o.N - 1)) / o.N;
      const line = {
        bench: "allreduce",
        impl: `ps-train ${results[0]!.algoUsed} zmq-${o.transport}`,
        algo: o.algo,
        algoUsed: results[0]!.algoUsed,
        transport: o.transport,
        workers: o.N,
        n: o.N,
        bytes,
        size_bytes: bytes,
        segmentBytes: o.segmentBytes,
        socketBufferBytes: o.socketBufferBytes,
        youngGcBytes: o.youngGcBytes,
        ioThreads: o.ioThreads,
        medianSeconds: q.median,
        minSeconds: q.min,
        maxSeconds: q.max,
        median_s: q.median,
        min_s: q.min,
        max_s: q.max,
        algbwGBps: algbw,
        busbwGBps: busbw,
        busbw_GBps_median: busbw,
        iters,
        warmup,
        reps: iters,
        malloc: o.malloc,
        correct: results.every((x) => x.correct),
        foreignBusy: Number(before.toFixed(3)),
      };
      process.stdout.write(JSON.stringify(line) + "\n");
      process.stderr.write(
        `bench-allreduce: ${o.transport} ${line.algoUsed} N=${o.N} ${bytes} B: median ${(q.median * 1e3).toFixed(3)} ms (${(q.min * 1e3).toFixed(3)}–${(q.max * 1e3).toFixed(3)}), busbw ${busbw.toFixed(3)} GB/s over ${iters} iterations${line.correct ? "" : "  RESULT WRONG"}\n`,
      );
    }
    stopping = true;
    await coord.broadcast("worker", MsgType.STOP);
    const deadline = Date.now() + o.timeoutMs;
    while (children.some((c) => c.exitCode === null) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  } finally {
    stopping = true;
    kill();
    coord.close();
    removeIpcDir(runTag);
    removeShmDir(runTag);
  }
}

async function driver(): Promise<void> {
  const { values } = parseArgs({
    options: {
      workers: { type: "string", default: "2,4,8" },
      sizes: { type: "string", default: "4KiB,1MiB,16MiB,64MiB" },
      algo: { type: "string", default: "auto" },
      transports: { type: "string", default: "ipc" },
      "segment-bytes": { type: "string", default: String(ALLREDUCE_DEFAULTS.segmentBytes) },
      "small-bytes": { type: "string", default: String(ALLREDUCE_DEFAULTS.smallBytes) },
      "socket-buffer": { type: "string", default: "0" },
      "io-threads": { type: "string", default: String(DEFAULT_IO_THREADS) },
      "young-gc": { type: "string", default: String(DEFAULT_YOUNG_GC_BYTES) },
      seconds: { type: "string", default: "1" },
      iters: { type: "string", default: "0" },
      warmup: { type: "string", default: "auto" },
      malloc: { type: "string", default: "tuned" },
      "max-foreign": { type: "string", default: "0.15" },
      "timeout-ms": { type: "string", default: "30000" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const workers = positiveInts(values.workers, "workers");
  const sizes = values.sizes.split(",").map(parseSize);
  const algos = values.algo.split(",").map((a) => a.trim()) as AllreduceAlgo[];
  for (const a of algos) if (!ALLREDUCE_ALGOS.includes(a)) throw new Error(`--algo: "${a}" is not one of ${ALLREDUCE_ALGOS.join(", ")}`);
  const transports = values.transports.split(",").map((t) => t.trim()) as TransportName[];
  for (const t of transports) if (t !== "ipc" && t !== "tcp" && t !== "shm") throw new Error(`--transports: "${t}" is not ipc, tcp or shm`);
  const segments = values["segment-bytes"].split(",").map(parseSize);
  const smallBytes = Number(values["small-bytes"]);
  const iters = Number(values.iters);
  const warmup = values.warmup === "auto" ? "auto" : Number(values.warmup);
  const seconds = Number(values.seconds);
  if (values.malloc !== "tuned" && values.malloc !== "default") throw new Error(`--malloc: "${values.malloc}" is not tuned or default`);
  if (!Number.isInteger(iters) || iters < 0) throw new Error(`--iters: "${values.iters}" is not a whole number`);
  if (warmup !== "auto" && !(Number.isInteger(warmup) && warmup >= 1)) throw new Error(`--warmup: "${values.warmup}" is not auto or a positive integer`);
  if (!(seconds > 0)) throw new Error(`--seconds: "${values.seconds}" is not a positive number`);
  if (!(smallBytes >= 0)) throw new Error(`--small-bytes: "${values["small-bytes"]}" is not a size in bytes`);
  for (const transport of transports)
    for (const algo of algos)
      for (const segmentBytes of segments)
        for (const socketBufferBytes of values["socket-buffer"].split(",").map(sizeOrZero))
          for (const youngGcBytes of values["young-gc"].split(",").map(sizeOrZero))
            for (const N of workers)
              for (const ioThreads of positiveInts(values["io-threads"], "io-threads", 0))
                await group({ transport, algo, segmentBytes, socketBufferBytes, youngGcBytes, ioThreads, smallBytes, N, sizes, iters, warmup, seconds, malloc: values.malloc, maxForeign: Number(values["max-foreign"]), timeoutMs: Number(values["timeout-ms"]) });
}

const rankArg = process.argv.indexOf("--rank");
if (rankArg >= 0) {
  const rank = Number(process.argv[rankArg + 1]);
  const coordinator = process.argv[process.argv.indexOf("--coordinator") + 1]!;
  const timeoutMs = Number(process.argv[process.argv.indexOf("--timeout-ms") + 1]);
  rankMain(rank, coordinator, timeoutMs).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`bench-allreduce rank ${rank}: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
} else {
  driver().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`bench-allreduce: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
