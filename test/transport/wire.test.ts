import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { Dealer, Router } from "zeromq";
import type { TransportName } from "../../src/config/train-config.js";
import { serveShard } from "../../src/ps/server-main.js";
import { bindAddress, ipcDir, removeIpcDir, sweepStaleIpcDirs } from "../../src/transport/endpoint.js";
import { decodeHeader, DType, encodeHeader, Flag, HEADER_BYTES, makeHeader, MsgType } from "../../src/transport/header.js";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { encodeShmRef, gradientFile, removeShmDir, ShmFiles, shmDir, shmShortfall, sweepStaleShmDirs, weightsFile } from "../../src/transport/shm.js";
import { PeerClient, RemoteError } from "../../src/transport/peer-client.js";
import { ParameterClient } from "../../src/worker/ps-client.js";
import { makeShard, RUN_ID, sgd } from "../helpers/shard.js";

describe("wire protocol", () => {
  it("encodes and decodes every header field", () => {
    const h = makeHeader(MsgType.PUSH_PULL, { runId: 0xdeadbeef, rank: 7, clock: 123456, version: 99, rangeStart: 10, rangeEnd: 266610, dtype: DType.F32, flags: 3, status: 65535, byteLength: 1066400, seq: 42 });
    const buf = encodeHeader(h);
    assert.equal(buf.length, HEADER_BYTES);
    assert.deepEqual(decodeHeader(buf), h);
    const coord = makeHeader(MsgType.SNAPSHOT, { rank: -1 });
    assert.equal(decodeHeader(encodeHeader(coord)).rank, -1);
  });

  for (const transport of ["tcp", "ipc", "shm"] as TransportName[]) {
    describe(`over ${transport}`, () => {
      const tag = `wire-${randomBytes(3).toString("hex")}`;
      let router: Router;
      let endpoint: string;
      const size = 8192; // 32 KiB: large enough for the shared-memory files (SHM_MIN_BYTES)
      let shard: ReturnType<typeof makeShard>;
      // --transport shm: tensors through the run's shared-memory files (one set per process in a run)
      const shmFiles = () => (transport === "shm" ? new ShmFiles(shmDir(tag)) : null);
      let serverFiles: ShmFiles | null = null;

      beforeEach(async () => {
        serverFiles = shmFiles();
        shard = makeShard({ mode: "async", workers: 2, size, optimizer: sgd(1), ...(serverFiles ? { shm: serverFiles } : {}) });
        router = new Router({ linger: 0 });
        await router.bind(bindAddress(transport, tag, "server-0"));
        endpoint = router.lastEndpoint!;
        void serveShard(router, shard).catch(() => undefined);
      });
      afterEach(() => {
        router.close();
        serverFiles?.close();
        removeIpcDir(tag);
        removeShmDir(tag);
      });

      it("round-trips PULL, PUSH_PULL, PUSH, SNAPSHOT, PAUSE/RESUME, STATS and STOP", async () => {
        const weights = new Float32Array(size);
        const ps = new ParameterClient(RUN_ID, 0, [{ shard: 0, endpoint, range: { start: 0, end: size } }], weights, 5000, shmFiles());
        const coord = new PeerClient("server shard 0", endpoint, 5000);
        try {
          await ps.pull(0);
          if (transport === "shm") {
            // the weights went through the shard's slot file; both sides count their bytes
            assert.ok(existsSync(join(shmDir(tag), weightsFile(0, 0))));
            assert.ok(ps.bytesReceived >= size * 4);
            assert.equal(shard.stats().bytesSent, ps.bytesReceived);
          }
          assert.ok(weights.every((w) => w === 0));
          const g = new Float32Array(size).fill(2);
          const r = await ps.pushPull(0, g);
          assert.equal(r.staleness, 0);
          if (transport === "shm") assert.equal(statSync(join(shmDir(tag), gradientFile(0, 0))).size, size * 4, "the gradient went through its file");
          // async with 2 workers: w -= lr * g / 2
          assert.ok(weights.every((w) => w === -1));
          assert.equal(ps.versions[0], 1);

          const push = await coord.request(
            makeHeader(MsgType.PUSH, { runId: RUN_ID, rank: 1, clock: 0, version: 1, rangeStart: 0, rangeEnd: size, dtype: DType.F32, byteLength: size * 4 }),
            [Buffer.from(new Float32Array(size).fill(2).buffer)],
          );
          assert.equal(push.header.type, MsgType.ACK);

          const snap = await coord.request(makeHeader(MsgType.SNAPSHOT, { runId: RUN_ID, rank: -1 }));
          assert.equal(snap.header.type, MsgType.WEIGHTS);
          assert.equal(snap.header.version, 2);
          assert.equal(new Float32Array(snap.frames[0]!.buffer, snap.frames[0]!.byteOffset, size)[0], -2);

          assert.equal((await coord.request(makeHeader(MsgType.PAUSE, { runId: RUN_ID, rank: -1 }))).header.type, MsgType.ACK);
          const held = ps.pushPull(1, g);
          let answered = false;
          void held.then(() => (answered = true));
          await new Promise((res) => setTimeout(res, 50));
          assert.equal(answered, false, "a paused shard holds reads");
          await coord.request(makeHeader(MsgType.RESUME, { runId: RUN_ID, rank: -1 }));
          await held;

          const stats = await coord.request(makeHeader(MsgType.STATS, { runId: RUN_ID, rank: -1 }));
          const st = JSON.parse(stats.frames[0]!.toString()) as { version: number; clocks: number[] };
          assert.equal(st.version, 3);
          assert.deepEqual(st.clocks, [2, 1]);

          await coord.request(makeHeader(MsgType.STOP, { runId: RUN_ID, rank: -1 }));
          const last = await ps.pushPull(2, g);
          assert.equal(last.stopping, true);
        } finally {
          ps.close();
          coord.close();
        }
      });

      it("answers every malformed message with an error and keeps serving a real worker", async () => {
        const raw = new Dealer({ linger: 0, receiveTimeout: 5000 });
        raw.connect(endpoint);
        const weights = new Float32Array(size);
        const ps = new ParameterClient(RUN_ID, 0, [{ shard: 0, endpoint, range: { start: 0, end: size } }], weights, 5000, shmFiles());
        try {
          const good = (over: Partial<Parameters<typeof makeHeader>[1]> = {}) =>
            encodeHeader(makeHeader(MsgType.PUSH_PULL, { runId: RUN_ID, rank: 1, clock: 0, rangeStart: 0, rangeEnd: size, dtype: DType.F32, byteLength: size * 4, ...over }));
          const grad = Buffer.from(new Float32Array(size).fill(1).buffer);
          const nan = new Float32Array(size).fill(1);
          nan[17] = NaN;
          const variants: [string, Buffer[]][] = [
            ["garbage", [randomBytes(13)]],
            ["run id", [good({ runId: 1 }), grad]],
            ["rank", [good({ rank: 5 }), grad]],
            ["range", [good({ rangeStart: 1 }), grad]],
            ["length", [good(), grad.subarray(0, 400)]],
            ["NaN", [good(), Buffer.from(nan.buffer)]],
            ["extra frame", [good(), grad, grad]],
          ];
          // rank 1's gradient file, as its worker would write it (raw pushes come as rank 1)
          const rank1 = shmFiles();
          const viaShm = (over: Partial<Parameters<typeof makeHeader>[1]> = {}) => good({ flags: Flag.SHM, ...over });
          const refused = async (msg: Buffer[], pattern: RegExp) => {
            await raw.send(msg);
            const [head, text] = await raw.receive();
            assert.equal(decodeHeader(head).type, MsgType.ERROR, String(pattern));
            assert.match(text!.toString(), pattern);
          };
          let fileChecks = 0;
          if (transport === "shm") {
            // no file yet, then one shorter than the header says: refused, nothing applied
            await refused([viaShm(), encodeShmRef(0)], /g-w1-s0 cannot be opened/);
            rank1!.write(gradientFile(1, 0), new Float32Array(size - 1).fill(1));
            await refused([viaShm(), encodeShmRef(0)], /holds 32764 bytes, the message says 32768/);
            fileChecks = 2;
            rank1!.write(gradientFile(1, 0), nan);
            variants.push(
              ["shm: NaN in the file", [viaShm(), encodeShmRef(0)]],
              ["shm: reference of 4 bytes", [viaShm(), encodeShmRef(0).subarray(0, 4)]],
              ["shm: reference to slot 3", [viaShm(), encodeShmRef(3)]],
              ["shm: longer than the range", [viaShm({ byteLength: size * 4 + 4 }), encodeShmRef(0)]],
              ["shm: no reference frame", [viaShm()]],
            );
          } else variants.push(["shm flag at a shard without shared memory", [viaShm(), encodeShmRef(0)]]);
          for (const [name, msg] of variants) {
            await raw.send(msg);
            const [head] = await raw.receive();
            assert.equal(decodeHeader(head).type, MsgType.ERROR, name);
            await ps.pull(0);
          }
          rank1?.close();
          const coord = new PeerClient("server shard 0", endpoint, 5000);
          const st = JSON.parse((await coord.request(makeHeader(MsgType.STATS, { runId: RUN_ID, rank: -1 }))).frames[0]!.toString()) as { errors: Record<string, number>; version: number };
          coord.close();
          const total = Object.values(st.errors).reduce((a, b) => a + b, 0);
          assert.equal(total, variants.length + fileChecks);
          assert.equal(st.version, 0);
          await assert.rejects(
            new PeerClient("server shard 0", endpoint, 5000).request(makeHeader(MsgType.PULL, { runId: RUN_ID, rank: 0, clock: 3 })),
            (e: unknown) => e instanceof RemoteError && e.reason === "clock",
          );
        } finally {
          raw.close();
          ps.close();
        }
      });
    });
  }

  it("shm: a run's files must fit in shared memory, or the run is told why not", () => {
    assert.equal(shmShortfall(266_610, 8), null, "the MNIST MLP with 8 workers: about 18 MiB");
    assert.match(shmShortfall(2 ** 40, 8) ?? "", /MiB free, the run's shared-memory files need about \d+ MiB/);
  });

  it("the shared-memory and ipc folders of runs whose coordinator is gone are swept, live ones are kept", () => {
    // a pid that is not running: one past the largest pid the kernel hands out
    const dead = Number(readFileSync("/proc/sys/kernel/pid_max", "utf8")) + 1;
    const stale = shmDir(`${dead}-abc`);
    const live = shmDir(`${process.pid}-abd`);
    const files = new ShmFiles(stale);
    files.write(gradientFile(0, 0), new Float32Array(4));
    files.close();
    new ShmFiles(live).close();
    // the ipc socket folders the same way
    const staleIpc = ipcDir(`${dead}-abc`);
    const liveIpc = ipcDir(`${process.pid}-abd`);
    for (const d of [staleIpc, liveIpc]) mkdirSync(d, { recursive: true });
    try {
      assert.ok(sweepStaleShmDirs().includes(stale));
      assert.ok(!existsSync(stale) && existsSync(live));
      assert.ok(sweepStaleIpcDirs().includes(staleIpc));
      assert.ok(!existsSync(staleIpc) && existsSync(liveIpc));
    } finally {
      for (const d of [stale, live, staleIpc, liveIpc]) rmSync(d, { recursive: true, force: true });
    }
  });

  it("names the peer when no reply comes before the deadline", async () => {
    const client = new PeerClient("server shard 3", "tcp://127.0.0.1:9", 300);
    try {
      await assert.rejects(client.request(makeHeader(MsgType.PULL, { runId: RUN_ID, rank: 0 })), /server shard 3.*within 300 ms/);
    } finally {
      client.close();
    }
  });
});
