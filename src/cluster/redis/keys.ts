/**
 * Every Redis key of one cluster, under one prefix (`ps-train` unless --prefix says otherwise),
 * so several clusters (or test runs) can share a Redis. docs/cluster.md lists them.
 */
export class ClusterKeys {
  constructor(readonly prefix: string) {}

  /** BullMQ's own keys live under `<prefix>:bull:jobs:*` */
  get bullPrefix(): string {
    return `${this.prefix}:bull`;
  }
  static readonly QUEUE = "jobs";

  /** ZSET agent id -> last heartbeat (ms since the epoch) */
  get agents(): string {
    return `${this.prefix}:agents`;
  }
  /** HASH of one agent: name, host, capacity, roles, and `job` (the gang it belongs to, or "") */
  agent(id: string): string {
    return `${this.prefix}:agent:${id}`;
  }
  /** prefix the gang scripts append an agent id to */
  get agentPrefix(): string {
    return `${this.prefix}:agent:`;
  }
  /** LIST of commands for one agent (tasks to start, attempts to kill) */
  inbox(id: string): string {
    return `${this.prefix}:agent:${id}:inbox`;
  }
  /** ZSET job id -> submit time: the line of jobs waiting for a gang, in order */
  get gangQueue(): string {
    return `${this.prefix}:gang-queue`;
  }
  /** ZSET job id -> submit time: every job, for `ps-train jobs` */
  get jobIndex(): string {
    return `${this.prefix}:jobs`;
  }
  /** HASH of one job: state, config, attempt, gang, progress, summary, errors */
  job(id: string): string {
    return `${this.prefix}:job:${id}`;
  }
  get jobPrefix(): string {
    return `${this.prefix}:job:`;
  }
  /** LIST of what the agents report for one attempt: role processes started and exited */
  events(id: string, attempt: number): string {
    return `${this.prefix}:job:${id}:events:${attempt}`;
  }
  /** HASH relative path -> contents: one attempt's run directory */
  files(id: string, attempt: number): string {
    return `${this.prefix}:job:${id}:files:${attempt}`;
  }
  /** pub/sub channel that wakes the scheduler when an agent frees up or a job changes */
  get wakeChannel(): string {
    return `${this.prefix}:wake`;
  }
}
