import { strict as assert } from "node:assert";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { alive, cli, clusterSuite, TestCluster } from "../helpers/cluster.js";
import { TestRedis } from "../helpers/redis.js";
import { tempDir } from "../helpers/run.js";

/**
 * The cluster as a user runs it: a real redis-server, `ps-train scheduler` and `ps-train agent`
 * processes, jobs submitted through the binary or the client. Each test has its own key prefix.
 */
describe("cluster mode: scheduler + agents on a real redis-server", function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  clusterSuite((c) => (cluster = c));

  it("submit --wait → 1 scheduler + 3 agents → the job completes with the run directory of a local run", async () => {
    await cluster.startPool(3, { scheduler: ["--metrics-port", "0"] });
    const out = join(tempDir(), "run");
    const r = cli(["submit", ...cluster.common, "--dataset", "synthetic", "--model", "logreg", "--backend", "cpu", "--max-steps", "20", "--batch-size", "16", "--optimizer", "sgd", "--lr", "0.1", "--wait", "--out", out, "--log-level", "warn"]);
    assert.equal(r.code, 0, `${r.stderr}\n${cluster.logs()}`);
    assert.match(r.stdout, /^test accuracy [\d.]+%/);
    for (const f of ["config.json", "metrics.jsonl", "summary.json", "model/model.json", "model/weights.bin", "logs/coordinator.log", "logs/server-0.log", "logs/worker-0.log"]) assert.ok(existsSync(join(out, f)), f);
    const s = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as { status: string; steps: number; workers: number };
    assert.equal(s.status, "ok");
    assert.equal(s.steps, 20);
    const c = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as { transport: string; cluster: { processes: { agent: string }[] } };
    assert.equal(c.transport, "tcp");
    assert.equal(new Set(c.cluster.processes.map((p) => p.agent)).size, 2, "server and worker on two different agents");

    const id = /submitted job (\S+)/.exec(r.stderr)?.[1];
    assert.ok(id, r.stderr);
    const rec = await (await cluster.connect()).get(id);
    assert.equal(rec.state, "succeeded");
    assert.equal(rec.summary?.steps, 20);
    assert.ok(rec.ranksRunningAt !== null && rec.startedAt !== null && rec.ranksRunningAt >= rec.startedAt);

    const jobs = cli(["jobs", ...cluster.common]);
    assert.equal(jobs.code, 0, jobs.stderr);
    assert.match(jobs.stdout, new RegExp(`${id}\\s+succeeded\\s+100%\\s+async\\s+1w/1s`));
    const one = cli(["job", id, ...cluster.common]);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stdout, /succeeded, attempt 1 of 3/);
    assert.match(one.stdout, /gang +coordinator@agent\d/);
    const again = join(tempDir(), "fetched");
    const fetched = cli(["job", id, ...cluster.common, "--out", again]);
    assert.equal(fetched.code, 0, fetched.stderr);
    assert.deepEqual(readFileSync(join(again, "summary.json"), "utf8"), readFileSync(join(out, "summary.json"), "utf8"));
    assert.ok(existsSync(join(again, "model", "weights.bin")));
  });

  it("serves /healthz, /readyz and Prometheus /metrics on --metrics-port", async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    await cluster.startPool(1, { scheduler: ["--metrics-port", String(port)], agent: ["--metrics-port", String(port + 1)] });
    const get = async (p: number, path: string) => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          const res = await fetch(`http://127.0.0.1:${p}${path}`);
          return { status: res.status, text: await res.text() };
        } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    assert.equal((await get(port, "/healthz")).status, 200);
    const deadline = Date.now() + 10_000;
    while ((await get(port, "/readyz")).status !== 200 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal((await get(port, "/readyz")).status, 200);
    const m = (await get(port, "/metrics")).text;
    for (const name of ["ps_train_queue_jobs{state=\"wait\"}", "ps_train_agents{state=\"idle\"} 1", "ps_train_jobs_finished_total", "ps_train_staleness_bucket", "ps_train_gang_wait_seconds"]) assert.ok(m.includes(name), `scheduler /metrics has ${name}`);
    const am = (await get(port + 1, "/metrics")).text;
    assert.ok(am.includes("ps_train_agent_busy 0"), am.slice(0, 500));
    assert.equal((await get(port + 1, "/readyz")).status, 200);
  });

  it("an agent killed with SIGKILL mid-job: the job is retried on the remaining agents and completes", async () => {
    await cluster.startPool(4);
    const id = await cluster.submit({ maxSteps: 600, slow: { 0: 10 } }, 2);
    const rec = await cluster.waitFor(id, (r) => r.state === "running" && (r.progress?.globalStep ?? 0) > 5, "running with progress");
    const lost = rec.gang.find((g) => g.role === "worker")!.agent;
    process.kill(await cluster.agentPidOf(rec, "worker"), "SIGKILL");
    const end = await cluster.waitForState(id, ["succeeded", "failed"], 60_000);
    assert.equal(end.state, "succeeded", end.error);
    assert.equal(end.attempt, 2);
    assert.equal(end.errors.length, 1);
    assert.match(end.errors[0]!.error, new RegExp(`agent ${lost} running worker 0|worker 0`));
    assert.ok(!end.gang.some((g) => g.agent === lost), "the lost agent is not in the new gang");
    assert.equal(end.summary?.steps, 600);
  });

  it("an agent lost on the last allowed attempt: the job fails with a reason that names it", async () => {
    await cluster.startPool(3);
    const id = await cluster.submit({ maxSteps: 100_000, slow: { 0: 3 } }, 0);
    const rec = await cluster.waitFor(id, (r) => r.state === "running" && (r.progress?.globalStep ?? 0) > 2, "running with progress");
    const victim = await cluster.agentPidOf(rec, "server");
    const t0 = Date.now();
    process.kill(victim, "SIGKILL");
    const end = await cluster.waitForState(id, ["failed"], 30_000);
    assert.ok(Date.now() - t0 < 20_000, "failed within seconds");
    assert.match(end.error, /server shard 0/);
    const r = cli(["job", id, ...cluster.common]);
    assert.match(r.stdout, /failed, attempt 1 of 1/);
    assert.match(r.stdout, /attempt 1 failed: .*server shard 0/);
  });

  it("a --comm allreduce job gets a gang without server shards and completes", async () => {
    await cluster.startPool(3);
    const id = await cluster.submit({ comm: "allreduce", mode: "sync", workers: 2 });
    const end = await cluster.waitForState(id, ["succeeded", "failed"]);
    assert.equal(end.state, "succeeded", end.error);
    assert.deepEqual(end.gang.map((g) => `${g.role}:${g.rank}`), ["coordinator:0", "worker:0", "worker:1"]);
    assert.ok(end.ranksRunningAt !== null, "all ranks running was recorded");
    assert.equal(end.summary?.steps, 20);
  });

  it("two jobs with agents enough for one: the second waits, then runs; no deadlock", async () => {
    await cluster.startPool(3);
    const first = await cluster.submit({ maxSteps: 200, slow: { 0: 2 } });
    await cluster.waitForState(first, ["starting", "running"]);
    const second = await cluster.submit({ maxSteps: 20 });
    const waiting = await cluster.waitForState(second, ["waiting"], 20_000);
    assert.equal(waiting.attempt, 0);
    const c = await cluster.connect();
    // The state turns "waiting" before the scheduler's first try at a gang says what it waits for.
    let waitingFor = "";
    for (const until = Date.now() + 10_000; waitingFor === "" && Date.now() < until; await new Promise((r) => setTimeout(r, 50)))
      waitingFor = (await c.redis.hget(c.keys.job(second), "waitingFor")) ?? "";
    assert.match(waitingFor, /needs 3 agents|behind/);
    const a = await cluster.waitForState(first, ["succeeded"]);
    const b = await cluster.waitForState(second, ["succeeded"]);
    assert.ok(b.startedAt! >= a.finishedAt! - 50, "the second started once the first's gang was released");
    assert.equal(b.attempt, 1);
  });

  for (const signal of ["SIGKILL", "SIGTERM"] as const) {
    it(`a scheduler stopped mid-queue (${signal}) loses nothing: its replacement picks every job up where it was`, async () => {
      const first = await cluster.startPool(3);
      const a = await cluster.submit({ maxSteps: 300, slow: { 0: 2 } });
      const b = await cluster.submit({ maxSteps: 20 });
      const c = await cluster.submit({ maxSteps: 20 });
      await cluster.waitFor(a, (r) => r.state === "running" && (r.progress?.globalStep ?? 0) > 2, "running");
      await cluster.waitForState(b, ["waiting"]);
      await cluster.kill(first, signal);
      await new Promise((r) => setTimeout(r, 500));
      cluster.startScheduler();
      for (const id of [a, b, c]) {
        const rec = await cluster.waitForState(id, ["succeeded", "failed", "cancelled"], 60_000);
        assert.equal(rec.state, "succeeded", `${id}: ${rec.error}`);
        assert.equal(rec.attempt, 1, `${id} ran once (the running gang was kept, not restarted)`);
      }
    });
  }

  it("cancel: a queued job is dropped at once; a running job's processes are killed and its agents freed", async () => {
    await cluster.startPool(3);
    const running = await cluster.submit({ maxSteps: 100_000, slow: { 0: 3 } });
    const rec = await cluster.waitFor(running, (r) => r.state === "running" && (r.progress?.globalStep ?? 0) > 2, "running");
    const queued = await cluster.submit({ maxSteps: 20 });
    await cluster.waitForState(queued, ["waiting"]);
    let r = cli(["cancel", queued, ...cluster.common]);
    assert.equal(r.code, 0, r.stderr);
    await cluster.waitForState(queued, ["cancelled"], 10_000);
    const c = await cluster.connect();
    const started = (await c.redis.lrange(c.keys.events(running, 1), 0, -1)).map((e) => JSON.parse(e) as { type: string; pid: number }).filter((e) => e.type === "started");
    assert.equal(started.length, 3);
    r = cli(["cancel", running, ...cluster.common]);
    assert.equal(r.code, 0, r.stderr);
    await cluster.waitForState(running, ["cancelled"], 10_000);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const jobs = await Promise.all(rec.gang.map((g) => c.redis.hget(c.keys.agent(g.agent), "job")));
      if (jobs.every((j) => j === "")) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    for (const g of rec.gang) assert.equal(await c.redis.hget(c.keys.agent(g.agent), "job"), "", `agent ${g.agent} is idle again`);
    const until = Date.now() + 5000;
    while (started.some((e) => alive(e.pid)) && Date.now() < until) await new Promise((res) => setTimeout(res, 50));
    for (const e of started) assert.ok(!alive(e.pid), `task process ${e.pid} was killed`);
    assert.match(cli(["cancel", running, ...cluster.common]).stdout, /already cancelled/);
  });

  it("a Redis restart with append-only persistence loses no queued job", async () => {
    const durable = new TestRedis(true);
    await durable.start();
    const c2 = new TestCluster(durable.url);
    try {
      const ids = [await c2.submit(), await c2.submit()];
      await c2.stop();
      await durable.stop();
      await durable.start(durable.port);
      c2.startScheduler();
      for (let i = 0; i < 3; i++) c2.startAgent();
      for (const id of ids) assert.equal((await c2.waitForState(id, ["succeeded", "failed"])).state, "succeeded");
    } finally {
      await c2.stop();
      await durable.destroy();
    }
  });

  it("rejects bad input with one line and exit code 2, before anything is queued", async () => {
    const cases: [string[], RegExp][] = [
      [["submit", ...cluster.common, "--workers", "0"], /--workers/],
      [["submit", "--redis", "http://nope", "--dataset", "synthetic", "--model", "logreg"], /--redis/],
      [["submit", ...cluster.common, "--dataset", "synthetic", "--model", "cnn"], /cnn/],
      [["submit", ...cluster.common, "--dataset", "synthetic", "--model", "logreg", "--out", join(tempDir(), "x")], /--out needs --wait/],
      [["submit", ...cluster.common, "--dataset", "synthetic", "--model", "logreg", "--transport", "ipc"], /tcp/],
      [["submit", ...cluster.common, "--max-retries", "-1"], /--max-retries/],
      [["submit", ...cluster.common, "--dataset", "synthetic", "--model", "logreg", "--resume", join(tempDir(), "run")], /--resume/],
      [["agent", ...cluster.common, "--roles", "worker,chef"], /--roles/],
      [["scheduler", ...cluster.common, "--agent-ttl-ms", "soon"], /--agent-ttl-ms/],
      [["job", "no-such-job", ...cluster.common], /no job "no-such-job"/],
      [["cancel", "bad id!", ...cluster.common], /job id/],
    ];
    for (const [args, pattern] of cases) {
      const r = cli(args);
      const lines = r.stderr.trim().split("\n");
      assert.equal(r.code, 2, `${args.join(" ")}: exit code (stderr: ${r.stderr})`);
      assert.equal(lines.length, 1, `${args.join(" ")}: one line: ${r.stderr}`);
      assert.match(lines[0]!, pattern);
    }
    const c = await cluster.connect();
    assert.equal(await c.redis.zcard(c.keys.jobIndex), 0, "nothing was queued");
    const down = cli(["jobs", "--redis", "redis://127.0.0.1:1", "--connect-timeout-ms", "1000"]);
    assert.equal(down.code, 1);
    assert.match(down.stderr.trim(), /^ps-train: PS_ERR_REDIS: cannot reach Redis at redis:\/\/127\.0\.0\.1:1/);
  });
});
