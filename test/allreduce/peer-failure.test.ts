import { strict as assert } from "node:assert";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const PEER = fileURLToPath(new URL("../fixtures/allreduce-peer.js", import.meta.url));

interface Peer {
  proc: ChildProcess;
  stderr: string;
  ready: Promise<void>;
  exited: Promise<number | null>;
}

function startPeers(size: number, timeoutMs: number): { peers: Peer[]; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), "ps-train-peers-"));
  const peers = Array.from({ length: size }, (_, r): Peer => {
    const proc = spawn(process.execPath, [PEER, String(r), String(size), dir, String(timeoutMs)], { stdio: ["ignore", "pipe", "pipe"] });
    const peer = { proc, stderr: "" } as Peer;
    proc.stderr!.on("data", (d: Buffer) => (peer.stderr += d.toString()));
    peer.ready = new Promise((resolve, reject) => {
      proc.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
      proc.on("exit", (code) => reject(new Error(`rank ${r} exited (${code}) before it was ready: ${peer.stderr}`)));
    });
    peer.exited = new Promise((resolve) => proc.on("exit", (code) => resolve(code)));
    return peer;
  });
  return { peers, dir };
}

/** Resolves with the exit codes, or rejects when a peer is still running after `ms`. */
function allExit(peers: Peer[], ms: number): Promise<(number | null)[]> {
  return Promise.race([
    Promise.all(peers.map((p) => p.exited)),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`peers still running after ${ms} ms (a hang)`)), ms)),
  ]);
}

describe("allreduce: a lost peer fails the collective on every rank, naming it (real processes)", function () {
  this.timeout(60_000);
  let cleanup: (() => void) | null = null;
  afterEach(() => cleanup?.());

  it("a peer killed with SIGKILL: the others fail within the grace period, naming its rank", async () => {
    const { peers, dir } = startPeers(4, 20_000);
    cleanup = () => {
      for (const p of peers) p.proc.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    };
    await Promise.all(peers.map((p) => p.ready));
    const t0 = Date.now();
    peers[2]!.proc.kill("SIGKILL");
    const others = peers.filter((_, r) => r !== 2);
    const codes = await allExit(others, 10_000);
    // Well inside the 20 s receive deadline: the disconnect is what ended the waits.
    assert.ok(Date.now() - t0 < 10_000);
    assert.deepEqual(codes, [1, 1, 1]);
    for (const p of others) assert.match(p.stderr, /rank 2 (disconnected|sent nothing)/, p.stderr);
  });

  it("a peer that stops (SIGSTOP) and stays connected: the others time out and name it, not their neighbours", async () => {
    const { peers, dir } = startPeers(4, 1500);
    cleanup = () => {
      for (const p of peers) p.proc.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    };
    await Promise.all(peers.map((p) => p.ready));
    peers[2]!.proc.kill("SIGSTOP");
    const others = peers.filter((_, r) => r !== 2);
    const codes = await allExit(others, 15_000);
    assert.deepEqual(codes, [1, 1, 1]);
    for (const p of others) assert.match(p.stderr, /ranks? 2 sent nothing/, p.stderr);
    peers[2]!.proc.kill("SIGKILL");
  });
});
