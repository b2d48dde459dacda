import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { shmDir } from "../../src/transport/shm.js";
import { fileURLToPath } from "node:url";
import { tempDir } from "../helpers/run.js";

const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, pid: r.pid };
}

describe("ps-train command line", function () {
  this.timeout(120_000);

  it("trains end to end through the binary and writes the run directory", () => {
    const out = join(tempDir(), "run");
    const r = cli(["--mode", "async", "--workers", "2", "--servers", "2", "--dataset", "synthetic", "--model", "logreg", "--epochs", "2", "--backend", "cpu", "--lr", "0.3", "--out", out, "--target-accuracy", "0.99", "--log-level", "warn"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /test accuracy/);
    for (const f of ["config.json", "metrics.jsonl", "summary.json", "model/model.json", "model/weights.bin"]) assert.ok(existsSync(join(out, f)), f);
    const s = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as Record<string, unknown>;
    for (const k of ["mode", "workers", "servers", "backend", "epochs", "steps", "testAccuracy", "testLoss", "wallSeconds", "trainSeconds", "samplesPerSecond", "bytesSent", "bytesReceived", "staleness", "targetAccuracy", "timeToTargetSeconds"])
      assert.ok(k in s, `summary.json has ${k}`);
    assert.equal(s["backend"], "cpu");
    // the synthetic task's features are all non-zero: the dense kernels leave every batch to tfjs
    assert.equal(s["kernels"], "simd-dense");
    for (const w of s["workerStats"] as { steps: number; denseBatches: { simd: number; tfjs: number } }[]) {
      assert.deepEqual(w.denseBatches, { simd: 0, tfjs: w.steps });
    }
    const c = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
    assert.equal(c["mode"], "async");
    assert.equal(c["kernels"], "simd-dense");
    assert.ok(c["cluster"], "config.json records the cluster map");
  });

  it("trains the MNIST mlp in the SIMD dense kernels, and through tfjs with PS_TRAIN_DENSE_KERNELS=tfjs", () => {
    for (const kernels of ["simd-dense", "tfjs"] as const) {
      const out = join(tempDir(), `run-${kernels}`);
      const args = ["--mode", "sync", "--workers", "2", "--model", "mlp", "--train-limit", "1280", "--test-limit", "500", "--epochs", "1", "--out", out, "--log-level", "warn"];
      const r = cli(args, kernels === "tfjs" ? { PS_TRAIN_DENSE_KERNELS: "tfjs" } : {});
      assert.equal(r.code, 0, r.stderr);
      // the default transport on one machine; its shared-memory files and ipc sockets are gone
      assert.equal((JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as { transport: string }).transport, "shm");
      const left = [dirname(shmDir("x")), tmpdir()].flatMap((d) => readdirSync(d).filter((f) => f.startsWith(`ps-train-${r.pid}-`)));
      assert.deepEqual(left, [], "the run's folders are removed");
      const s = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as Record<string, unknown>;
      assert.equal(s["kernels"], kernels);
      assert.ok((s["testAccuracy"] as number) > 0.6, `test accuracy ${String(s["testAccuracy"])} after 10 steps`);
      for (const w of s["workerStats"] as { steps: number; denseBatches?: { simd: number; tfjs: number } }[]) {
        if (kernels === "tfjs") assert.equal(w.denseBatches, undefined);
        else assert.deepEqual(w.denseBatches, { simd: w.steps, tfjs: 0 }, "MNIST pixels are mostly 0");
      }
    }
  });

  const dir = tempDir();
  const corrupt = join(dir, "corrupt");
  mkdirSync(corrupt);
  for (const f of ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]) writeFileSync(join(corrupt, f), "not an idx file");
  const readOnly = join(dir, "ro");
  mkdirSync(readOnly);
  chmodSync(readOnly, 0o500);
  const isRoot = process.getuid?.() === 0;

  const cases: [string, string[], RegExp][] = [
    ["an unknown mode", ["--mode", "bogus"], /--mode/],
    ["workers < 1", ["--workers", "0"], /--workers/],
    ["servers < 1", ["--servers", "0"], /--servers/],
    ["staleness < 0", ["--staleness", "-1"], /--staleness/],
    ["an unknown flag", ["--wrokers", "2"], /wrokers/],
    ["a missing dataset folder", ["--dataset", join(dir, "nope")], /nope/],
    ["a corrupt IDX file", ["--dataset", corrupt], /train-images-idx3-ubyte|bad magic|corrupt/],
    ["a model that does not fit the data", ["--dataset", "synthetic", "--model", "cnn"], /cnn/],
    ["a bad partition", ["--partition", "shards:0"], /--partition/],
    ["an --out that is a file", ["--out", CLI], /--out/],
  ];
  if (!isRoot) cases.push(["an unwritable --out", ["--out", join(readOnly, "run")], /--out/]);
  for (const [name, args, pattern] of cases) {
    it(`rejects ${name}: one line, exit 2, nothing started or written`, () => {
      const out = join(tempDir(), "run");
      const full = args.includes("--out") ? args : [...args, "--out", out];
      const r = cli(full);
      assert.equal(r.code, 2, `exit code (stderr: ${r.stderr})`);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, `one line: ${r.stderr}`);
      assert.match(lines[0]!, pattern);
      assert.ok(!existsSync(out), "no run directory");
    });
  }

  it("reads options from PS_TRAIN_* and --config", () => {
    const cfgFile = join(dir, "cfg.yaml");
    writeFileSync(cfgFile, "mode: sync\nworkers: 0\n");
    const r = cli(["--config", cfgFile]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /workers/);
    const r2 = cli(["--help"], {});
    assert.equal(r2.code, 0);
    assert.match(r2.stdout, /--staleness/);
  });
});
