#!/usr/bin/env node
/**
 * Entry point of every role process (server shard, worker). The launcher (or, in cluster mode,
 * an agent) starts it with the coordinator's endpoint; everything else comes over the wire.
 *
 *   node role-main.js --role worker --rank 3 --coordinator ipc:///tmp/ps-train-x/coord.sock --timeout-ms 30000
 *
 * An agent adds --checkpoint-root DIR: a server shard keeps its checkpoints under DIR instead of
 * the run directory the coordinator names (which is on the coordinator's machine).
 */
import { parseArgs } from "node:util";
import { pino } from "pino";
import { runServer } from "../ps/server-main.js";
import { MsgType } from "../transport/header.js";
import { curveKeys, enableCurveFromEnv, securityStats } from "../transport/sockets.js";
import { errorLine, PsError } from "../util/errors.js";
import { runWorker } from "../worker/worker-main.js";
import { ControlClient } from "./control-client.js";
import type { ConfigMsg, FailMsg, Role } from "./messages.js";

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      role: { type: "string" },
      rank: { type: "string" },
      coordinator: { type: "string" },
      "timeout-ms": { type: "string", default: "30000" },
      // cluster mode: where a server shard keeps its checkpoints (the agent's folder for the attempt)
      "checkpoint-root": { type: "string" },
    },
  });
  const role = values.role as Role | undefined;
  const rank = Number(values.rank);
  const timeoutMs = Number(values["timeout-ms"]);
  if ((role !== "server" && role !== "worker") || !Number.isInteger(rank) || rank < 0 || !values.coordinator || !(timeoutMs > 0)) {
    process.stderr.write("role-main: usage: --role server|worker --rank N --coordinator ENDPOINT [--timeout-ms MS] [--checkpoint-root DIR]\n");
    return 2;
  }
  // JSON lines on stderr, which the launcher sends to runs/<id>/logs/<role>-<rank>.log.
  let log = pino({ base: { role, rank, pid: process.pid } }, pino.destination({ dest: 2, sync: true }));
  // PS_TRAIN_CURVE_KEYS (a path, inherited from the launcher or agent): CURVE on every socket.
  try {
    if (await enableCurveFromEnv(role, (msg, fields) => log.warn(fields, msg))) log.info("CURVE on");
  } catch (err) {
    process.stderr.write(`${errorLine(err)}\n`);
    return 2;
  }
  const control = new ControlClient(values.coordinator, role, rank, timeoutMs);
  // The coordinator going away must end this process, not leave it behind.
  process.on("disconnect", () => process.exit(3));
  try {
    const cfgMsg = await control.hello();
    const cfg = cfgMsg.body as ConfigMsg;
    log.level = cfg.config.logLevel;
    log = log.child({ run: cfg.runTag });
    log.info({ mode: cfg.config.mode, workers: cfg.config.workers, servers: cfg.config.servers }, "configured");
    control.setRunId(cfg.runId);
    control.startHeartbeat(cfg.config.heartbeatMs);
    if (role === "server") await runServer(control, cfg, cfgMsg.frames[1], values["checkpoint-root"] ?? cfg.config.out);
    else {
      await runWorker(control, cfg, cfgMsg.frames[1]);
      // Stay until the coordinator has read our results and says STOP.
      await control.next([MsgType.STOP], cfg.config.timeoutMs * 4, "STOP");
    }
    // With CURVE: what this process's sockets let in and refused, for the operator.
    log.info(curveKeys() ? { security: securityStats() } : {}, "finished");
    control.close();
    return 0;
  } catch (err) {
    const fail: FailMsg = { message: errorLine(err).replace(/^ps-train: /, "") };
    if (err instanceof PsError) fail.code = err.code;
    // The last log line is the one the launcher quotes when this process exits.
    log.fatal({ err }, `${role} ${rank}: ${fail.message}`);
    await control.send(MsgType.FAIL, fail).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    control.close();
    return 1;
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  },
);
