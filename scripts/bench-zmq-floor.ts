/**
 * The floor under any 2-rank allreduce over zeromq.js on this machine: two Node processes, each
 * with a bound PULL and a PUSH to the other (the peer group's sockets, nothing else), time one
 * exchange: both send S bytes, then each waits for the other's. A 2-rank recursive-doubling
 * allreduce is exactly one such exchange plus a sum, so no allreduce over these sockets can be
 * faster than this. Also a ping-pong (rank 0 sends, rank 1 sends back): one way = half of it.
 *
 * Each iteration is timed on rank 0; median, min and max over `--iters` after 500 warm-up
 * iterations. One JSON line per (pattern, transport, size) in the shape of bench:allreduce
 * (`medianSeconds`, ...) and of the peers (`median_s`).
 *
 * Run: node dist/scripts/bench-zmq-floor.js [--sizes 4KiB,64KiB] [--transports ipc,tcp] [--iters 3000] [--io-threads 1]
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { bindAddress, removeIpcDir } from "../src/transport/endpoint.js";
import { bindSocket, newBoundPull, newContext, newPush } from "../src/transport/sockets.js";
import { freePort } from "../src/util/free-port.js";
import { argValue, parseSize, quantiles } from "./bench-util.js";

interface Job {
  pattern: "exchange" | "pingpong";
  bytes: number;
  iters: number;
  ioThreads: number;
  self: string;
  peer: string;
}

async function rank(r: number, job: Job): Promise<number[]> {
  // the secured factory, as the peer group's sockets (no CURVE here: plain sockets)
  const context = newContext(job.ioThreads);
  const pull = newBoundPull(`floor rank ${r}`, { context, linger: 0 });
  await bindSocket(pull, job.self);
  const push = newPush("worker", { context, linger: 0 });
  push.connect(job.peer);
  const payload = Buffer.alloc(job.bytes, 1);
  const head = Buffer.alloc(28);
  const times: number[] = [];
  const one = async (): Promise<void> => {
    if (job.pattern === "exchange" || r === 0) {
      await push.send([head, payload]);
      await pull.receive();
    } else {
      await pull.receive();
      await push.send([head, payload]);
    }
  };
  for (let i = 0; i < 500; i++) await one();
  for (let i = 0; i < job.iters; i++) {
    const t0 = process.hrtime.bigint();
    await one();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  // let the peer finish its last receive before the sockets go
  await new Promise((res) => setTimeout(res, 200));
  push.close();
  pull.close();
  return times;
}

async function child(): Promise<void> {
  const r = Number(process.env["FLOOR_RANK"]);
  const job = JSON.parse(process.env["FLOOR_JOB"]!) as Job;
  const times = await rank(r, job);
  process.send!({ times: r === 0 ? times : [] }, () => process.exit(0));
}

async function main(): Promise<void> {
  const sizes = argValue("--sizes", "4KiB,64KiB").split(",").map(parseSize);
  const transports = argValue("--transports", "ipc,tcp").split(",");
  const iters = Number(argValue("--iters", "3000"));
  const ioThreads = Number(argValue("--io-threads", "1"));
  const me = fileURLToPath(import.meta.url);
  for (const transport of transports) {
    for (const pattern of ["exchange", "pingpong"] as const) {
      for (const bytes of sizes) {
        const tag = `floor-${process.pid}-${transport}-${pattern}-${bytes}`;
        const eps = transport === "ipc" ? [bindAddress("ipc", tag, "r0"), bindAddress("ipc", tag, "r1")] : [`tcp://127.0.0.1:${await freePort()}`, `tcp://127.0.0.1:${await freePort()}`];
        const kids = [0, 1].map((r) =>
          fork(me, ["--child"], { env: { ...process.env, FLOOR_RANK: String(r), FLOOR_JOB: JSON.stringify({ pattern, bytes, iters, ioThreads, self: eps[r]!, peer: eps[1 - r]! } satisfies Job) } }),
        );
        const got = await Promise.all(
          kids.map(
            (k) =>
              new Promise<number[]>((res, rej) => {
                const timer = setTimeout(() => rej(new Error(`${pattern} ${bytes} B over ${transport}: no answer in 120 s`)), 120_000);
                k.on("message", (m: { times: number[] }) => {
                  clearTimeout(timer);
                  res(m.times);
                });
                k.on("exit", (code) => code !== 0 && rej(new Error(`rank process exited with ${code}`)));
              }),
          ),
        );
        if (transport === "ipc") removeIpcDir(tag);
        const q = quantiles(got[0]!);
        const line = {
          bench: "zmq_floor",
          impl: "zeromq.js",
          pattern,
          transport,
          ioThreads,
          bytes,
          size_bytes: bytes,
          iters,
          medianSeconds: q.median,
          minSeconds: q.min,
          maxSeconds: q.max,
          median_s: q.median,
          oneWayMedianSeconds: pattern === "pingpong" ? q.median / 2 : null,
        };
        process.stdout.write(JSON.stringify(line) + "\n");
      }
    }
  }
}

if (process.argv.includes("--child")) await child();
else await main();
