import { strict as assert } from "node:assert";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
/** The only files that may create ZeroMQ sockets or contexts: the secured factory and the ZAP handler. */
const FACTORY = new Set(["src/transport/sockets.ts", "src/transport/zap-handler.ts"]);
const SOCKET_CLASSES = "Router|Dealer|Push|Pull|Pair|Publisher|Subscriber|Request|Reply|XPublisher|XSubscriber|Stream|Server|Client|Radio|Dish|Gather|Scatter|Datagram|Channel|Peer|Context|Proxy";

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []));
}

describe("every ZeroMQ socket comes from the secured factory", () => {
  const files = [...sources(join(ROOT, "src")), ...sources(join(ROOT, "scripts"))].map((f) => relative(ROOT, f).split("\\").join("/"));

  it("finds the sources it checks", () => {
    assert.ok(files.includes("src/transport/sockets.ts"), `sources under ${ROOT}`);
    assert.ok(files.length > 50);
  });

  it("no file outside src/transport/sockets.ts constructs a socket or context or imports a zeromq value that could make one", () => {
    const construct = new RegExp(`new\\s+(?:zmq\\.|zeromq\\.)?(?:${SOCKET_CLASSES})\\s*\\(`);
    const valueImport = /^import\s+(?!type\b)[^;]*from\s+["']zeromq(?:\/[^"']*)?["']/m;
    const offenders: string[] = [];
    for (const f of files) {
      if (FACTORY.has(f)) continue;
      const text = readFileSync(join(ROOT, f), "utf8");
      if (construct.test(text)) offenders.push(`${f}: constructs a socket`);
      // `import type { Router } from "zeromq"` is fine; any value import could build a socket.
      for (const m of text.matchAll(new RegExp(valueImport, "gm"))) {
        const names = /^import\s*\{([^}]*)\}/.exec(m[0])?.[1]?.split(",").map((n) => n.trim()).filter(Boolean) ?? ["*"];
        const harmless = names.every((n) => n.startsWith("type ") || n === "curveKeyPair");
        if (!harmless) offenders.push(`${f}: ${m[0].split("\n")[0]}`);
      }
    }
    assert.deepEqual(offenders, []);
  });

  it("the check catches a socket made elsewhere (it can fail)", () => {
    const construct = new RegExp(`new\\s+(?:zmq\\.|zeromq\\.)?(?:${SOCKET_CLASSES})\\s*\\(`);
    assert.ok(construct.test('const s = new Dealer({ linger: 0 });'));
    assert.ok(construct.test("const c = new zmq.Context({ ioThreads: 2 });"));
    assert.ok(!construct.test("const r = newBoundRouter(\"x\", {});"));
  });
});
