import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, openSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { JobClient } from "../../src/cluster/redis/job-client.js";
import type { JobRecord, JobState, TaskEvent } from "../../src/cluster/redis/job-record.js";
import type { TrainConfig } from "../../src/config/train-config.js";
import { haveRedisServer, TestRedis } from "./redis.js";
import { smallConfig, tempDir } from "./run.js";

export const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

/** Runs the ps-train binary to its end (for submit/jobs/job/cancel). */
export function cli(args: string[], timeoutMs = 60_000): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: timeoutMs });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Proc {
  name: string;
  proc: ChildProcess;
  log: string;
}

/**
 * One test's cluster: a scheduler and agents as real `ps-train` processes against a test Redis,
 * under a key prefix of its own. Timings are short so failures are seen within seconds.
 */
export class TestCluster {
  readonly prefix = `t-${randomBytes(4).toString("hex")}`;
  readonly dir = tempDir("ps-train-cluster-");
  private readonly procs: Proc[] = [];
  private agentsStarted = 0;
  client: JobClient | null = null;

  constructor(
    readonly redisUrl: string,
    readonly agentTtlMs = 2500,
  ) {}

  get common(): string[] {
    return ["--redis", this.redisUrl, "--prefix", this.prefix];
  }

  private spawnCli(name: string, args: string[]): Proc {
    const log = join(this.dir, `${name}.log`);
    mkdirSync(this.dir, { recursive: true }); // stop() removes it; a cluster may be started again
    const fd = openSync(log, "a");
    const proc = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", fd, fd] });
    closeSync(fd);
    const p = { name, proc, log };
    this.procs.push(p);
    return p;
  }

  startScheduler(extra: string[] = []): Proc {
    return this.spawnCli(`scheduler-${this.procs.length}`, ["scheduler", ...this.common, "--agent-ttl-ms", String(this.agentTtlMs), "--lock-ms", "2000", "--log-level", "debug", ...extra]);
  }

  startAgent(extra: string[] = []): Proc {
    const n = this.agentsStarted++;
    const runs = join(this.dir, `agent-${n}`);
    mkdirSync(runs, { recursive: true });
    return this.spawnCli(`agent-${n}`, ["agent", ...this.common, "--name", `agent${n}`, "--runs-dir", runs, "--heartbeat-ms", "250", "--log-level", "debug", ...extra]);
  }

  /**
   * A scheduler and `agents` agents (with extra arguments `scheduler` and `agent`), once every
   * agent has registered; the scheduler's process, to stop it.
   */
  async startPool(agents: number, extra: { scheduler?: string[]; agent?: string[] } = {}): Promise<Proc> {
    const scheduler = this.startScheduler(extra.scheduler);
    for (let i = 0; i < agents; i++) this.startAgent(extra.agent);
    await this.agentsReady(agents);
    return scheduler;
  }

  async connect(): Promise<JobClient> {
    this.client ??= await JobClient.connect(this.redisUrl, this.prefix, 5000);
    return this.client;
  }

  /** Waits until `n` agents have registered. */
  async agentsReady(n: number, timeoutMs = 20_000): Promise<void> {
    const c = await this.connect();
    const deadline = Date.now() + timeoutMs;
    while ((await c.redis.zcard(c.keys.agents)) < n) {
      if (Date.now() > deadline) throw new Error(`only ${await c.redis.zcard(c.keys.agents)} of ${n} agents registered within ${timeoutMs} ms\n${this.logs()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async submit(over: Partial<TrainConfig> = {}, maxRetries = 2, name = ""): Promise<string> {
    const c = await this.connect();
    const config = { ...jobConfig(over), out: "" };
    return c.submit(config, { name, maxRetries });
  }

  async waitFor(id: string, pred: (r: JobRecord) => boolean, what: string, timeoutMs = 60_000): Promise<JobRecord> {
    const c = await this.connect();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await c.get(id);
      if (pred(r)) return r;
      if (Date.now() > deadline) throw new Error(`job ${id}: not ${what} within ${timeoutMs} ms (state ${r.state}, attempt ${r.attempt}, error ${r.error || "-"})\n${this.logs()}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  waitForState(id: string, states: JobState[], timeoutMs = 60_000): Promise<JobRecord> {
    return this.waitFor(id, (r) => states.includes(r.state), states.join("/"), timeoutMs);
  }

  /** The pid of the agent process that runs `role` `rank` of the job's current gang. */
  async agentPidOf(rec: JobRecord, role: string, rank = 0): Promise<number> {
    const c = await this.connect();
    const m = rec.gang.find((g) => g.role === role && g.rank === rank);
    if (!m) throw new Error(`no ${role} ${rank} in the gang of ${rec.id}`);
    return Number(await c.redis.hget(c.keys.agent(m.agent), "pid"));
  }

  /**
   * The pid of the process of `role` `rank` (its `incarnation`-th: 0 the first, n its n-th
   * restart or replacement) as its agent reported it, waiting up to timeoutMs for the report.
   */
  async taskPid(rec: JobRecord, role: string, rank: number, incarnation = 0, timeoutMs = 30_000): Promise<number> {
    const c = await this.connect();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const text of await c.redis.lrange(c.keys.events(rec.id, rec.attempt), 0, -1)) {
        const ev = JSON.parse(text) as TaskEvent;
        if (ev.type === "started" && ev.role === role && ev.rank === rank && (ev.incarnation ?? 0) === incarnation && ev.pid) return ev.pid;
      }
      if (Date.now() > deadline) throw new Error(`no start of ${role} ${rank} (incarnation ${incarnation}) reported within ${timeoutMs} ms\n${this.logs()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The runs folder of the agent that runs `role` `rank` of the job's gang. */
  async agentRunsDir(rec: JobRecord, role: string, rank: number): Promise<string> {
    const c = await this.connect();
    const m = rec.gang.find((g) => g.role === role && g.rank === rank);
    if (!m) throw new Error(`no ${role} ${rank} in the gang of ${rec.id}`);
    const name = await c.redis.hget(c.keys.agent(m.agent), "name");
    return join(this.dir, `agent-${String(name).replace(/^agent/, "")}`);
  }

  /** The last lines of every process's log, for a failing assertion's message. */
  logs(lines = 15): string {
    return this.procs
      .map((p) => {
        let text = "";
        try {
          text = readFileSync(p.log, "utf8").trim().split("\n").slice(-lines).join("\n");
        } catch {
          // no log yet
        }
        return `--- ${p.name} (pid ${p.proc.pid}, exit ${p.proc.exitCode ?? p.proc.signalCode ?? "-"})\n${text}`;
      })
      .join("\n");
  }

  async kill(p: Proc, signal: NodeJS.Signals): Promise<void> {
    if (p.proc.exitCode !== null || p.proc.signalCode !== null) return;
    const exited = new Promise((r) => p.proc.once("exit", r));
    p.proc.kill(signal);
    await exited;
  }

  async stop(): Promise<void> {
    await this.client?.close();
    this.client = null;
    // SIGTERM lets agents kill their tasks and leave; SIGKILL whatever is left after 5 s.
    await Promise.all(
      this.procs.map(async (p) => {
        if (p.proc.exitCode !== null || p.proc.signalCode !== null) return;
        const exited = new Promise((r) => p.proc.once("exit", r));
        p.proc.kill("SIGTERM");
        const t = setTimeout(() => p.proc.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(t);
      }),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A tiny job: synthetic data, logistic regression, pure-JS backend, short deadlines. */
export function jobConfig(over: Partial<TrainConfig> = {}): TrainConfig {
  return smallConfig({ transport: "tcp", maxSteps: 20, timeoutMs: 8000, heartbeatMs: 250, out: "", ...over });
}

export { alive } from "./processes.js";

/**
 * The mocha hooks of a suite of cluster tests on one redis-server of its own: a fresh TestCluster
 * (with its own key prefix) for every test, handed to `onCluster`, its logs printed when the test
 * fails, stopped after it. The suite is skipped where there is no redis-server.
 */
export function clusterSuite(onCluster: (c: TestCluster) => void): TestRedis {
  const redis = new TestRedis();
  let current: TestCluster | null = null;
  before(async function () {
    if (!haveRedisServer()) this.skip();
    await redis.start();
  });
  after(async () => {
    await redis.destroy();
  });
  beforeEach(() => {
    current = new TestCluster(redis.url);
    onCluster(current);
  });
  afterEach(async function () {
    if (this.currentTest?.state === "failed" && current) process.stderr.write(current.logs(30) + "\n");
    await current?.stop();
  });
  return redis;
}

