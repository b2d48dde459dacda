import { LocalLauncher } from "./local-launcher.js";
import type { Role } from "./messages.js";

/** A role process as the run's config.json records it. */
export interface LaunchedProcess {
  role: Role;
  rank: number;
  pid: number | undefined;
  /** cluster mode: the agent that runs it */
  agent?: string;
  host?: string;
}

/**
 * How the coordinator gets its role processes started: as children on this machine (LocalLauncher)
 * or as tasks of the agents of a gang (cluster mode, src/cluster/redis/remote-launcher.ts).
 */
export interface RoleLauncher {
  /** start `role` `rank`, connecting to the coordinator; its log goes to `logFile` where it can */
  start(role: Role, rank: number, logFile: string): void;
  pids(): LaunchedProcess[];
  /** wait up to graceMs for every role process to exit after STOP, then kill the rest */
  stop(graceMs: number): Promise<void>;
  killAll(): Promise<void>;
  /**
   * Worker failures: the process of `role` `rank` no longer belongs to the run (it died or went
   * silent): kill it if it still runs, and report nothing more about it. Launchers without it
   * cannot go on after a worker failure (the run aborts).
   */
  release?(role: Role, rank: number): void;
}

/** Who a lost process was, for the --on-worker-failure policy (absent: treat as fatal). */
export interface LostProcess {
  role: Role;
  rank: number;
}

/**
 * Makes the launcher of one run. `onUnexpectedExit` fails the run with an error that names the
 * process (a role process that exits before it is told to stop, or an agent that is lost), and
 * `who` names the role process where the launcher knows it (a local run restarts a dead server
 * shard when checkpoints are on; see shard-restarter.ts).
 */
export type LauncherFactory = (
  coordinatorEndpoint: string,
  timeoutMs: number,
  onUnexpectedExit: (err: Error, who?: LostProcess) => void,
  /** the number of role processes the run starts (a local launcher sizes their GC threads by it) */
  planned?: number,
) => RoleLauncher;

export const localLauncher: LauncherFactory = (endpoint, timeoutMs, onUnexpectedExit, planned) => new LocalLauncher(endpoint, timeoutMs, onUnexpectedExit, "tuned", planned ?? 0);
