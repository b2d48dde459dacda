import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TransportName } from "../config/train-config.js";

/**
 * Where a process binds. tcp binds an ephemeral port on loopback (the bound endpoint is read
 * back from the socket); ipc uses a socket file in a per-run folder that is removed at the end.
 */
export function ipcDir(runTag: string): string {
  return join(tmpdir(), `ps-train-${runTag}`);
}

/**
 * The tcp host a process binds (and so advertises, as the endpoint read back from its socket):
 * loopback, unless PS_TRAIN_BIND_HOST names this machine's address (a cluster agent sets it to
 * its pod IP for the role processes it starts, so peers on other machines can connect).
 */
export function defaultBindHost(): string {
  return process.env["PS_TRAIN_BIND_HOST"] || "127.0.0.1";
}

export function bindAddress(transport: TransportName, runTag: string, name: string, host = defaultBindHost()): string {
  if (transport === "tcp") return `tcp://${host}:*`;
  const dir = ipcDir(runTag);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return `ipc://${join(dir, `${name}.sock`)}`;
}

export function removeIpcDir(runTag: string): void {
  rmSync(ipcDir(runTag), { recursive: true, force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Remove the folders in `root` of runs whose coordinator is gone (killed with SIGKILL, the
 * machine's power cut), named `ps-train-<run tag><suffix>`: run tags start with the
 * coordinator's pid. Returns the folders removed.
 */
export function sweepDeadRunDirs(root: string, suffix: string): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return removed;
  }
  for (const name of names) {
    if (!name.endsWith(suffix)) continue;
    const m = /^ps-train-(\d+)-[0-9a-f]+$/.exec(name.slice(0, name.length - suffix.length));
    if (!m || alive(Number(m[1]))) continue;
    rmSync(join(root, name), { recursive: true, force: true });
    removed.push(join(root, name));
  }
  return removed;
}

/** The ipc socket folders of runs whose coordinator is gone (see sweepDeadRunDirs). */
export function sweepStaleIpcDirs(): string[] {
  return sweepDeadRunDirs(tmpdir(), "");
}
