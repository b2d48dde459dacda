import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { curveKeyPair } from "zeromq";
import { tempDir } from "../helpers/run.js";

const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
const FILES = ["allowlist", "coordinator.public", "coordinator.secret", "server.public", "server.secret", "worker.public", "worker.secret"];

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const base = { ...process.env };
  delete base["PS_TRAIN_CURVE_KEYS"];
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...base, ...env }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function oneLine(stderr: string): string {
  const lines = stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line on stderr, got: ${stderr}`);
  return lines[0]!;
}

const TRAIN = ["--dataset", "synthetic", "--model", "logreg", "--backend", "cpu", "--epochs", "1", "--lr", "0.3", "--log-level", "warn", "--progress", "off"];

function generate(dir: string): void {
  const r = cli(["keys", "generate", "--out", dir]);
  assert.equal(r.code, 0, r.stderr);
}

/** Every log line of the run's role processes. */
function roleLogs(out: string): string {
  const dir = join(out, "logs");
  return readdirSync(dir)
    .map((f) => readFileSync(join(dir, f), "utf8"))
    .join("\n");
}

describe("ps-train keys and --curve-keys (real processes)", function () {
  this.timeout(180_000);

  it("keys generate writes a key pair per role and the allowlist, secret keys mode 0600, and refuses to overwrite without --force", () => {
    const dir = join(tempDir(), "keys");
    generate(dir);
    assert.deepEqual(readdirSync(dir).sort(), FILES);
    for (const f of FILES) {
      const mode = statSync(join(dir, f)).mode & 0o777;
      if (f.endsWith(".secret")) assert.equal(mode, 0o600, `${f} mode ${mode.toString(8)}`);
      else assert.equal(mode & 0o077 & ~0o044, 0, `${f} is not writable by others (mode ${mode.toString(8)})`);
    }
    for (const f of FILES.filter((n) => n.endsWith(".public") || n.endsWith(".secret"))) assert.match(readFileSync(join(dir, f), "utf8"), /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}\n$/, `${f} is one Z85 key`);
    const allow = readFileSync(join(dir, "allowlist"), "utf8");
    for (const role of ["coordinator", "server", "worker"]) assert.ok(allow.includes(`${readFileSync(join(dir, `${role}.public`), "utf8").trim()} ${role}`), `allowlist lists the ${role} key`);
    const secret = readFileSync(join(dir, "worker.secret"), "utf8");
    const r = cli(["keys", "generate", "--out", dir]);
    assert.equal(r.code, 2);
    assert.match(oneLine(r.stderr), /PS_ERR_BAD_OPTION: keys generate: .* already holds .*--force/);
    assert.ok(!r.stdout.includes(secret.trim()) && !r.stderr.includes(secret.trim()));
    assert.equal(readFileSync(join(dir, "worker.secret"), "utf8"), secret, "the old keys are untouched");
    const f = cli(["keys", "generate", "--out", dir, "--force"]);
    assert.equal(f.code, 0, f.stderr);
    assert.notEqual(readFileSync(join(dir, "worker.secret"), "utf8"), secret, "--force replaced them");
    assert.equal(statSync(join(dir, "worker.secret")).mode & 0o777, 0o600);
    assert.ok(!f.stdout.includes(readFileSync(join(dir, "worker.secret"), "utf8").trim()), "a secret key is never printed");
  });

  it("a parameter-server run over ipc with CURVE completes, every role on CURVE, the key folder recorded by path only", () => {
    const keys = join(tempDir(), "keys");
    generate(keys);
    const out = join(tempDir(), "run");
    const r = cli([...TRAIN, "--mode", "sync", "--workers", "2", "--servers", "2", "--curve-keys", keys, "--out", out, "--log-level", "info"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /test accuracy/);
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as { cluster: { security: string }; transport: string };
    assert.equal(config.cluster.security, "curve");
    // the default transport (shm) would put the tensors in files, outside CurveZMQ: ipc instead
    assert.equal(config.transport, "ipc");
    const logs = roleLogs(out);
    assert.equal((logs.match(/"msg":"CURVE on"/g) ?? []).length, 4, "two shards and two workers turned CURVE on");
    // Each shard's ZAP handler let in its two workers and the coordinator, and refused nothing.
    for (const k of [0, 1]) {
      const line = readFileSync(join(out, "logs", `server-${k}.log`), "utf8").split("\n").find((l) => l.includes('"msg":"finished"'));
      const sec = (JSON.parse(line ?? "{}") as { security?: { zapAllowed: number; zapDenied: number; handshakeFailed: number } }).security;
      assert.ok(sec && sec.zapAllowed >= 3 && sec.zapDenied === 0 && sec.handshakeFailed === 0, `server ${k}: ${line}`);
    }
    const everything = [readFileSync(join(out, "config.json"), "utf8"), readFileSync(join(out, "summary.json"), "utf8"), logs, r.stdout, r.stderr].join("\n");
    for (const role of ["coordinator", "server", "worker"]) {
      const secret = readFileSync(join(keys, `${role}.secret`), "utf8").trim();
      assert.ok(!everything.includes(secret), `the ${role} secret key appears nowhere in the run directory or output`);
    }
  });

  it("an allreduce run over tcp with CURVE (PS_TRAIN_CURVE_KEYS) completes", () => {
    const keys = join(tempDir(), "keys");
    generate(keys);
    const out = join(tempDir(), "run");
    const r = cli([...TRAIN, "--comm", "allreduce", "--workers", "3", "--transport", "tcp", "--out", out], { PS_TRAIN_CURVE_KEYS: keys });
    assert.equal(r.code, 0, r.stderr);
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as { cluster: { security: string } };
    assert.equal(config.cluster.security, "curve");
    assert.equal((roleLogs(out).match(/"msg":"CURVE on"/g) ?? []).length, 3);
  });

  it("experiment --curve-keys runs every run of the grid with CURVE; with --redis it is refused (the agents hold the keys)", () => {
    const keys = join(tempDir(), "keys");
    generate(keys);
    const out = join(tempDir(), "exp");
    const r = cli(["experiment", "--grid", "workers=1,2", ...TRAIN, "--max-steps", "10", "--curve-keys", keys, "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    const runs = readdirSync(join(out, "runs"));
    assert.equal(runs.length, 2);
    for (const run of runs) assert.equal((JSON.parse(readFileSync(join(out, "runs", run, "config.json"), "utf8")) as { cluster: { security: string } }).cluster.security, "curve", run);
    const c = cli(["experiment", "--grid", "workers=1", ...TRAIN, "--curve-keys", keys, "--redis", "redis://127.0.0.1:1", "--out", join(tempDir(), "exp")]);
    assert.equal(c.code, 2, c.stderr);
    assert.match(oneLine(c.stderr), /--curve-keys: cluster jobs use the agents' keys/);
  });

  it("a run whose allowlist lacks the workers' key fails within its deadline, naming who is missing", () => {
    const keys = join(tempDir(), "keys");
    generate(keys);
    const allow = readFileSync(join(keys, "allowlist"), "utf8").split("\n").filter((l) => !l.endsWith(" worker"));
    writeFileSync(join(keys, "allowlist"), `${allow.join("\n")}\n`);
    const out = join(tempDir(), "run");
    const r = cli([...TRAIN, "--workers", "1", "--servers", "1", "--timeout-ms", "4000", "--curve-keys", keys, "--out", out]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr.trim().split("\n").pop()!, /no HELLO within 4000 ms from worker 0 \(CURVE refused connections here: \d+ refused by the allowlist/);
    assert.match(r.stderr, /"msg":"CURVE client denied"/, "the coordinator logs the denial");
  });

  const dir = tempDir();
  const good = join(dir, "good");
  generate(good);
  const missingSecret = join(dir, "missing-secret");
  mkdirSync(missingSecret);
  for (const f of FILES.filter((n) => n !== "worker.secret")) writeFileSync(join(missingSecret, f), readFileSync(join(good, f)), { mode: 0o600 });
  const open = join(dir, "open");
  mkdirSync(open);
  for (const f of FILES) writeFileSync(join(open, f), readFileSync(join(good, f)), { mode: 0o600 });
  chmodSync(join(open, "server.secret"), 0o644);
  const mismatched = join(dir, "mismatched");
  mkdirSync(mismatched);
  for (const f of FILES) writeFileSync(join(mismatched, f), readFileSync(join(good, f)), { mode: 0o600 });
  writeFileSync(join(mismatched, "coordinator.secret"), `${curveKeyPair().secretKey}\n`, { mode: 0o600 });
  const garbage = join(dir, "garbage");
  mkdirSync(garbage);
  for (const f of FILES) writeFileSync(join(garbage, f), readFileSync(join(good, f)), { mode: 0o600 });
  writeFileSync(join(garbage, "allowlist"), "not a key\n");
  const noRole = join(dir, "no-role");
  mkdirSync(noRole);
  for (const f of FILES) writeFileSync(join(noRole, f), readFileSync(join(good, f)), { mode: 0o600 });
  writeFileSync(join(noRole, "allowlist"), `${readFileSync(join(good, "worker.public"), "utf8").trim()} gpu-box-7\n`);

  const cases: [string, string, RegExp][] = [
    ["a folder that does not exist", join(dir, "nope"), /--curve-keys must be a folder made by ps-train keys generate .*nope/],
    ["a file instead of a folder", join(good, "allowlist"), /not a folder/],
    ["a missing secret key", missingSecret, /cannot read the worker secret key .*worker\.secret \(ENOENT\)/],
    ["a secret key others can read", open, /server\.secret is open to other users \(mode 0644\); chmod 600/],
    ["a secret key that is not the public key's pair", mismatched, /coordinator\.secret and .*coordinator\.public are not one key pair/],
    ["an allowlist line that is not a key", garbage, /allowlist line 1: not a 40-character Z85 public key/],
    ["an allowlist key without a role", noRole, /allowlist line 1: after the key comes the role it may act as, coordinator, server, worker \(got "gpu-box-7"\)/],
  ];
  for (const [name, keyDir, pattern] of cases) {
    it(`--curve-keys with ${name}: one line, exit 2, nothing started`, () => {
      const out = join(tempDir(), "run");
      const r = cli([...TRAIN, "--curve-keys", keyDir, "--out", out]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(oneLine(r.stderr), pattern);
      assert.match(r.stderr, /^ps-train: PS_ERR_BAD_OPTION: /);
      assert.ok(!existsSync(out), "no run directory");
    });
  }
});
