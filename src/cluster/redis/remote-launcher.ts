import type { Redis } from "ioredis";
import { ErrorCode, PsError } from "../../util/errors.js";
import type { LaunchedProcess, RoleLauncher } from "../launcher.js";
import type { Role } from "../messages.js";
import { type GangMember, type TaskEvent, taskName } from "./job-record.js";
import type { ClusterKeys } from "./keys.js";
import type { AgentCommand } from "./agent.js";

interface RemoteTask {
  member: GangMember;
  started: TaskEvent | null;
  exited: TaskEvent | null;
}

/**
 * The coordinator's launcher in cluster mode: each role process is a task pushed to the inbox of
 * the gang's agent for that rank; the agents report starts and exits on the attempt's event list,
 * which this polls. A role process that exits before STOP, or an agent that stops heartbeating,
 * fails the run with an error naming both.
 */
export class RemoteLauncher implements RoleLauncher {
  private readonly tasks = new Map<string, RemoteTask>();
  private stopping = false;
  private cursor = 0;
  private timer: NodeJS.Timeout | null = null;
  private polling = false;
  private failed = false;

  constructor(
    private readonly redis: Redis,
    private readonly keys: ClusterKeys,
    private readonly jobId: string,
    private readonly attempt: number,
    private readonly gang: GangMember[],
    private readonly coordinatorEndpoint: string,
    private readonly timeoutMs: number,
    private readonly agentTtlMs: number,
    private readonly onUnexpectedExit: (err: Error) => void,
  ) {
    this.timer = setInterval(() => void this.poll(), 100);
    this.timer.unref();
  }

  private member(role: Role, rank: number): GangMember {
    const m = this.gang.find((g) => g.role === role && g.rank === rank);
    if (!m) throw new PsError(ErrorCode.PEER_LOST, `the gang of job ${this.jobId} has no agent for ${taskName({ role, rank })}`);
    return m;
  }

  private fail(err: Error): void {
    if (this.failed || this.stopping) return;
    this.failed = true;
    this.onUnexpectedExit(err);
  }

  start(role: Role, rank: number, _logFile: string): void {
    const member = this.member(role, rank);
    this.tasks.set(`${role}:${rank}`, { member, started: null, exited: null });
    const cmd: AgentCommand = { type: "task", job: this.jobId, attempt: this.attempt, role, rank, coordinator: this.coordinatorEndpoint, timeoutMs: this.timeoutMs };
    this.redis.rpush(this.keys.inbox(member.agent), JSON.stringify(cmd)).catch((err: unknown) => {
      this.fail(new PsError(ErrorCode.PEER_LOST, `could not hand ${taskName({ role, rank })} to agent ${member.agent}: ${(err as Error).message}`));
    });
  }

  pids(): LaunchedProcess[] {
    return [...this.tasks.values()].map((t) => ({
      role: t.member.role as Role,
      rank: t.member.rank,
      pid: t.started?.pid,
      agent: t.member.agent,
      ...(t.started ? { host: t.started.host } : {}),
    }));
  }

  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const items = await this.redis.lrange(this.keys.events(this.jobId, this.attempt), this.cursor, -1);
      this.cursor += items.length;
      for (const item of items) {
        const ev = JSON.parse(item) as TaskEvent;
        if (ev.role === "coordinator") continue;
        const t = this.tasks.get(`${ev.role}:${ev.rank}`);
        if (!t) continue;
        if (ev.type === "started") t.started = ev;
        else {
          t.exited = ev;
          const clean = this.stopping && (ev.code === 0 || ev.signal === "SIGKILL");
          if (!clean) {
            const how = ev.signal ? `was killed by ${ev.signal}` : `exited with code ${ev.code}`;
            const last = ev.last ? `; last log line: ${ev.last}` : "";
            this.fail(new PsError(ErrorCode.PROCESS_EXIT, `${taskName(ev)} (pid ${ev.pid} on agent ${ev.agent}) ${how}${last}`));
          }
        }
      }
      await this.checkAgents();
    } catch {
      // Redis briefly unreachable: the next poll tries again; the coordinator's own deadlines still hold
    } finally {
      this.polling = false;
    }
  }

  private lastAgentCheck = 0;

  /** An agent that has stopped heartbeating (or was dropped from the pool) takes its task with it. */
  private async checkAgents(): Promise<void> {
    const now = Date.now();
    if (now - this.lastAgentCheck < 500 || this.stopping) return;
    this.lastAgentCheck = now;
    const live = [...this.tasks.values()].filter((t) => !t.exited);
    if (live.length === 0) return;
    const scores = await this.redis.zmscore(this.keys.agents, ...live.map((t) => t.member.agent));
    live.forEach((t, i) => {
      const seen = scores[i];
      if (seen === null || seen === undefined) {
        this.fail(new PsError(ErrorCode.PEER_LOST, `agent ${t.member.agent} running ${taskName(t.member)} left the pool`));
      } else if (now - Number(seen) > this.agentTtlMs) {
        this.fail(new PsError(ErrorCode.PEER_LOST, `agent ${t.member.agent} running ${taskName(t.member)} sent no heartbeat for ${now - Number(seen)} ms`));
      }
    });
  }

  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    const deadline = Date.now() + graceMs;
    while ([...this.tasks.values()].some((t) => !t.exited) && Date.now() < deadline) {
      await this.poll();
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.killAll();
  }

  async killAll(): Promise<void> {
    this.stopping = true;
    const alive = [...this.tasks.values()].filter((t) => !t.exited);
    const agents = new Set(alive.map((t) => t.member.agent));
    const cmd: AgentCommand = { type: "kill", job: this.jobId, attempt: this.attempt };
    for (const a of agents) await this.redis.rpush(this.keys.inbox(a), JSON.stringify(cmd)).catch(() => undefined);
    const deadline = Date.now() + 5000;
    while ([...this.tasks.values()].some((t) => !t.exited) && Date.now() < deadline) {
      await this.poll();
      await new Promise((r) => setTimeout(r, 50));
    }
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
