import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { generateCurveKeys } from "../../src/transport/curve-keys.js";
import { cli, clusterSuite, type TestCluster } from "../helpers/cluster.js";
import { tempDir } from "../helpers/run.js";

/** Every value under the cluster's prefix, as text, whatever the key's type. */
async function everythingIn(cluster: TestCluster): Promise<string> {
  const c = await cluster.connect();
  const keys = await c.redis.keys(`*${cluster.prefix}*`);
  assert.ok(keys.length > 0, "the cluster wrote to Redis");
  const parts: string[] = [];
  for (const k of keys) {
    const type = await c.redis.type(k);
    if (type === "string") parts.push((await c.redis.getBuffer(k))?.toString("latin1") ?? "");
    else if (type === "hash") for (const [f, v] of Object.entries(await c.redis.hgetallBuffer(k))) parts.push(f, v.toString("latin1"));
    else if (type === "list") parts.push(...(await c.redis.lrange(k, 0, -1)));
    else if (type === "set") parts.push(...(await c.redis.smembers(k)));
    else if (type === "zset") parts.push(...(await c.redis.zrange(k, 0, -1)));
    else if (type === "stream") parts.push(JSON.stringify(await c.redis.xrange(k, "-", "+")));
  }
  return parts.join("\n");
}

describe("cluster mode with CURVE: agents started with --curve-keys", function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  clusterSuite((c) => (cluster = c));

  it("a job runs with CURVE on every task's sockets; only the key folder's path travels, no key reaches Redis", async () => {
    const keys = join(tempDir(), "keys");
    generateCurveKeys(keys, false);
    await cluster.startPool(3, { agent: ["--curve-keys", keys] });
    const id = await cluster.submit({ maxSteps: 20 });
    const rec = await cluster.waitForState(id, ["succeeded", "failed"]);
    assert.equal(rec.state, "succeeded", `${rec.error}\n${cluster.logs()}`);
    const out = join(tempDir(), "run");
    const r = cli(["job", id, ...cluster.common, "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as { cluster: { security: string } };
    assert.equal(config.cluster.security, "curve");
    for (const log of ["coordinator.log", "server-0.log", "worker-0.log"]) assert.match(readFileSync(join(out, "logs", log), "utf8"), /"msg":"CURVE on"/, log);
    const stored = await everythingIn(cluster);
    for (const role of ["coordinator", "server", "worker"]) {
      const secret = readFileSync(join(keys, `${role}.secret`), "utf8").trim();
      assert.ok(!stored.includes(secret), `the ${role} secret key is not in Redis`);
      assert.ok(!cluster.logs(1000).includes(secret), `the ${role} secret key is in no log`);
    }
  });

  it("a shard killed under CURVE is restarted by its agent; the new process is admitted as the old one was and the job finishes", async () => {
    const keys = join(tempDir(), "keys");
    generateCurveKeys(keys, false);
    await cluster.startPool(3, { agent: ["--curve-keys", keys] });
    const id = await cluster.submit({ mode: "sync", maxSteps: 2000, checkpointEvery: 20, timeoutMs: 15_000, logLevel: "info" }, 0);
    const running = await cluster.waitFor(id, (r) => r.state === "running" && (r.progress?.globalStep ?? 0) > 60, "running past 3 checkpoints");
    process.kill(await cluster.taskPid(running, "server", 0), "SIGKILL");
    const rec = await cluster.waitForState(id, ["succeeded", "failed"], 120_000);
    assert.equal(rec.state, "succeeded", rec.error);
    assert.equal(rec.attempt, 1);
    assert.equal(rec.summary?.restarts, 1);
    assert.equal(rec.summary?.steps, 2000);
    const out = join(tempDir(), "run");
    const r = cli(["job", id, ...cluster.common, "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    const log = readFileSync(join(out, "logs", "server-0-restart-1.log"), "utf8");
    assert.match(log, /"msg":"CURVE on"/);
    assert.match(log, /"msg":"finished"/);
  });

  it("an agent whose --curve-keys folder is bad exits at once with one line, exit 2", () => {
    const r = cli(["agent", ...cluster.common, "--curve-keys", join(tempDir(), "none")]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /PS_ERR_BAD_OPTION: --curve-keys must be a folder made by ps-train keys generate/);
  });
});
