/**
 * The messages a socket receives, until it is closed: what `for await (... of socket)` gives,
 * with one difference. Under CURVE, zeromq.js 6 sometimes rejects a receive with EAGAIN although
 * the socket has no receive timeout (it looked readable, then had nothing to read, around a
 * CURVE handshake): a 2-rank allreduce group with CURVE on hit it in about one run of two, and
 * failed its collective with "Operation was not possible or timed out". Such a receive is simply
 * tried again; any other error ends the loop as before.
 */
export async function* messages(socket: { receive(): Promise<Buffer[]>; readonly closed: boolean; readonly receiveTimeout: number }): AsyncGenerator<Buffer[]> {
  for (;;) {
    let frames: Buffer[];
    try {
      frames = await socket.receive();
    } catch (err) {
      if (socket.closed) return;
      if (isSpuriousEagain(err, socket.receiveTimeout)) {
        await new Promise((r) => setImmediate(r));
        continue;
      }
      throw err;
    }
    yield frames;
  }
}

/** A receive rejected with EAGAIN: a timeout, or under CURVE the spurious kind (see messages()). */
export function isEagain(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === "EAGAIN";
}

/** EAGAIN from a receive that had no deadline (receiveTimeout < 0): not a timeout, see messages(). */
function isSpuriousEagain(err: unknown, receiveTimeout: number): boolean {
  return receiveTimeout < 0 && isEagain(err);
}
