import { strict as assert } from "node:assert";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { resolveTrainConfig } from "../../src/cli/options.js";
import { DEFAULTS } from "../../src/config/train-config.js";
import { tempDir } from "../helpers/run.js";

describe("--resume options", () => {
  const dir = join(tempDir(), "run");
  mkdirSync(dir);
  const stored = { ...DEFAULTS, mode: "sync", workers: 2, servers: 2, dataset: "synthetic", model: "logreg", lr: 0.01, checkpointEvery: 50, out: dir, cluster: { servers: [] }, totalSteps: 600 };
  writeFileSync(join(dir, "config.json"), JSON.stringify(stored));

  it("takes the run's own options, and the ones that do not change what it computes from the command line", () => {
    const c = resolveTrainConfig({ resume: dir, "log-level": "debug", "timeout-ms": "9000", workers: "2" }, {});
    assert.equal(c.resume, dir);
    assert.equal(c.out, dir);
    assert.equal(c.workers, 2);
    assert.equal(c.mode, "sync");
    assert.equal(c.lr, 0.01);
    assert.equal(c.logLevel, "debug");
    assert.equal(c.timeoutMs, 9000);
  });

  it("refuses any other option set to another value, in one line naming it", () => {
    assert.throws(() => resolveTrainConfig({ resume: dir, lr: "0.1" }, {}), (e: Error) => /^--lr: --resume continues the run with its own options/.test(e.message) && !e.message.includes("\n"));
    assert.throws(() => resolveTrainConfig({ resume: dir }, { PS_TRAIN_MODE: "async" }), /--mode \(set by PS_TRAIN_MODE\): --resume/);
    assert.throws(() => resolveTrainConfig({ resume: dir, out: "elsewhere" }, {}), /writes to its own run directory/);
    assert.throws(() => resolveTrainConfig({ resume: join(dir, "nope") }, {}), /no config\.json there/);
  });
});
