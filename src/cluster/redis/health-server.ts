import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";
import { PsError, ErrorCode } from "../../util/errors.js";

/**
 * /healthz (the process serves requests), /readyz (it can do its job: Redis reachable,
 * registered/consuming) and Prometheus /metrics, for the probes and the scraper.
 */
export class HealthServer {
  private server: Server | null = null;
  port = 0;

  constructor(
    private readonly registry: Registry,
    private readonly ready: () => Promise<string | null>,
  ) {}

  async listen(port: number, host = "0.0.0.0"): Promise<number> {
    const server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      const reply = (code: number, body: string, type = "text/plain; charset=utf-8") => {
        res.writeHead(code, { "content-type": type });
        res.end(body);
      };
      if (path === "/healthz") return reply(200, "ok\n");
      if (path === "/readyz") {
        this.ready().then(
          (why) => (why === null ? reply(200, "ready\n") : reply(503, `not ready: ${why}\n`)),
          (err: unknown) => reply(503, `not ready: ${err instanceof Error ? err.message : String(err)}\n`),
        );
        return;
      }
      if (path === "/metrics") {
        this.registry.metrics().then(
          (text) => reply(200, text, this.registry.contentType),
          (err: unknown) => reply(500, `metrics failed: ${err instanceof Error ? err.message : String(err)}\n`),
        );
        return;
      }
      reply(404, "not found: try /healthz, /readyz or /metrics\n");
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) =>
        reject(new PsError(err.code === "EADDRINUSE" ? ErrorCode.BAD_OPTION : ErrorCode.PROCESS_EXIT, `--metrics-port ${port}: cannot listen on ${host}:${port} (${err.code ?? err.message})`)),
      );
      server.listen(port, host, () => resolve());
    });
    this.server = server;
    const addr = server.address();
    this.port = typeof addr === "object" && addr ? addr.port : port;
    return this.port;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
