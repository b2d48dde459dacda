import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { haveRedisServer, TestRedis } from "../helpers/redis.js";
import { tempDir } from "../helpers/run.js";

const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));
const PASSWORD = "s3cret-for-this-test";

/** The variables this test controls, removed from what the CLI inherits. */
const CLEAN_ENV: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !["REDIS_PASSWORD", "PS_TRAIN_REDIS_PASSWORD", "PS_TRAIN_REDIS_PASSWORD_FILE", "PS_TRAIN_REDIS_TLS_CA", "PS_TRAIN_REDIS"].includes(k)),
);

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...CLEAN_ENV, ...env }, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function oneLine(stderr: string): string {
  const lines = stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line on stderr, got: ${stderr}`);
  return lines[0]!;
}

/** A CA and a server certificate for 127.0.0.1 it signed, made with the openssl command. */
function makeCertificates(dir: string): { ca: string; cert: string; key: string } | null {
  const run = (args: string[]) => spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
  if (run(["version"]).status !== 0) return null;
  const steps = [
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ps-train test CA"],
    ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
    ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf"],
  ];
  writeFileSync(join(dir, "san.cnf"), "subjectAltName=IP:127.0.0.1\n");
  for (const s of steps) {
    const r = run(s);
    if (r.status !== 0) throw new Error(`openssl ${s[0]} failed: ${r.stderr}`);
  }
  return { ca: join(dir, "ca.pem"), cert: join(dir, "server.pem"), key: join(dir, "server.key") };
}

describe("Redis password and TLS (cluster commands)", function () {
  this.timeout(120_000);
  before(function () {
    if (!haveRedisServer()) this.skip();
  });

  describe("a password-protected redis-server (requirepass)", () => {
    const redis = new TestRedis();
    const dir = tempDir();
    const passwordFile = join(dir, "redis-password");
    writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
    before(() => redis.start(undefined, { password: PASSWORD }));
    after(() => redis.destroy());
    const url = () => `redis://127.0.0.1:${redis.port}`;

    it("works with --redis-password-file", () => {
      const r = cli(["jobs", "--redis", url(), "--redis-password-file", passwordFile, "--connect-timeout-ms", "20000"]);
      assert.equal(r.code, 0, r.stderr);
    });

    it("works with PS_TRAIN_REDIS_PASSWORD", () => {
      const r = cli(["jobs", "--redis", url(), "--connect-timeout-ms", "20000"], { PS_TRAIN_REDIS_PASSWORD: PASSWORD });
      assert.equal(r.code, 0, r.stderr);
    });

    it("without the password: one line that says how to give it, exit 1", () => {
      const r = cli(["jobs", "--redis", url(), "--connect-timeout-ms", "20000"]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(oneLine(r.stderr), /PS_ERR_REDIS: Redis at redis:\/\/127\.0\.0\.1:\d+ refused authentication .*--redis-password-file/);
    });

    it("with a wrong password: one line, exit 1, and the password is not printed", () => {
      const wrong = join(dir, "wrong");
      writeFileSync(wrong, "not-the-password\n");
      const r = cli(["jobs", "--redis", url(), "--redis-password-file", wrong, "--connect-timeout-ms", "20000"]);
      assert.equal(r.code, 1, r.stderr);
      const line = oneLine(r.stderr);
      assert.match(line, /refused authentication .*the password given was refused/);
      assert.ok(!line.includes("not-the-password"));
    });

    it("a password file that cannot be read: one line, exit 2", () => {
      const r = cli(["jobs", "--redis", url(), "--redis-password-file", join(dir, "missing")]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(oneLine(r.stderr), /PS_ERR_BAD_OPTION: --redis-password-file: cannot read .*missing \(ENOENT\)/);
    });
  });

  describe("a TLS-only redis-server", () => {
    const redis = new TestRedis();
    const dir = tempDir();
    let certs: ReturnType<typeof makeCertificates> = null;
    before(async function () {
      certs = makeCertificates(dir);
      if (!certs) this.skip();
      await redis.start(undefined, { tls: certs });
    });
    after(() => redis.destroy());
    const url = () => `rediss://127.0.0.1:${redis.port}`;

    it("works over rediss:// with --redis-tls-ca", () => {
      const r = cli(["jobs", "--redis", url(), "--redis-tls-ca", certs!.ca, "--connect-timeout-ms", "20000"]);
      assert.equal(r.code, 0, r.stderr);
    });

    it("refuses a server certificate it cannot verify (no --redis-tls-ca): one line, exit 1", () => {
      const r = cli(["jobs", "--redis", url(), "--connect-timeout-ms", "3000"]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(oneLine(r.stderr), /PS_ERR_REDIS: .*rediss:\/\/127\.0\.0\.1/);
    });

    it("--redis-tls-ca with a plain redis:// URL: one line, exit 2", () => {
      const r = cli(["jobs", "--redis", `redis://127.0.0.1:${redis.port}`, "--redis-tls-ca", certs!.ca]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(oneLine(r.stderr), /--redis-tls-ca needs a rediss:\/\/ URL/);
    });
  });
});
