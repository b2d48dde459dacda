import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createConnection, createServer, type Server, type Socket as NetSocket } from "node:net";
import { join } from "node:path";
import { curveKeyPair, Dealer, Push } from "zeromq";
import { Allreducer } from "../../src/allreduce/allreducer.js";
import { PeerGroup } from "../../src/allreduce/peer-group.js";
import { encodeArHeader, Phase } from "../../src/allreduce/wire.js";
import { Coordinator } from "../../src/cluster/coordinator.js";
import { serveShard } from "../../src/ps/server-main.js";
import { checkRoleProof, type CurveRole, generateCurveKeys, loadCurveKeys, publicKeyOf, roleProof } from "../../src/transport/curve-keys.js";
import { decodeHeader, DType, makeHeader, MsgType } from "../../src/transport/header.js";
import { PeerClient } from "../../src/transport/peer-client.js";
import { bindSocket, disableCurve, enableCurve, newBoundRouter, securityStats } from "../../src/transport/sockets.js";
import { z85Decode, z85Encode } from "../../src/transport/z85.js";
import { tempDir } from "../helpers/run.js";
import { makeShard, pushPull, RUN_ID } from "../helpers/shard.js";

const HELLO_AS = fileURLToPath(new URL("../fixtures/hello-as.js", import.meta.url));
const SIZE = 4096;
/** A float pattern no ciphertext will hold by chance: 1234.5, 1234.5, ... */
const PATTERN = 1234.5;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(20);
  }
}

/** A shard of SIZE keys on a ROUTER from the secured factory, over tcp. */
async function startShard() {
  const shard = makeShard({ mode: "async", workers: 1, size: SIZE });
  const router = newBoundRouter("test shard", { linger: 0 });
  await bindSocket(router, "tcp://127.0.0.1:*");
  const loop = serveShard(router, shard).catch(() => undefined);
  return {
    shard,
    endpoint: router.lastEndpoint!,
    close: async () => {
      router.close();
      await loop;
    },
  };
}

function gradient(): Float32Array {
  return new Float32Array(SIZE).fill(PATTERN);
}

/**
 * A push+pull of the pattern as a worker does it, with the worker's keys from `dir` (this test
 * process is the shard: its own PeerClient would present the server's key, which a shard does
 * not admit), or without CURVE.
 */
async function pushPattern(endpoint: string, dir: string | null): Promise<{ type: MsgType; weights: Buffer }> {
  const keys = dir ? loadCurveKeys(dir, "worker") : null;
  const curve = keys ? { curveServerKey: keys.serverKeys.server, curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey } : {};
  const worker = new Dealer({ linger: 0, receiveTimeout: 10_000, ...curve });
  try {
    worker.connect(endpoint);
    await worker.send(pushPull(0, 0, gradient()));
    const [head, weights] = await worker.receive();
    return { type: decodeHeader(head).type, weights: Buffer.from(weights ?? Buffer.alloc(0)) };
  } finally {
    worker.close();
  }
}

/**
 * A TCP relay between a client and a server that records every byte in each direction: what a
 * sniffer on the network would see.
 */
class RecordingRelay {
  readonly up: Buffer[] = [];
  readonly down: Buffer[] = [];
  private server: Server | null = null;
  private readonly sockets: NetSocket[] = [];
  port = 0;

  async start(target: string): Promise<string> {
    const m = /^tcp:\/\/([^:]+):(\d+)$/.exec(target);
    if (!m) throw new Error(`not a tcp endpoint: ${target}`);
    const [host, port] = [m[1]!, Number(m[2])];
    this.server = createServer((client) => {
      const upstream = createConnection({ host, port });
      this.sockets.push(client, upstream);
      client.on("data", (d: Buffer) => {
        this.up.push(Buffer.from(d));
        upstream.write(d);
      });
      upstream.on("data", (d: Buffer) => {
        this.down.push(Buffer.from(d));
        client.write(d);
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on("close", end).on("error", end);
      upstream.on("close", end).on("error", end);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    const addr = this.server.address();
    if (addr === null || typeof addr === "string") throw new Error("relay has no port");
    this.port = addr.port;
    return `tcp://127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }
}

function holds(chunks: Buffer[], needle: Buffer): boolean {
  return Buffer.concat(chunks).includes(needle);
}

describe("CURVE security of the ZeroMQ sockets", function () {
  this.timeout(60_000);
  const dir = join(tempDir(), "keys");
  generateCurveKeys(dir, false);
  const as = (role: CurveRole) => enableCurve(loadCurveKeys(dir, role));

  afterEach(() => disableCurve());

  it("z85 round-trips keys and matches the public key libzmq derives", () => {
    const pair = curveKeyPair();
    assert.equal(z85Encode(z85Decode(pair.publicKey)!), pair.publicKey);
    assert.equal(publicKeyOf(pair.secretKey), pair.publicKey);
    assert.equal(z85Decode("abc"), null);
  });

  it("a HELLO proves the key of the role it claims: made only with that role's secret key", () => {
    const coord = loadCurveKeys(dir, "coordinator");
    const worker = loadCurveKeys(dir, "worker");
    const server = loadCurveKeys(dir, "server");
    assert.equal(checkRoleProof(coord, "worker", 3, roleProof(worker, "worker", 3)), true);
    assert.equal(checkRoleProof(coord, "server", 0, roleProof(server, "server", 0)), true);
    // a worker's key cannot make a server's proof, nor a proof for another rank
    assert.equal(checkRoleProof(coord, "server", 0, roleProof(worker, "server", 0)), false);
    assert.equal(checkRoleProof(coord, "worker", 4, roleProof(worker, "worker", 3)), false);
    for (const bad of [undefined, "", "zz", "0".repeat(64), 42]) assert.equal(checkRoleProof(coord, "worker", 3, bad), false);
  });

  it("the coordinator refuses a HELLO from an allowlisted worker key that claims to be a server shard, and names the refusal", async () => {
    await as("coordinator");
    const coordinator = new Coordinator(1, 3000);
    const endpoint = await coordinator.bind("tcp://127.0.0.1:*");
    coordinator.expect("server", 0);
    const spawnHello = (keyRole: string) => spawn(process.execPath, [HELLO_AS, dir, keyRole, "server", "0", endpoint], { stdio: "ignore" });
    const impostor = spawnHello("worker");
    try {
      await assert.rejects(coordinator.waitForHellos(3000), /no HELLO within 3000 ms from server shard 0 \(CURVE refused connections here: \d+ HELLOs that did not prove the key of the role they claimed/);
      assert.ok(securityStats().roleRefused > 0);
    } finally {
      impostor.kill("SIGKILL");
    }
    const real = spawnHello("server");
    try {
      await coordinator.waitForHellos(10_000);
      assert.equal(coordinator.peer("server", 0)?.pid, real.pid);
    } finally {
      real.kill("SIGKILL");
      coordinator.close();
    }
  });

  it("an allowlisted worker pushes and pulls through an encrypted shard", async () => {
    await as("server");
    const s = await startShard();
    try {
      const before = securityStats().zapAllowed;
      assert.equal((await pushPattern(s.endpoint, dir)).type, MsgType.WEIGHTS);
      assert.equal(s.shard.stats().appliedGradients, 1);
      assert.ok(securityStats().zapAllowed > before, "the ZAP handler let the client in");
    } finally {
      await s.close();
    }
  });

  it("a client without CURVE gets nothing back within the deadline, and the shard counts the failed handshake", async () => {
    await as("server");
    const s = await startShard();
    const plain = new Dealer({ linger: 0, receiveTimeout: 1500 });
    try {
      const before = securityStats().handshakeFailed;
      plain.connect(s.endpoint);
      await plain.send(pushPull(0, 0, gradient()));
      await assert.rejects(plain.receive(), (e: { code?: string }) => e.code === "EAGAIN");
      assert.equal(s.shard.stats().appliedGradients, 0, "nothing was pushed");
      assert.equal(s.shard.stats().bytesReceived, 0, "nothing reached the shard");
      await until("handshake failure counted", () => securityStats().handshakeFailed > before);
    } finally {
      plain.close();
      await s.close();
    }
  });

  it("a client whose key is not on the allowlist cannot push or pull, and the ZAP denial is counted", async () => {
    await as("server");
    const s = await startShard();
    const pair = curveKeyPair();
    const keys = loadCurveKeys(dir, "server");
    // It even knows the server's public key: only the allowlist stops it.
    const rogue = new Dealer({ linger: 0, receiveTimeout: 1500, curveServerKey: keys.serverKeys.server, curvePublicKey: pair.publicKey, curveSecretKey: pair.secretKey });
    try {
      const before = securityStats().zapDenied;
      rogue.connect(s.endpoint);
      await rogue.send(pushPull(0, 0, gradient()));
      await assert.rejects(rogue.receive(), (e: { code?: string }) => e.code === "EAGAIN");
      assert.equal(s.shard.stats().appliedGradients, 0, "nothing was pushed");
      await until("ZAP denial counted", () => securityStats().zapDenied > before);
    } finally {
      rogue.close();
      await s.close();
    }
  });

  it("a listed key of a role the socket does not admit (a server's key at a shard) is refused", async () => {
    await as("server");
    const s = await startShard();
    // This process's own client presents the server key: listed, but shards admit workers and the coordinator.
    const client = new PeerClient("server shard 0", s.endpoint, 1500);
    try {
      const before = securityStats().zapDenied;
      const g = gradient();
      const h = makeHeader(MsgType.PUSH_PULL, { runId: RUN_ID, rank: 0, rangeStart: 0, rangeEnd: SIZE, dtype: DType.F32, byteLength: g.byteLength });
      await assert.rejects(client.request(h, [Buffer.from(g.buffer)]), /no reply from server shard 0 .*within 1500 ms/);
      assert.equal(s.shard.stats().appliedGradients, 0);
      await until("ZAP denial counted", () => securityStats().zapDenied > before);
    } finally {
      client.close();
      await s.close();
    }
  });

  it("refusals are all counted, but a client that keeps coming back is logged once, not once per attempt", async () => {
    const lines: { event: string; fields: Record<string, unknown> }[] = [];
    await enableCurve(loadCurveKeys(dir, "server"), (event, fields) => lines.push({ event, fields }));
    const s = await startShard();
    const pair = curveKeyPair();
    const serverKey = loadCurveKeys(dir, "server").serverKeys.server;
    const rogues = Array.from({ length: 5 }, () => new Dealer({ linger: 0, curveServerKey: serverKey, curvePublicKey: pair.publicKey, curveSecretKey: pair.secretKey }));
    try {
      const before = securityStats().zapDenied;
      for (const r of rogues) r.connect(s.endpoint);
      await until("five denials counted", () => securityStats().zapDenied >= before + 5);
      const denied = lines.filter((l) => l.event === "CURVE client denied");
      assert.equal(denied.length, 1, JSON.stringify(lines));
      assert.equal(denied[0]!.fields["client"], pair.publicKey);
      assert.match(String(denied[0]!.fields["reason"]), /not on the allowlist/);
      assert.ok(!JSON.stringify(lines).includes(pair.secretKey) && !JSON.stringify(lines).includes(loadCurveKeys(dir, "server").secretKey), "no secret key in a log line");
    } finally {
      for (const r of rogues) r.close();
      await s.close();
    }
  });

  it("a worker that expects another server key names the shard and the failed handshake in its timeout", async () => {
    await as("server");
    const s = await startShard();
    const client = new PeerClient("server shard 0", s.endpoint, 1500, "worker"); // expects the worker's key: wrong
    try {
      const g = gradient();
      const h = makeHeader(MsgType.PUSH_PULL, { runId: RUN_ID, rank: 0, rangeStart: 0, rangeEnd: SIZE, dtype: DType.F32, byteLength: g.byteLength });
      await assert.rejects(client.request(h, [Buffer.from(g.buffer)]), /no reply from server shard 0 .*within 1500 ms \(CURVE handshake failed/);
      assert.equal(s.shard.stats().appliedGradients, 0);
    } finally {
      client.close();
      await s.close();
    }
  });

  for (const curve of [false, true]) {
    it(`bytes on the wire ${curve ? "are ciphertext with CURVE" : "hold the plain floats without CURVE (the check can fail)"}`, async () => {
      if (curve) await as("server");
      const s = await startShard();
      const relay = new RecordingRelay();
      try {
        const via = await relay.start(s.endpoint);
        const reply = await pushPattern(via, curve ? dir : null);
        assert.equal(reply.type, MsgType.WEIGHTS);
        const needle = Buffer.from(new Float32Array(16).fill(PATTERN).buffer);
        const weights = reply.weights.subarray(0, 64);
        assert.equal(weights.length, 64, "the reply carried the weights");
        assert.ok(relay.up.length > 0 && relay.down.length > 0, "traffic went through the relay");
        assert.equal(holds(relay.up, needle), !curve, "the gradient's floats on the wire");
        assert.equal(holds(relay.down, weights), !curve, "the weights' floats on the wire");
        assert.equal(holds(relay.up, Buffer.from("PUSH")), false);
      } finally {
        await relay.stop();
        await s.close();
      }
    });
  }

  it("an allreduce group runs encrypted on its own context, and an unlisted PUSH delivers nothing", async () => {
    await as("worker");
    const groups = [0, 1].map((rank) => new PeerGroup({ rank, size: 2, runId: 9, timeoutMs: 10_000 }));
    const rogueKeys = curveKeyPair();
    const rogue = new Push({ linger: 0, curveServerKey: loadCurveKeys(dir, "worker").serverKeys.worker, curvePublicKey: rogueKeys.publicKey, curveSecretKey: rogueKeys.secretKey });
    try {
      const eps = await Promise.all(groups.map((g) => g.bind("tcp://127.0.0.1:*")));
      for (const g of groups) g.connect(eps);
      const denied = securityStats().zapDenied;
      rogue.connect(eps[0]!);
      void rogue.send([encodeArHeader({ phase: Phase.BARRIER, runId: 9, src: 1, op: 0, step: 0, seg: 0, byteLength: 0 })]).catch(() => undefined);
      await until("the rogue PUSH denied", () => securityStats().zapDenied > denied);
      assert.equal(groups[0]!.bytesReceived, 0, "nothing of the rogue's message was taken in");
      const ars = groups.map((g) => new Allreducer(g, { algo: "ring", segmentBytes: 16 * 1024 }));
      const bufs = [new Float32Array(50_000).fill(1), new Float32Array(50_000).fill(2)];
      await Promise.all(ars.map((a, r) => a.allreduce(bufs[r]!)));
      assert.ok(bufs.every((b) => b.every((v) => v === 3)));
    } finally {
      rogue.close();
      for (const g of groups) g.close();
    }
  });
});
