/**
 * npm run bench:ps [-- --sizes 1MiB,16MiB --workers 1,4 --shards 1,2 --transports tcp,ipc --malloc tuned|default|both]
 *
 * The parameter-server round of ps-train with real processes: K server-shard processes
 * (ServerShard in sync mode, plain SGD, served on a ROUTER) and N worker processes (the
 * worker's ParameterClient). One round: every worker pushes S bytes of gradient split over the
 * K shards, the shards average and apply SGD, and every worker receives S bytes of new weights.
 * A round's time is worker 0's push-pull time (in sync mode all workers finish a round
 * together); median/min/max over timed rounds after warm-up. One JSON line per measurement,
 * with the keys of ../shared/peers' ps_round lines.
 */
import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Router } from "zeromq";
import { TUNED_MALLOC_ENV } from "../src/cluster/local-launcher.js";
import { DEFAULTS, type TransportName } from "../src/config/train-config.js";
import { createMode } from "../src/modes/index.js";
import { type KeyRange, partitionKeys } from "../src/ps/key-range.js";
import { serveShard } from "../src/ps/server-main.js";
import { ServerShard } from "../src/ps/server-shard.js";
import { bindAddress, removeIpcDir } from "../src/transport/endpoint.js";
import { ParameterClient, type ShardEndpoint } from "../src/worker/ps-client.js";

const SELF = fileURLToPath(import.meta.url);
const RUN_ID = 0x5eed;
const DEADLINE_MS = 60_000;

type ToChild = { type: "map"; servers: ShardEndpoint[] } | { type: "go"; iters: number; warmup: number } | { type: "stop" };
type FromChild = { type: "endpoint"; endpoint: string } | { type: "ready" } | { type: "times"; times: number[] } | { type: "error"; message: string };

// ---------------------------------------------------------------- child roles
async function serverRole(shard: number, range: KeyRange, workers: number, transport: TransportName, tag: string): Promise<void> {
  const s = new ServerShard({
    shard,
    runId: RUN_ID,
    range,
    workers,
    mode: createMode("sync", 0),
    optimizer: { ...DEFAULTS, optimizer: "sgd", lr: 1e-6 },
    init: new Float32Array(range.end - range.start),
  });
  const router = new Router({ linger: 0 });
  await router.bind(bindAddress(transport, tag, `bench-server-${shard}`));
  process.on("message", (m: ToChild) => {
    if (m.type === "stop") {
      router.close();
      process.exit(0);
    }
  });
  send({ type: "endpoint", endpoint: router.lastEndpoint! });
  await serveShard(router, s).catch(() => undefined);
}

async function workerRole(rank: number, size: number): Promise<void> {
  const map = await nextMessage<Extract<ToChild, { type: "map" }>>("map");
  const weights = new Float32Array(size);
  const gradient = new Float32Array(size).fill(1e-3);
  const ps = new ParameterClient(RUN_ID, rank, map.servers, weights, DEADLINE_MS);
  await ps.pull(0);
  send({ type: "ready" });
  const go = await nextMessage<Extract<ToChild, { type: "go" }>>("go");
  const times: number[] = [];
  for (let c = 0; c < go.iters + go.warmup; c++) {
    const t0 = performance.now();
    await ps.pushPull(c, gradient);
    if (c >= go.warmup) times.push((performance.now() - t0) / 1000);
  }
  send({ type: "times", times });
  ps.close();
}

function send(m: FromChild): void {
  process.send?.(m);
}

function nextMessage<T extends ToChild>(type: T["type"]): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} from the bench driver within ${DEADLINE_MS} ms`)), DEADLINE_MS);
    const on = (m: ToChild) => {
      if (m.type !== type) return;
      clearTimeout(timer);
      process.off("message", on);
      resolve(m as T);
    };
    process.on("message", on);
  });
}

// ---------------------------------------------------------------- driver
interface Cell {
  transport: TransportName;
  malloc: "tuned" | "default";
  sizeBytes: number;
  workers: number;
  shards: number;
  iters: number;
  warmup: number;
}

class Children {
  readonly all: { name: string; proc: ChildProcess }[] = [];
  private failure: ((e: Error) => void) | null = null;
  readonly failed = new Promise<never>((_, reject) => (this.failure = reject));
  constructor() {
    this.failed.catch(() => undefined);
  }
  start(name: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
    const proc = fork(SELF, args, { env, stdio: ["ignore", "inherit", "inherit", "ipc"] });
    this.all.push({ name, proc });
    proc.on("exit", (code, signal) => {
      if (code !== 0) this.failure?.(new Error(`${name} (pid ${proc.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}`));
    });
    proc.on("message", (m: FromChild) => {
      if (m.type === "error") this.failure?.(new Error(`${name}: ${m.message}`));
    });
    return proc;
  }
  wait<T extends FromChild>(proc: ChildProcess, name: string, type: T["type"]): Promise<T> {
    const got = new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${type} from ${name} within ${DEADLINE_MS} ms`)), DEADLINE_MS);
      const on = (m: FromChild) => {
        if (m.type !== type) return;
        clearTimeout(timer);
        proc.off("message", on);
        resolve(m as T);
      };
      proc.on("message", on);
    });
    return Promise.race([got, this.failed]);
  }
  killAll(): void {
    for (const c of this.all) if (c.proc.exitCode === null) c.proc.kill("SIGKILL");
  }
}

async function measure(cell: Cell): Promise<Record<string, unknown>> {
  const size = Math.floor(cell.sizeBytes / 4);
  const ranges = partitionKeys(size, cell.shards);
  const tag = `bench-${randomBytes(3).toString("hex")}`;
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(TUNED_MALLOC_ENV)) delete env[k];
  if (cell.malloc === "tuned") Object.assign(env, TUNED_MALLOC_ENV);
  const kids = new Children();
  try {
    const servers: ShardEndpoint[] = [];
    const sprocs = ranges.map((r, k) =>
      kids.start(`server shard ${k}`, ["--role", "server", "--rank", String(k), "--range", `${r.start}:${r.end}`, "--workers", String(cell.workers), "--transport", cell.transport, "--tag", tag], env),
    );
    for (const [k, p] of sprocs.entries()) {
      const m = await kids.wait<Extract<FromChild, { type: "endpoint" }>>(p, `server shard ${k}`, "endpoint");
      servers.push({ shard: k, endpoint: m.endpoint, range: ranges[k]! });
    }
    const wprocs = Array.from({ length: cell.workers }, (_, r) => kids.start(`worker ${r}`, ["--role", "worker", "--rank", String(r), "--size", String(size)], env));
    for (const p of wprocs) p.send({ type: "map", servers } satisfies ToChild);
    await Promise.all(wprocs.map((p, r) => kids.wait(p, `worker ${r}`, "ready")));
    for (const p of wprocs) p.send({ type: "go", iters: cell.iters, warmup: cell.warmup } satisfies ToChild);
    const results = await Promise.all(wprocs.map((p, r) => kids.wait<Extract<FromChild, { type: "times" }>>(p, `worker ${r}`, "times")));
    for (const p of sprocs) p.send({ type: "stop" } satisfies ToChild);
    const t = [...results[0]!.times].sort((a, b) => a - b);
    const median = t[Math.floor(t.length / 2)]!;
    return {
      bench: "ps_round",
      impl: `ps-train-zmq ${cell.transport}`,
      n: cell.workers,
      shards: cell.shards,
      size_bytes: cell.sizeBytes,
      median_s: median,
      min_s: t[0],
      max_s: t[t.length - 1],
      reps: t.length,
      malloc: cell.malloc,
      server_GBps: (2 * cell.workers * cell.sizeBytes) / median / 1e9,
      push_pull_median_s: median,
    };
  } finally {
    kids.killAll();
    if (cell.transport === "ipc") removeIpcDir(tag);
  }
}

function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?$/i.exec(s.trim());
  if (!m) throw new Error(`bad size ${s} (use e.g. 4KiB, 16MiB)`);
  const unit = (m[2] ?? "B").toLowerCase();
  const mult = unit === "kib" ? 1024 : unit === "mib" ? 1024 ** 2 : unit === "gib" ? 1024 ** 3 : 1;
  return Math.round(Number(m[1]) * mult);
}

async function driver(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: "string", default: "1MiB,4MiB,16MiB,64MiB" },
      workers: { type: "string", default: "1,2,4,8" },
      shards: { type: "string", default: "1,2,4" },
      transports: { type: "string", default: "tcp,ipc" },
      malloc: { type: "string", default: "tuned" },
      iters: { type: "string" },
      warmup: { type: "string", default: "3" },
      quick: { type: "boolean", default: false },
    },
  });
  const list = (s: string) => s.split(",").map((x) => x.trim()).filter(Boolean);
  const sizes = list(values.quick ? "1MiB,16MiB" : values.sizes).map(parseSize);
  const workers = list(values.quick ? "1,4" : values.workers).map(Number);
  const shards = list(values.quick ? "1,2" : values.shards).map(Number);
  const transports = list(values.transports) as TransportName[];
  const mallocs = values.malloc === "both" ? (["tuned", "default"] as const) : ([values.malloc as "tuned" | "default"] as const);
  for (const malloc of mallocs)
    for (const transport of transports)
      for (const sizeBytes of sizes)
        for (const n of workers)
          for (const k of shards) {
            // About 200 MB per worker per cell, between 8 and 60 rounds.
            const iters = values.iters ? Number(values.iters) : Math.max(8, Math.min(60, Math.round(2e8 / sizeBytes / Math.max(1, n / 2))));
            process.stderr.write(`bench-ps: ${transport} malloc=${malloc} size=${sizeBytes} workers=${n} shards=${k} iters=${iters}\n`);
            const line = await measure({ transport, malloc, sizeBytes, workers: n, shards: k, iters, warmup: Number(values.warmup) });
            process.stdout.write(JSON.stringify(line) + "\n");
          }
}

async function child(): Promise<void> {
  const { values } = parseArgs({
    options: {
      role: { type: "string" },
      rank: { type: "string" },
      range: { type: "string" },
      workers: { type: "string" },
      transport: { type: "string" },
      tag: { type: "string" },
      size: { type: "string" },
    },
  });
  process.on("disconnect", () => process.exit(0));
  try {
    if (values.role === "server") {
      const [start, end] = (values.range ?? "0:0").split(":").map(Number);
      await serverRole(Number(values.rank), { start: start!, end: end! }, Number(values.workers), values.transport as TransportName, values.tag!);
    } else {
      await workerRole(Number(values.rank), Number(values.size));
      process.exit(0);
    }
  } catch (err) {
    send({ type: "error", message: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  }
}

if (process.argv.includes("--role")) void child();
else
  driver().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`bench-ps: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
