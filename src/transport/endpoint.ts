import { mkdirSync, rmSync } from "node:fs";
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
