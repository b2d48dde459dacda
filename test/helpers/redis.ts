import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { freePort } from "../../src/util/free-port.js";

/** A password (requirepass) and/or TLS-only serving for a TestRedis. */
export interface RedisSecurity {
  password?: string;
  tls?: { cert: string; key: string; ca: string };
}

export function haveRedisServer(): boolean {
  return spawnSync("redis-server", ["--version"], { encoding: "utf8" }).status === 0;
}

/**
 * A real redis-server of the test's own, on a free port, in a temporary folder (append-only
 * persistence when asked), stopped by stop(). No mocks: BullMQ needs real Lua and blocking commands.
 */
export class TestRedis {
  private proc: ChildProcess | null = null;
  readonly dir: string;
  port = 0;

  constructor(private readonly appendOnly = false) {
    this.dir = mkdtempSync(join(tmpdir(), "ps-train-redis-"));
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Start it; `secure`: a password (requirepass) and/or TLS only (no plain port). */
  async start(port?: number, secure: RedisSecurity = {}): Promise<void> {
    this.port = port ?? (await freePort());
    const args = ["--bind", "127.0.0.1", "--dir", this.dir, "--save", "", "--appendonly", this.appendOnly ? "yes" : "no", "--appendfsync", "always", "--logfile", join(this.dir, "redis.log")];
    if (secure.password) args.push("--requirepass", secure.password);
    if (secure.tls) args.push("--port", "0", "--tls-port", String(this.port), "--tls-cert-file", secure.tls.cert, "--tls-key-file", secure.tls.key, "--tls-ca-cert-file", secure.tls.ca, "--tls-auth-clients", "no");
    else args.push("--port", String(this.port));
    this.proc = spawn("redis-server", args, { stdio: "ignore" });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const c = new Redis({
        port: this.port,
        host: "127.0.0.1",
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
        ...(secure.password ? { password: secure.password } : {}),
        ...(secure.tls ? { tls: { ca: readFileSync(secure.tls.ca) } } : {}),
      });
      c.on("error", () => undefined);
      try {
        await c.connect();
        await c.ping();
        c.disconnect();
        return;
      } catch {
        c.disconnect();
        if (Date.now() > deadline) throw new Error(`redis-server on port ${this.port} did not answer within 10 s (log: ${join(this.dir, "redis.log")})`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** SIGTERM: with append-only persistence Redis flushes it before it exits. */
  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = null;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGTERM");
    const t = setTimeout(() => p.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(t);
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
