/**
 * The bandwidth of the link between stages, measured: a PUSH/PULL pair over the run's transport
 * on this machine moves `count` messages of `bytes` each (after one to warm up).
 */
import type { TransportName } from "../config/train-config.js";
import { bindAddress, removeIpcDir } from "../transport/endpoint.js";
import { newSelfProbePair } from "../transport/sockets.js";
import { ErrorCode, PsError } from "../util/errors.js";

export async function measureBandwidth(transport: TransportName, bytes = 1 << 20, count = 8, timeoutMs = 10_000): Promise<{ bytesPerSecond: number; latencyMs: number }> {
  const tag = `bw-${process.pid}-${Date.now().toString(36)}`;
  const { pull, push } = newSelfProbePair(timeoutMs);
  try {
    await pull.bind(bindAddress(transport, tag, "bw"));
    push.connect(pull.lastEndpoint ?? "");
    const buf = Buffer.alloc(bytes, 1);
    const tiny = Buffer.alloc(4);
    await push.send(buf);
    await pull.receive();
    const l0 = performance.now();
    for (let i = 0; i < count; i++) {
      await push.send(tiny);
      await pull.receive();
    }
    const latencyMs = (performance.now() - l0) / count;
    const t0 = performance.now();
    for (let i = 0; i < count; i++) {
      await push.send(buf);
      await pull.receive();
    }
    const s = (performance.now() - t0) / 1000;
    return { bytesPerSecond: (bytes * count) / Math.max(s, 1e-9), latencyMs };
  } catch (err) {
    throw new PsError(ErrorCode.TIMEOUT, `measuring the ${transport} link bandwidth failed: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    push.close();
    pull.close();
    if (transport !== "tcp") removeIpcDir(tag);
  }
}
