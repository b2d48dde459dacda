import { strict as assert } from "node:assert";
import { join } from "node:path";
import { checkpointDir, listCheckpoints } from "../../src/ps/checkpoint.js";
import { alive, clusterSuite, type TestCluster } from "../helpers/cluster.js";

/**
 * Cluster mode with the same failure handling as a local run, done by the agents: a dead shard is
 * restarted by its agent from the checkpoints that agent keeps, and a lost worker is shrunk away
 * or replaced by its agent, all within the same attempt (no retry). Every job here gets
 * --max-retries 0, so a failure cannot hide behind a retry.
 */
describe("cluster mode: shard restarts and worker failures handled by the agents", function () {
  this.timeout(180_000);
  let cluster: TestCluster;
  clusterSuite((c) => (cluster = c));

  it("a server shard killed with SIGKILL is restarted by its agent from its checkpoint; the attempt finishes and reports the lost updates", async () => {
    await cluster.startPool(5);
    const every = 20;
    const id = await cluster.submit({ mode: "sync", workers: 2, servers: 2, maxSteps: 2500, checkpointEvery: every, checkpointKeep: 2, timeoutMs: 15_000 }, 0);
    const rec = await cluster.waitFor(id, (r) => r.state === "running" && (r.progress?.globalStep ?? 0) > 3 * every, "running past 3 checkpoints");
    const ckpts = checkpointDir(join(await cluster.agentRunsDir(rec, "server", 0), id, "a1"), 0);
    assert.ok(listCheckpoints(ckpts).length > 0, `shard 0's agent keeps its checkpoints in ${ckpts}`);
    const victim = await cluster.taskPid(rec, "server", 0);
    process.kill(victim, "SIGKILL");
    const restarted = await cluster.taskPid(rec, "server", 0, 1);
    assert.notEqual(restarted, victim);
    const end = await cluster.waitForState(id, ["succeeded", "failed"], 120_000);
    assert.equal(end.state, "succeeded", end.error);
    assert.equal(end.attempt, 1, "no retry: the shard was restarted inside the attempt");
    const s = end.summary!;
    assert.equal(s.steps, 2500);
    assert.equal(s.restarts, 1);
    const r = s.restartLog[0]!;
    assert.equal(r.shard, 0);
    assert.ok(r.restoredFrom !== null && r.restoredFrom >= every, `restored from ${String(r.restoredFrom)}`);
    assert.ok(s.lostUpdates >= 0 && s.lostUpdates <= every * 2 + 2, `lost ${s.lostUpdates}`);
    assert.ok(s.testAccuracy > 0.9, `test accuracy ${s.testAccuracy}`);
    assert.ok(!alive(victim) && !alive(restarted), "no shard process left behind");
  });

  it("--on-worker-failure shrink: a worker killed with SIGKILL is dropped and the others finish in the same attempt", async () => {
    await cluster.startPool(5);
    const id = await cluster.submit({ mode: "sync", workers: 3, servers: 1, maxSteps: 1500, onWorkerFailure: "shrink", heartbeatTimeout: 3000 }, 0);
    const rec = await cluster.waitFor(id, (r) => r.state === "running" && (r.progress?.globalStep ?? 0) > 30, "running with progress");
    const victim = await cluster.taskPid(rec, "worker", 1);
    process.kill(victim, "SIGKILL");
    const end = await cluster.waitForState(id, ["succeeded", "failed"], 120_000);
    assert.equal(end.state, "succeeded", end.error);
    assert.equal(end.attempt, 1);
    const s = end.summary!;
    assert.equal(s.workerFailures.length, 1);
    assert.equal(s.workerFailures[0]!.rank, 1);
    assert.match(s.workerFailures[0]!.error, /worker 1 .*killed by SIGKILL/);
    assert.equal(s.workersAtEnd, 2);
    assert.ok(s.testAccuracy > 0.9, `test accuracy ${s.testAccuracy}`);
  });

  it("--on-worker-failure wait: the agent of a killed worker starts a replacement that takes the rank", async () => {
    await cluster.startPool(4);
    const id = await cluster.submit({ mode: "sync", workers: 2, servers: 1, maxSteps: 1500, onWorkerFailure: "wait", replaceTimeout: 30_000 }, 0);
    const rec = await cluster.waitFor(id, (r) => r.state === "running" && (r.progress?.globalStep ?? 0) > 30, "running with progress");
    const victim = await cluster.taskPid(rec, "worker", 1);
    process.kill(victim, "SIGKILL");
    const replacement = await cluster.taskPid(rec, "worker", 1, 1);
    const end = await cluster.waitForState(id, ["succeeded", "failed"], 120_000);
    assert.equal(end.state, "succeeded", end.error);
    assert.equal(end.attempt, 1);
    const s = end.summary!;
    assert.equal(s.workerFailures.length, 1);
    const f = s.workerFailures[0]!;
    assert.equal(f.rank, 1);
    assert.equal(f.replaced, true);
    assert.equal(f.replacementPid, replacement);
    assert.equal(s.workersAtEnd, 2);
    assert.equal(s.steps, 1500);
  });

  it("--on-worker-failure shrink: the agent of a worker is killed; the scheduler keeps the attempt and the others finish", async () => {
    await cluster.startPool(5);
    const id = await cluster.submit({ mode: "async", workers: 3, servers: 1, maxSteps: 1500, onWorkerFailure: "shrink" }, 0);
    const rec = await cluster.waitFor(id, (r) => r.state === "running" && (r.progress?.globalStep ?? 0) > 30, "running with progress");
    process.kill(await cluster.agentPidOf(rec, "worker", 2), "SIGKILL");
    const end = await cluster.waitForState(id, ["succeeded", "failed"], 120_000);
    assert.equal(end.state, "succeeded", end.error);
    assert.equal(end.attempt, 1);
    const s = end.summary!;
    assert.equal(s.workerFailures.length, 1);
    assert.equal(s.workerFailures[0]!.rank, 2);
    assert.equal(s.workersAtEnd, 2);
  });
});
