import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { Push } from "zeromq";
import type { TransportName } from "../../src/config/train-config.js";
import { StageLink } from "../../src/pipeline/link.js";
import { bindAddress, removeIpcDir } from "../../src/transport/endpoint.js";
import { DType, encodeHeader, makeHeader, MsgType } from "../../src/transport/header.js";
import { ErrorCode, PsError } from "../../src/util/errors.js";

const RUN = 4242;

async function threeStages(transport: TransportName, timeoutMs = 5000) {
  const tag = `link-${process.pid}-${randomBytes(3).toString("hex")}`;
  const links = [0, 1, 2].map((r) => new StageLink(RUN, r, `worker ${r}`, timeoutMs, 1 << 20));
  const eps = await Promise.all(links.map((l, r) => l.bind(bindAddress(transport, tag, `s${r}`))));
  const n = (r: number) => ({ rank: r, endpoint: eps[r]!, name: `worker ${r}` });
  links[0]!.connect(null, n(1));
  links[1]!.connect(n(0), n(2));
  links[2]!.connect(n(1), null);
  return {
    links,
    eps,
    close() {
      for (const l of links) l.close();
      if (transport === "ipc") removeIpcDir(tag);
    },
  };
}

describe("pipeline link (real ZeroMQ PUSH/PULL)", function () {
  this.timeout(30_000);

  for (const transport of ["ipc", "tcp"] as const) {
    it(`${transport}: activations forward and gradients back, matched by step and micro-batch whatever the arrival order`, async () => {
      const { links, close } = await threeStages(transport);
      try {
        const a = Float32Array.from({ length: 6 }, (_, i) => i + 0.5);
        const b = Float32Array.from({ length: 9 }, (_, i) => -i);
        // micro-batch 1 sent before micro-batch 0: each is received by its own key
        await links[0]!.send(MsgType.ACTIVATION, 3, 1, 2, 5, b);
        await links[0]!.send(MsgType.ACTIVATION, 3, 0, 0, 2, a);
        assert.deepEqual(await links[1]!.receive(MsgType.ACTIVATION, 3, 0, 0, 2, 3), a);
        assert.deepEqual(await links[1]!.receive(MsgType.ACTIVATION, 3, 1, 2, 5, 3), b);
        await links[2]!.send(MsgType.ACTIVATION_GRAD, 3, 0, 0, 2, a);
        assert.deepEqual(await links[1]!.receive(MsgType.ACTIVATION_GRAD, 3, 0, 0, 2, 3), a);
        await links[0]!.sendStop(4);
        assert.equal(await links[1]!.receive(MsgType.ACTIVATION, 4, 0, 0, 2, 3), null);
        assert.ok(links[0]!.bytesSent > 0 && links[1]!.bytesReceived > 0);
      } finally {
        close();
      }
    });
  }

  it("a wait past the deadline names the neighbour that sent nothing", async () => {
    const { links, close } = await threeStages("ipc", 300);
    try {
      await assert.rejects(links[1]!.receive(MsgType.ACTIVATION_GRAD, 0, 2, 0, 4, 3), (err: unknown) => {
        assert.ok(err instanceof PsError);
        assert.equal(err.code, ErrorCode.TIMEOUT);
        assert.match(err.message, /worker 1: no ACTIVATION_GRAD of step 0, micro-batch 2 from worker 2 at ipc:\/\/.* within 300 ms/);
        return true;
      });
    } finally {
      close();
    }
  });

  it("a payload of the wrong size for the micro-batch is refused, naming the sender", async () => {
    const { links, close } = await threeStages("ipc");
    try {
      await links[0]!.send(MsgType.ACTIVATION, 0, 0, 0, 2, new Float32Array(5));
      await assert.rejects(links[1]!.receive(MsgType.ACTIVATION, 0, 0, 0, 2, 3), /worker 0 sent ACTIVATION of step 0, micro-batch 0 .* with 5 values; worker 1 expected samples \[0, 2\) x 3/);
    } finally {
      close();
    }
  });

  const bad: [string, (h: ReturnType<typeof makeHeader>) => void, Buffer[] | null, RegExp][] = [
    ["another run's message", (h) => (h.runId = RUN + 1), null, /run id/],
    ["a sender that is not the neighbour on that side", (h) => (h.rank = 2), null, /from rank 2, expected rank 0/],
    ["a message type a stage does not take", (h) => (h.type = MsgType.PUSH), null, /does not accept PUSH/],
    ["a header that disagrees with the payload length", (h) => (h.byteLength = 4), null, /payload of 8 bytes, header says 4/],
    ["two tensor frames", () => undefined, [Buffer.alloc(8), Buffer.alloc(8)], /exactly one tensor frame/],
  ];
  for (const [what, edit, frames, re] of bad) {
    it(`refuses ${what}: the waiting step fails with BAD_MESSAGE`, async () => {
      const { links, eps, close } = await threeStages("ipc");
      const rogue = new Push({ linger: 0 });
      try {
        rogue.connect(eps[1]!);
        const h = makeHeader(MsgType.ACTIVATION, { runId: RUN, rank: 0, clock: 0, version: 0, rangeStart: 0, rangeEnd: 2, dtype: DType.F32, byteLength: 8 });
        edit(h);
        await rogue.send([encodeHeader(h), ...(frames ?? [Buffer.alloc(8)])]);
        await assert.rejects(links[1]!.receive(MsgType.ACTIVATION, 0, 0, 0, 2, 1), (err: unknown) => {
          assert.ok(err instanceof PsError);
          assert.equal(err.code, ErrorCode.BAD_MESSAGE);
          assert.match(err.message, re);
          return true;
        });
        assert.equal(Object.values(links[1]!.errors).reduce((x, y) => x + y, 0), 1);
      } finally {
        rogue.close();
        close();
      }
    });
  }
});
