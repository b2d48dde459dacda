import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { alive, processesOf } from "../helpers/processes.js";
import { smallConfig, tempDir, train } from "../helpers/run.js";

describe("a process that dies mid-run", function () {
  this.timeout(120_000);

  for (const [comm, role, rank, name] of [
    ["ps", "worker", 1, /worker 1 \(pid \d+\) was killed by SIGKILL/],
    ["ps", "server", 0, /server shard 0 \(pid \d+\) was killed by SIGKILL|server shard 0/],
    ["allreduce", "worker", 1, /worker 1 \(pid \d+\) was killed by SIGKILL|rank 1 disconnected/],
  ] as const) {
    it(`${comm}: fails the run with an error naming ${role} ${rank}, and leaves no process behind`, async () => {
      const cfg = smallConfig({ mode: "sync", comm, workers: 3, servers: 2, epochs: 200, slow: { 0: 2 } });
      const run = train(cfg);
      const procs = await processesOf(cfg.out);
      await new Promise((r) => setTimeout(r, 1500));
      const victim = procs.find((p) => p.role === role && p.rank === rank)!;
      process.kill(victim.pid, "SIGKILL");
      const t0 = Date.now();
      await assert.rejects(run, name);
      assert.ok(Date.now() - t0 < cfg.timeoutMs, "failed fast, well within the deadline");
      for (const p of procs) assert.ok(!alive(p.pid), `${p.role} ${p.rank} (pid ${p.pid}) was left running`);
      const summary = JSON.parse(readFileSync(join(cfg.out, "summary.json"), "utf8")) as { status: string; error: string };
      assert.equal(summary.status, "failed");
      assert.match(summary.error, new RegExp(`${role === "worker" ? "worker" : "server shard"} ${rank}`));
    });
  }

  it("a coordinator killed with SIGKILL takes its role processes with it", async () => {
    const out = join(tempDir(), "run");
    const cli = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
    const proc = spawn(process.execPath, [cli, "--mode", "sync", "--workers", "3", "--dataset", "synthetic", "--model", "logreg", "--epochs", "500", "--backend", "cpu", "--out", out, "--log-level", "silent"], { stdio: "ignore" });
    const procs = await processesOf(out);
    await new Promise((r) => setTimeout(r, 1000));
    proc.kill("SIGKILL");
    const until = Date.now() + 10_000;
    while (procs.some((p) => alive(p.pid)) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    for (const p of procs) assert.ok(!alive(p.pid), `${p.role} ${p.rank} (pid ${p.pid}) outlived its coordinator`);
  });
});
