import type { Redis } from "ioredis";
import { ErrorCode, PsError } from "../../util/errors.js";
import type { LaunchedProcess, LostProcess, RoleLauncher } from "../launcher.js";
import type { Role } from "../messages.js";
import { type GangMember, type TaskEvent, taskName } from "./job-record.js";
import type { ClusterKeys } from "./keys.js";
import type { AgentCommand } from "./agent.js";

interface RemoteTask {
  member: GangMember;
  /** which process of the task this is: 0, then one more per restart or replacement */
  incarnation: number;
  started: TaskEvent | null;
  exited: TaskEvent | null;
  /** no longer part of the run (a lost worker): its exit is not reported */
  released: boolean;
  /** its agent was reported lost */
  agentLost: boolean;
}

/**
 * The coordinator's launcher in cluster mode: each role process is a task pushed to the inbox of
 * the gang's agent for that rank; the agents report starts and exits on the attempt's event list,
 * which this polls. A role process that exits before STOP is reported with who it was, so the run's
 * policies apply as in a local run: a dead shard is restarted by the same agent from the
 * checkpoints it keeps, a lost worker is shrunk away or replaced (--on-worker-failure). An agent
 * that stops heartbeating takes its task with it: a worker's loss goes to the same policy, any
 * other fails the run with an error naming both.
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
    private readonly onUnexpectedExit: (err: Error, who?: LostProcess) => void,
  ) {
    this.timer = setInterval(() => void this.poll(), 100);
    this.timer.unref();
  }

  private member(role: Role, rank: number): GangMember {
    const m = this.gang.find((g) => g.role === role && g.rank === rank);
    if (!m) throw new PsError(ErrorCode.PEER_LOST, `the gang of job ${this.jobId} has no agent for ${taskName({ role, rank })}`);
    return m;
  }

  /** A task's process is gone: `who` lets the run's policy decide; without it the run fails. */
  private lostTask(err: Error, who?: LostProcess): void {
    if (this.stopping) return;
    if (who) {
      this.onUnexpectedExit(err, who);
      return;
    }
    if (this.failed) return;
    this.failed = true;
    this.onUnexpectedExit(err);
  }

  start(role: Role, rank: number, _logFile: string): void {
    const member = this.member(role, rank);
    const key = `${role}:${rank}`;
    const prev = this.tasks.get(key);
    if (prev?.agentLost) {
      // Its agent is gone: nowhere to start it (a new attempt gets a new gang).
      this.lostTask(new PsError(ErrorCode.PEER_LOST, `cannot start ${taskName({ role, rank })} again: its agent ${member.agent} was lost`));
      return;
    }
    const incarnation = prev ? prev.incarnation + 1 : 0;
    this.tasks.set(key, { member, incarnation, started: null, exited: null, released: false, agentLost: false });
    const cmd: AgentCommand = { type: "task", job: this.jobId, attempt: this.attempt, role, rank, coordinator: this.coordinatorEndpoint, timeoutMs: this.timeoutMs, incarnation };
    this.redis.rpush(this.keys.inbox(member.agent), JSON.stringify(cmd)).catch((err: unknown) => {
      this.lostTask(new PsError(ErrorCode.PEER_LOST, `could not hand ${taskName({ role, rank })} to agent ${member.agent}: ${(err as Error).message}`));
    });
  }

  release(role: Role, rank: number): void {
    const t = this.tasks.get(`${role}:${rank}`);
    if (!t || t.released) return;
    t.released = true;
    if (t.exited || t.agentLost) return;
    const cmd: AgentCommand = { type: "kill", job: this.jobId, attempt: this.attempt, role, rank };
    this.redis.rpush(this.keys.inbox(t.member.agent), JSON.stringify(cmd)).catch(() => undefined);
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
        // an event of an earlier process of the task (one that was restarted or replaced)
        if (!t || (ev.incarnation ?? 0) !== t.incarnation) continue;
        if (ev.type === "started") t.started = ev;
        else {
          t.exited = ev;
          const clean = this.stopping && (ev.code === 0 || ev.signal === "SIGKILL");
          if (!clean && !t.released) {
            const how = ev.signal ? `was killed by ${ev.signal}` : `exited with code ${ev.code}`;
            const last = ev.last ? `; last log line: ${ev.last}` : "";
            this.lostTask(new PsError(ErrorCode.PROCESS_EXIT, `${taskName(ev)} (pid ${ev.pid} on agent ${ev.agent}) ${how}${last}`), { role: ev.role, rank: ev.rank });
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
    const live = [...this.tasks.values()].filter((t) => !t.exited && !t.released && !t.agentLost);
    if (live.length === 0) return;
    const scores = await this.redis.zmscore(this.keys.agents, ...live.map((t) => t.member.agent));
    live.forEach((t, i) => {
      const seen = scores[i];
      let why = "";
      if (seen === null || seen === undefined) why = "left the pool";
      else if (now - Number(seen) > this.agentTtlMs) why = `sent no heartbeat for ${now - Number(seen)} ms`;
      if (!why) return;
      t.agentLost = true;
      const err = new PsError(ErrorCode.PEER_LOST, `agent ${t.member.agent} running ${taskName(t.member)} ${why}`);
      // a worker's loss goes to --on-worker-failure; a shard cannot be restarted without its agent
      this.lostTask(err, t.member.role === "worker" ? { role: "worker", rank: t.member.rank } : undefined);
    });
  }

  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    const deadline = Date.now() + graceMs;
    while ([...this.tasks.values()].some((t) => !t.exited && !t.agentLost) && Date.now() < deadline) {
      await this.poll();
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.killAll();
  }

  async killAll(): Promise<void> {
    this.stopping = true;
    const alive = [...this.tasks.values()].filter((t) => !t.exited && !t.agentLost);
    const agents = new Set(alive.map((t) => t.member.agent));
    const cmd: AgentCommand = { type: "kill", job: this.jobId, attempt: this.attempt };
    for (const a of agents) await this.redis.rpush(this.keys.inbox(a), JSON.stringify(cmd)).catch(() => undefined);
    const deadline = Date.now() + 5000;
    while (alive.some((t) => !t.exited) && Date.now() < deadline) {
      await this.poll();
      await new Promise((r) => setTimeout(r, 50));
    }
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
