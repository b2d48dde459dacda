import { strict as assert } from "node:assert";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  TRAIN_OPTIONS,
  buildParser,
  envVarName,
  flagName,
  packageVersion,
  parseTrainArgs,
  resolveTrainConfig,
} from "../../src/cli/options.js";
import { DEFAULTS, type TrainConfig } from "../../src/config/train-config.js";
import { ErrorCode, PsError } from "../../src/util/errors.js";

const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** Asserts a rejection is a one-line BAD_OPTION PsError whose message contains every `parts`. */
function badOption(...parts: (string | RegExp)[]): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof PsError, `expected a PsError, got ${String(err)}`);
    assert.equal(err.code, ErrorCode.BAD_OPTION);
    assert.equal(err.exitCode, 2);
    assert.ok(!err.message.includes("\n"), `message is not one line: ${JSON.stringify(err.message)}`);
    for (const part of parts) {
      if (typeof part === "string") assert.ok(err.message.includes(part), `${JSON.stringify(err.message)} lacks ${part}`);
      else assert.match(err.message, part);
    }
    return true;
  };
}

const parse = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<TrainConfig | undefined> =>
  parseTrainArgs(args, env);

async function parseOk(args: string[], env: NodeJS.ProcessEnv = {}): Promise<TrainConfig> {
  const config = await parse(args, env);
  assert.ok(config !== undefined, "expected a config");
  return config;
}

/** Runs fn with console.log captured; returns what was printed. */
async function captureLog(fn: () => Promise<unknown>): Promise<string> {
  const original = console.log;
  const lines: string[] = [];
  console.log = (...args: unknown[]) => {
    lines.push(args.map(String).join(" "));
  };
  try {
    await fn();
  } finally {
    console.log = original;
  }
  return lines.join("\n");
}

/** A non-default value for every option: [text for flags/env/files, the value it resolves to]. */
const SAMPLES: Record<string, [string, unknown]> = {
  mode: ["ssp", "ssp"],
  staleness: ["5", 5],
  workers: ["4", 4],
  servers: ["2", 2],
  // allreduce would switch the sample's mode to sync; its own tests are below
  comm: ["ps", "ps"],
  allreduceAlgo: ["ring", "ring"],
  allreduceSegmentBytes: ["64KiB", 65536],
  allreduceSmallBytes: ["4096", 4096],
  fusionBytes: ["1MiB", 1048576],
  // hybrid needs --replicas; with the samples below: 2 stages x 2 replicas = the sample's 4 workers
  parallelism: ["hybrid", "hybrid"],
  stages: ["2", 2],
  microbatches: ["4", 4],
  replicas: ["2", 2],
  splitAt: ["2", [2]],
  // the samples' mode is ssp, which --adaptive refuses: its own tests are below
  adaptive: ["0", 0],
  adaptiveEvery: ["5", 5],
  model: ["cnn", "cnn"],
  dataset: ["synthetic", "synthetic"],
  partition: ["dirichlet:0.5", "dirichlet:0.5"],
  trainLimit: ["1000", 1000],
  testLimit: ["200", 200],
  seed: ["42", 42],
  epochs: ["3", 3],
  maxSteps: ["50", 50],
  batchSize: ["32", 32],
  backend: ["wasm", "wasm"],
  transport: ["tcp", "tcp"],
  slow: ["0:2,3:1.5", { 0: 2, 3: 1.5 }],
  out: ["runs/test", "runs/test"],
  targetAccuracy: ["0.97", 0.97],
  evalEvery: ["100", 100],
  logLevel: ["debug", "debug"],
  progress: ["off", "off"],
  timeoutMs: ["5000", 5000],
  heartbeatMs: ["250", 250],
  heartbeatTimeout: ["2000", 2000],
  onWorkerFailure: ["shrink", "shrink"],
  replaceTimeout: ["5000", 5000],
  maxReplacements: ["3", 3],
  maxRestarts: ["7", 7],
  optimizer: ["adam", "adam"],
  lr: ["0.001", 0.001],
  momentum: ["0.5", 0.5],
  beta1: ["0.8", 0.8],
  beta2: ["0.99", 0.99],
  epsilon: ["1e-7", 1e-7],
  weightDecay: ["0.0005", 0.0005],
  lrSchedule: ["step", "step"],
  lrStepSize: ["200", 200],
  lrGamma: ["0.1", 0.1],
  warmupSteps: ["10", 10],
  asyncLrScale: ["staleness", "staleness"],
  // the samples' mode is ssp, which --async-overlap on refuses: its own test is below
  asyncOverlap: ["off", "off"],
  checkpointEvery: ["200", 200],
  checkpointKeep: ["5", 5],
  gradClip: ["10", 10],
  // a non-empty --resume reads that run's config.json instead (test/cli/resume-config.test.ts)
  resume: ["", ""],
};

function sample(key: string): [string, unknown] {
  const s = SAMPLES[key];
  assert.ok(s !== undefined, `no sample value for ${key}`);
  return s;
}

/**
 * Every option at once, as one run: all but those that data parallelism alone takes (the samples
 * run a hybrid pipeline); those are tested one by one and against --parallelism below.
 */
const DATA_PARALLEL_ONLY = new Set<string>(["onWorkerFailure", "checkpointEvery"]);
const TOGETHER = TRAIN_OPTIONS.filter((o) => !DATA_PARALLEL_ONLY.has(o.key));

const EXPECTED: TrainConfig = {
  ...DEFAULTS,
  ...Object.fromEntries(TOGETHER.map((o) => [o.key, sample(o.key)[1]])),
};

describe("cli/options", () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "ps-train-options-"));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function file(name: string, text: string): string {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  }

  describe("option table", () => {
    it("covers every TrainConfig field except totalSteps, with kebab flags and PS_TRAIN_ variables", () => {
      const keys = TRAIN_OPTIONS.map((o) => o.key).sort();
      const expected = Object.keys(DEFAULTS)
        .filter((k) => k !== "totalSteps")
        .sort();
      assert.deepEqual(keys, expected);
      assert.deepEqual(Object.keys(SAMPLES).sort(), expected);
      assert.equal(flagName("batchSize"), "batch-size");
      assert.equal(flagName("lrStepSize"), "lr-step-size");
      assert.equal(flagName("beta1"), "beta1");
      assert.equal(envVarName("batch-size"), "PS_TRAIN_BATCH_SIZE");
      for (const o of TRAIN_OPTIONS) {
        assert.match(o.flag, /^[a-z][a-z0-9-]*$/);
        assert.equal(o.env, envVarName(o.flag));
        assert.ok(o.describe.length > 0 && !o.describe.includes("\n"), `${o.flag} needs a one-line description`);
      }
    });
  });

  describe("defaults", () => {
    it("no flags, no environment: DEFAULTS", async () => {
      assert.deepEqual(await parseOk([]), DEFAULTS);
      assert.deepEqual(resolveTrainConfig({}, {}), DEFAULTS);
    });

    it("does not share the default slow map", () => {
      const a = resolveTrainConfig({}, {});
      assert.notEqual(a.slow, DEFAULTS.slow);
    });

    it("the explicit train command is the same as the default command", async () => {
      assert.deepEqual(await parseOk(["train", "--workers", "2"]), { ...DEFAULTS, workers: 2 });
    });

    it("worker-failure policies and shard checkpoints are for data parallelism only", async () => {
      await assert.rejects(parse(["--parallelism", "model", "--stages", "2", "--on-worker-failure", "shrink"]), /--on-worker-failure: not with --parallelism model/);
      await assert.rejects(parse(["--parallelism", "tensor", "--workers", "2", "--checkpoint-every", "10"]), /--checkpoint-every: not with --parallelism tensor/);
      assert.equal((await parseOk(["--parallelism", "model", "--stages", "2", "--on-worker-failure", "abort"])).onWorkerFailure, "abort");
    });

    it("--parallelism tensor means sync; model parallelism sets workers = stages x replicas", async () => {
      assert.deepEqual(await parseOk(["--parallelism", "tensor", "--workers", "3"]), { ...DEFAULTS, parallelism: "tensor", mode: "sync", workers: 3 });
      assert.deepEqual(await parseOk(["--parallelism", "model", "--stages", "3", "--model", "cnn", "--split-at", "2,4"]), { ...DEFAULTS, parallelism: "model", stages: 3, model: "cnn", splitAt: [2, 4], workers: 3 });
      assert.deepEqual(await parseOk(["--parallelism", "hybrid", "--stages", "2", "--replicas", "2", "--mode", "sync"]), { ...DEFAULTS, parallelism: "hybrid", stages: 2, replicas: 2, mode: "sync", workers: 4 });
      assert.deepEqual(await parseOk([], { PS_TRAIN_PARALLELISM: "model", PS_TRAIN_STAGES: "2", PS_TRAIN_SPLIT_AT: "1" }), { ...DEFAULTS, parallelism: "model", stages: 2, splitAt: [1], workers: 2 });
      assert.deepEqual(await parseOk(["--parallelism", "model", "--stages", "2", "--mode", "sync", "--adaptive", "0.5", "--adaptive-every", "4"]), { ...DEFAULTS, parallelism: "model", stages: 2, mode: "sync", adaptive: 0.5, adaptiveEvery: 4, workers: 2 });
    });

    it("--comm allreduce means sync unless another mode is asked for (which is refused)", async () => {
      assert.deepEqual(await parseOk(["--comm", "allreduce", "--workers", "8"]), { ...DEFAULTS, comm: "allreduce", mode: "sync", workers: 8 });
      assert.deepEqual(await parseOk(["--comm", "allreduce", "--mode", "sync"]), { ...DEFAULTS, comm: "allreduce", mode: "sync" });
      assert.deepEqual(await parseOk([], { PS_TRAIN_COMM: "allreduce", PS_TRAIN_FUSION_BYTES: "16MiB" }), { ...DEFAULTS, comm: "allreduce", mode: "sync", fusionBytes: 16 * 2 ** 20 });
    });
  });

  describe("flags", () => {
    for (const o of TRAIN_OPTIONS) {
      it(`--${o.flag}`, async () => {
        const [text, value] = sample(o.key);
        // the sample --slow names rank 3, so it needs 4 workers; the pipeline options need
        // --parallelism model or hybrid (hybrid also --replicas; workers = stages x replicas)
        const pipeline: Record<string, { args: string[]; config: Partial<TrainConfig> }> = {
          parallelism: { args: ["--replicas", "2"], config: { replicas: 2, workers: 2 } },
          stages: { args: ["--parallelism", "model"], config: { parallelism: "model", workers: 2 } },
          microbatches: { args: ["--parallelism", "model"], config: { parallelism: "model" } },
          replicas: { args: ["--parallelism", "hybrid"], config: { parallelism: "hybrid", workers: 2 } },
          splitAt: { args: ["--parallelism", "model", "--stages", "2"], config: { parallelism: "model", stages: 2, workers: 2 } },
        };
        const extra = o.key === "slow" ? { args: ["--workers", "4"], config: { workers: 4 } } : (pipeline[o.key] ?? { args: [], config: {} });
        const config = await parseOk([`--${o.flag}`, text, ...extra.args]);
        assert.deepEqual(config, { ...DEFAULTS, ...extra.config, [o.key]: value });
      });
    }

    it("all flags together", async () => {
      const args = TOGETHER.flatMap((o) => [`--${o.flag}`, sample(o.key)[0]]);
      assert.deepEqual(await parseOk(args), EXPECTED);
    });

    it("--flag=value and camelCase spellings", async () => {
      const config = await parseOk(["--batch-size=16", "--lrStepSize", "7", "--target-accuracy=0.5"]);
      assert.equal(config.batchSize, 16);
      assert.equal(config.lrStepSize, 7);
      assert.equal(config.targetAccuracy, 0.5);
    });

    it("negative-looking and exponent values reach validation", async () => {
      assert.equal((await parseOk(["--lr", "5e-2"])).lr, 0.05);
      await assert.rejects(parse(["--staleness", "-1"]), badOption("--staleness", "-1"));
    });

    it("a repeated flag: the last one wins", async () => {
      assert.equal((await parseOk(["--workers", "2", "--workers", "3"])).workers, 3);
      assert.equal((await parseOk(["--mode", "sync", "--mode", "ssp"])).mode, "ssp");
    });

    it("--slow may be repeated and accumulates", async () => {
      const config = await parseOk(["--workers", "4", "--slow", "0:2", "--slow", "3:4"]);
      assert.deepEqual(config.slow, { 0: 2, 3: 4 });
    });

    it('--slow "" and --target-accuracy none clear values from a config file', async () => {
      const cfg = file("clear.yaml", "workers: 2\nslow: '1:3'\ntarget-accuracy: 0.9\n");
      assert.deepEqual(await parseOk(["--config", cfg]), { ...DEFAULTS, workers: 2, slow: { 1: 3 }, targetAccuracy: 0.9 });
      const cleared = await parseOk(["--config", cfg, "--slow", "", "--target-accuracy", "none"]);
      assert.deepEqual(cleared, { ...DEFAULTS, workers: 2 });
    });

    it("--slow accepts spaces around entries", async () => {
      assert.deepEqual((await parseOk(["--workers", "3", "--slow", "0:2, 2 : 1.5"])).slow, { 0: 2, 2: 1.5 });
    });
  });

  describe("environment", () => {
    it("every option as a PS_TRAIN_ variable", async () => {
      const env = Object.fromEntries(TOGETHER.map((o) => [o.env, sample(o.key)[0]]));
      assert.deepEqual(await parseOk([], env), EXPECTED);
      assert.deepEqual(resolveTrainConfig({}, env), EXPECTED);
    });

    it("uses the documented names", async () => {
      const config = await parseOk([], { PS_TRAIN_MODE: "sync", PS_TRAIN_BATCH_SIZE: "128", PS_TRAIN_LR_STEP_SIZE: "9" });
      assert.deepEqual(config, { ...DEFAULTS, mode: "sync", batchSize: 128, lrStepSize: 9 });
    });

    it("an empty variable counts as unset; other variables are ignored", async () => {
      assert.deepEqual(await parseOk([], { PS_TRAIN_WORKERS: "", PS_TRAIN_LR: " ", HOME: "/x" }), DEFAULTS);
    });

    it("PS_TRAIN_CONFIG names a config file; --config wins over it", async () => {
      const a = file("env-a.json", JSON.stringify({ workers: 5 }));
      const b = file("env-b.json", JSON.stringify({ workers: 6 }));
      assert.equal((await parseOk([], { PS_TRAIN_CONFIG: a })).workers, 5);
      assert.equal((await parseOk(["--config", b], { PS_TRAIN_CONFIG: a })).workers, 6);
    });
  });

  describe("config files", () => {
    const yamlText = TOGETHER.map((o) => `${o.flag}: ${JSON.stringify(sample(o.key)[0])}`).join("\n") + "\n";

    it("YAML (.yaml and .yml) with kebab-case keys", async () => {
      assert.deepEqual(await parseOk(["--config", file("all.yaml", yamlText)]), EXPECTED);
      assert.deepEqual(await parseOk(["--config", file("all.yml", yamlText)]), EXPECTED);
    });

    it("JSON with camelCase keys and native types", async () => {
      const data = Object.fromEntries(TOGETHER.map((o) => [o.key, sample(o.key)[1]]));
      assert.deepEqual(await parseOk(["--config", file("all.json", JSON.stringify(data))]), EXPECTED);
    });

    it("YAML with native numbers, null and a slow mapping; keys mixed kebab and camel", async () => {
      const text = [
        "mode: sync",
        "batchSize: 16",
        "lr-schedule: cosine",
        "lr: 1e-3",
        "target-accuracy: null",
        "slow:",
        "  1: 2.5",
        "workers: 2",
        "# a comment",
        "",
      ].join("\n");
      const config = await parseOk(["--config", file("native.yaml", text)]);
      assert.deepEqual(config, {
        ...DEFAULTS,
        mode: "sync",
        batchSize: 16,
        lrSchedule: "cosine",
        lr: 0.001,
        targetAccuracy: null,
        slow: { 1: 2.5 },
        workers: 2,
      });
    });

    it("an empty or comment-only YAML file sets nothing", async () => {
      assert.deepEqual(await parseOk(["--config", file("empty.yaml", "# nothing yet\n")]), DEFAULTS);
    });

    it("a run's own config.json (with totalSteps) can be fed back", async () => {
      const saved = { ...EXPECTED, totalSteps: 1234 };
      assert.deepEqual(await parseOk(["--config", file("config.json", JSON.stringify(saved))]), EXPECTED);
    });

    it("precedence: defaults < config file < environment < flags", async () => {
      const cfg = file("prec.yaml", "workers: 2\nlr: 0.1\nseed: 5\nmode: sync\n");
      const env = { PS_TRAIN_WORKERS: "3", PS_TRAIN_LR: "0.2" };
      const config = await parseOk(["--config", cfg, "--workers", "4"], env);
      assert.deepEqual(config, { ...DEFAULTS, workers: 4, lr: 0.2, seed: 5, mode: "sync" });
      // the same through resolveTrainConfig with a yargs-like argv
      assert.deepEqual(resolveTrainConfig({ config: cfg, workers: 4 }, env), config);
    });

    it("--slow is checked against the final worker count", async () => {
      const cfg = file("slow-workers.yaml", "slow: '3:2'\n");
      assert.deepEqual((await parseOk(["--config", cfg, "--workers", "4"])).slow, { 3: 2 });
      await assert.rejects(parse(["--config", cfg]), badOption("--slow", "slow-workers.yaml", "rank 3", "--workers 1"));
    });
  });

  describe("invalid values", () => {
    const cases: [string[], ...string[]][] = [
      [["--mode", "fast"], "--mode", '"fast"', "sync, async, ssp"],
      [["--model", "resnet"], "--model", '"resnet"'],
      [["--optimizer", "rmsprop"], "--optimizer", '"rmsprop"'],
      [["--lr-schedule", "linear"], "--lr-schedule", '"linear"'],
      [["--backend", "tpu"], "--backend", '"tpu"'],
      [["--transport", "udp"], "--transport", '"udp"'],
      [["--comm", "nccl"], "--comm", '"nccl"'],
      [["--allreduce-algo", "tree"], "--allreduce-algo", '"tree"'],
      [["--allreduce-segment-bytes", "3"], "--allreduce-segment-bytes must be a size in bytes >= 4"],
      [["--allreduce-segment-bytes", "6"], "--allreduce-segment-bytes", "multiple of 4", '(got "6")'],
      [["--fusion-bytes", "10XB"], "--fusion-bytes", '"10XB"'],
      [["--comm", "allreduce", "--mode", "async"], "--mode", "--comm allreduce needs --mode sync"],
      [["--on-worker-failure", "retry"], "--on-worker-failure", '"retry"'],
      [["--comm", "allreduce", "--on-worker-failure", "wait"], "--on-worker-failure", "wait needs --comm ps"],
      [["--mode", "sync", "--async-overlap", "on"], "--async-overlap", "on needs --mode async"],
      [["--async-overlap", "yes"], "--async-overlap", '"yes"'],
      [["--heartbeat-ms", "500", "--heartbeat-timeout", "400"], "--heartbeat-timeout", "more than --heartbeat-ms 500", "(got 400)"],
      [["--heartbeat-timeout", "-1"], "--heartbeat-timeout", "-1"],
      [["--replace-timeout", "0"], "--replace-timeout", "(got 0)"],
      [["--max-replacements", "1.5"], "--max-replacements", "1.5"],
      [["--log-level", "loud"], "--log-level", '"loud"'],
      [["--progress", "maybe"], "--progress", '"maybe"'],
      [["--mode", "fast", "--mode", "sync"], "--mode", '"fast"'],
      [["--workers", "0"], "--workers must be an integer >= 1 (got 0)"],
      [["--workers", "1.5"], "--workers", "1.5"],
      [["--workers", "abc"], "--workers", '"abc"'],
      [["--workers", "1e400"], "--workers", "1e400"],
      [["--servers", "0"], "--servers", "(got 0)"],
      [["--staleness", "-1"], "--staleness", "-1"],
      [["--staleness", "0.5"], "--staleness", "0.5"],
      [["--batch-size", "0"], "--batch-size", "(got 0)"],
      [["--epochs", "0"], "--epochs", "(got 0)"],
      [["--epochs", "1.5"], "--epochs", "1.5"],
      [["--max-steps", "-1"], "--max-steps", "-1"],
      [["--train-limit", "-5"], "--train-limit", "-5"],
      [["--test-limit", "x"], "--test-limit", '"x"'],
      [["--seed", "-1"], "--seed", "-1"],
      [["--seed", "4294967296"], "--seed", "4294967296"],
      [["--eval-every", "-1"], "--eval-every", "-1"],
      [["--timeout-ms", "0"], "--timeout-ms", "(got 0)"],
      [["--heartbeat-ms", "0"], "--heartbeat-ms", "(got 0)"],
      [["--lr", "0"], "--lr must be a number > 0 (got 0)"],
      [["--lr", "-0.1"], "--lr", "-0.1"],
      [["--lr", "NaN"], "--lr", '"NaN"'],
      [["--lr", "Infinity"], "--lr", '"Infinity"'],
      [["--lr", "1e999"], "--lr", "1e999"],
      [["--momentum", "1"], "--momentum", "(got 1)"],
      [["--momentum", "-0.1"], "--momentum", "-0.1"],
      [["--beta1", "1"], "--beta1", "(got 1)"],
      [["--beta2", "1.5"], "--beta2", "1.5"],
      [["--epsilon", "0"], "--epsilon", "(got 0)"],
      [["--weight-decay", "-1"], "--weight-decay", "-1"],
      [["--lr-step-size", "0"], "--lr-step-size", "(got 0)"],
      [["--lr-gamma", "0"], "--lr-gamma", "(got 0)"],
      [["--lr-gamma", "2"], "--lr-gamma", "(got 2)"],
      [["--warmup-steps", "-1"], "--warmup-steps", "-1"],
      [["--target-accuracy", "0"], "--target-accuracy", "(got 0)"],
      [["--target-accuracy", "1.5"], "--target-accuracy", "1.5"],
      [["--target-accuracy", "97"], "--target-accuracy", "97"],
      [["--dataset", ""], "--dataset", '""'],
      [["--partition", " "], "--partition", '" "'],
      [["--slow", "1"], "--slow", '"1"', "RANK:FACTOR"],
      [["--slow", "a:2"], "--slow", '"a:2"', "rank"],
      [["--slow", "-1:2"], "--slow", '"-1:2"'],
      [["--slow", "1:x", "--workers", "2"], "--slow", '"1:x"', "factor"],
      [["--slow", "0:0.5"], "--slow", '"0:0.5"', "factor"],
      [["--slow", "0:Infinity"], "--slow", '"0:Infinity"'],
      [["--slow", "1:2,1:3", "--workers", "2"], "--slow", "rank 1", "more than once"],
      [["--slow", "0:2", "--slow", "0:3"], "--slow", "rank 0", "more than once"],
      [["--slow", "2:2", "--workers", "2"], "--slow", "rank 2", "--workers 2", '"2:2"'],
      [["--slow", "1:2"], "--slow", "rank 1", "--workers 1"],
      [["--slow", "1:2,"], "--slow", '"1:2,"'],
      [["--no-workers"], "--workers", "false"],
      [["--parallelism", "pipeline"], "--parallelism", '"pipeline"', "data, model, hybrid"],
      [["--parallelism", "model", "--stages", "4"], "--stages", "--stages 4 exceeds the 3 layer(s) model mlp"],
      [["--parallelism", "model", "--stages", "6", "--model", "cnn"], "--stages 6 exceeds the 5 layer(s) model cnn"],
      [["--parallelism", "model", "--stages", "3", "--model", "cnn", "--split-at", "4,2"], "--split-at must be ascending integers", '"4,2"'],
      [["--parallelism", "model", "--stages", "3", "--model", "cnn", "--split-at", "2,2"], "--split-at", '"2,2"'],
      [["--parallelism", "model", "--stages", "3", "--model", "cnn", "--split-at", "2"], "--split-at must give stages - 1 = 2 split point(s)"],
      [["--parallelism", "model", "--stages", "2", "--model", "cnn", "--split-at", "5"], "split point 5 leaves no layer for the last stage"],
      [["--parallelism", "model", "--stages", "2", "--split-at", "0"], "--split-at", '"0"'],
      [["--parallelism", "hybrid", "--stages", "2"], "--parallelism hybrid needs --replicas"],
      [["--parallelism", "model", "--replicas", "2"], "--replicas needs --parallelism hybrid"],
      [["--stages", "2"], "--stages needs --parallelism model or hybrid"],
      [["--adaptive", "0.5"], "--adaptive needs --parallelism model or hybrid"],
      [["--parallelism", "model", "--stages", "2", "--adaptive", "0.5"], "--adaptive needs --mode sync"],
      [["--parallelism", "model", "--adaptive", "-1"], "--adaptive", "-1"],
      [["--microbatches", "4"], "--microbatches needs --parallelism model or hybrid"],
      [["--parallelism", "model", "--stages", "2", "--comm", "allreduce", "--adaptive", "0.5"], "--adaptive needs --comm ps"],
      [["--parallelism", "model", "--microbatches", "100", "--batch-size", "8"], "--microbatches 100 exceeds --batch-size 8"],
      [["--parallelism", "tensor", "--model", "cnn"], "--parallelism tensor splits dense layers", "got cnn"],
      [["--parallelism", "tensor", "--mode", "async"], "--mode", "--parallelism tensor needs --mode sync"],
      [["--parallelism", "tensor", "--stages", "2"], "--stages needs --parallelism model or hybrid"],
      [["--parallelism", "hybrid", "--stages", "2", "--replicas", "2", "--workers", "3"], "--workers 3 does not match --stages 2 x --replicas 2 = 4"],
    ];
    for (const [args, ...parts] of cases) {
      it(args.join(" "), async () => {
        await assert.rejects(parse(args), badOption(...parts));
      });
    }
  });

  describe("invalid command lines", () => {
    it("an unknown flag", async () => {
      await assert.rejects(parse(["--nope"]), badOption("unknown option --nope"));
      await assert.rejects(parse(["--batch-sise", "3"]), badOption("unknown option --batch-sise"));
    });

    it("a stray positional argument", async () => {
      await assert.rejects(parse(["--workers", "2", "extra"]), badOption('unexpected argument "extra"'));
    });

    it("a flag without its value", async () => {
      await assert.rejects(parse(["--workers"]), badOption("--workers needs a value"));
      await assert.rejects(parse(["--config"]), badOption("--config needs a value"));
    });
  });

  describe("invalid environment", () => {
    it("a variable that does not parse names the variable and the flag", async () => {
      await assert.rejects(parse([], { PS_TRAIN_WORKERS: "abc" }), badOption("PS_TRAIN_WORKERS", "--workers", '"abc"'));
      await assert.rejects(parse([], { PS_TRAIN_MODE: "fast" }), badOption("PS_TRAIN_MODE", "--mode", '"fast"'));
      await assert.rejects(parse([], { PS_TRAIN_LR: "Infinity" }), badOption("PS_TRAIN_LR", "--lr"));
      await assert.rejects(parse([], { PS_TRAIN_SLOW: "0-2" }), badOption("PS_TRAIN_SLOW", "--slow", '"0-2"'));
    });

    it("a bad variable is rejected even when a flag overrides it", async () => {
      await assert.rejects(parse(["--workers", "2"], { PS_TRAIN_WORKERS: "0" }), badOption("PS_TRAIN_WORKERS"));
    });

    it("PS_TRAIN_CONFIG naming a missing file", async () => {
      const missing = join(dir, "nope.yaml");
      await assert.rejects(parse([], { PS_TRAIN_CONFIG: missing }), badOption("PS_TRAIN_CONFIG", missing));
    });
  });

  describe("invalid config files", () => {
    it("an unknown key names the key and the file", async () => {
      const cfg = file("unknown.yaml", "workers: 2\nwrkers: 3\n");
      await assert.rejects(parse(["--config", cfg]), badOption('"wrkers"', cfg, 'did you mean "workers"'));
    });

    it("a key that is not an option at all", async () => {
      const cfg = file("unknown.json", JSON.stringify({ learningRate: 0.1 }));
      await assert.rejects(parse(["--config", cfg]), badOption('"learningRate"', cfg));
    });

    it("the same option under both spellings", async () => {
      const cfg = file("twice.yaml", "batch-size: 2\nbatchSize: 3\n");
      await assert.rejects(parse(["--config", cfg]), badOption("--batch-size", cfg));
    });

    it("a bad value names the flag, the key and the file", async () => {
      const cfg = file("bad-value.yaml", "workers: 0\n");
      await assert.rejects(parse(["--config", cfg]), badOption("--workers", '"workers"', cfg, "(got 0)"));
    });

    it("a non-finite number", async () => {
      await assert.rejects(parse(["--config", file("inf.yaml", "lr: .inf\n")]), badOption("--lr", "Infinity"));
      await assert.rejects(parse(["--config", file("nan.yaml", "momentum: .nan\n")]), badOption("--momentum", "NaN"));
    });

    it("wrong value types", async () => {
      await assert.rejects(parse(["--config", file("bool.yaml", "workers: true\n")]), badOption("--workers", "true"));
      await assert.rejects(parse(["--config", file("num.yaml", "dataset: 5\n")]), badOption("--dataset", "5"));
      await assert.rejects(parse(["--config", file("list.yaml", "slow: [1, 2]\n")]), badOption("--slow", "[1,2]"));
    });

    it("a missing file", async () => {
      const missing = join(dir, "missing.json");
      await assert.rejects(parse(["--config", missing]), badOption("--config", missing, "no such file"));
    });

    it("a directory", async () => {
      const sub = join(dir, "a-dir.yaml");
      mkdirSync(sub);
      await assert.rejects(parse(["--config", sub]), badOption("--config", sub));
    });

    it("unparsable YAML names the file and the line", async () => {
      const cfg = file("broken.yaml", "workers: 2\nlr: [\n");
      await assert.rejects(parse(["--config", cfg]), badOption("--config", cfg, "line"));
      const dup = file("dup.yaml", "workers: 2\nworkers: 3\n");
      await assert.rejects(parse(["--config", dup]), badOption("--config", dup, "duplicated"));
    });

    it("unparsable JSON names the file", async () => {
      const cfg = file("broken.json", '{"workers": 2,}');
      await assert.rejects(parse(["--config", cfg]), badOption("--config", cfg, "cannot parse"));
    });

    it("a file that is not a mapping", async () => {
      const cfg = file("list.json", "[1, 2]");
      await assert.rejects(parse(["--config", cfg]), badOption("--config", cfg, "mapping"));
      const multi = file("multi.yaml", "workers: 2\n---\nworkers: 3\n");
      await assert.rejects(parse(["--config", multi]), badOption("--config", multi, "one YAML document"));
    });

    it("an unsupported extension", async () => {
      const cfg = file("config.toml", "workers = 2\n");
      await assert.rejects(parse(["--config", cfg]), badOption("--config", ".json, .yaml or .yml", cfg));
    });

    it("--config given twice", async () => {
      const a = file("twice-a.json", "{}");
      await assert.rejects(parse(["--config", a, "--config", a]), badOption("--config", "only once"));
    });

    it("a config file cannot name another config file", async () => {
      const cfg = file("nested.yaml", "config: other.yaml\n");
      await assert.rejects(parse(["--config", cfg]), badOption('"config"', cfg));
    });
  });

  describe("help and version", () => {
    it("--help mentions every flag, the config file and the environment", async () => {
      const help = await buildParser([]).getHelp();
      for (const o of TRAIN_OPTIONS) assert.ok(help.includes(`--${o.flag} `), `--help lacks --${o.flag}`);
      for (const group of ["Training:", "Parallelism:", "Data:", "Optimizer:", "Run:"]) assert.ok(help.includes(group));
      assert.ok(help.includes("--config"));
      assert.ok(help.includes("PS_TRAIN_"));
      assert.ok(help.includes("per worker") || help.includes("PER WORKER"));
    });

    it("--help prints help and does not train", async () => {
      let trained = false;
      const out = await captureLog(() =>
        buildParser(["--help"], {
          env: {},
          train: () => {
            trained = true;
          },
        }).parseAsync(),
      );
      assert.equal(trained, false);
      for (const o of TRAIN_OPTIONS) assert.ok(out.includes(`--${o.flag}`), `--help lacks --${o.flag}`);
    });

    it("--version prints the package version", async () => {
      const pkg = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string };
      assert.equal(packageVersion(), pkg.version);
      let result: TrainConfig | undefined = DEFAULTS;
      const out = await captureLog(async () => {
        result = await parse(["--version"]);
      });
      assert.equal(out.trim(), pkg.version);
      assert.equal(result, undefined);
    });
  });

  describe("buildParser", () => {
    it("passes the resolved config to the train hook", async () => {
      let got: TrainConfig | undefined;
      await buildParser(["--workers", "3"], {
        env: { PS_TRAIN_SEED: "9" },
        train: (c) => {
          got = c;
        },
      }).parseAsync();
      assert.deepEqual(got, { ...DEFAULTS, workers: 3, seed: 9 });
    });

    it("more commands can be added", async () => {
      let ran = "";
      await buildParser(["bench", "--size", "3"], { env: {}, train: () => {
          ran = "train";
        } })
        .command(
          "bench",
          "benchmark",
          (y) => y.option("size", { type: "number" }),
          (argv) => {
            ran = `bench ${argv.size}`;
          },
        )
        .parseAsync();
      assert.equal(ran, "bench 3");
    });

    it("other commands stay strict", async () => {
      const parser = buildParser(["bench", "--workers", "3"], { env: {} }).command("bench", "benchmark", {}, () => {});
      // yargs may throw synchronously from parseAsync() for a sync handler: wrap it
      await assert.rejects(async () => parser.parseAsync(), badOption("unknown option --workers"));
    });

    it("an error from a command handler passes through unchanged", async () => {
      const boom = new Error("boom");
      await assert.rejects(
        buildParser([], {
          env: {},
          train: () => {
            throw boom;
          },
        }).parseAsync(),
        (err: unknown) => err === boom,
      );
    });
  });

  describe("docs/configuration.md", () => {
    it("documents every flag and environment variable", () => {
      const doc = readFileSync(join(REPO_ROOT, "docs", "configuration.md"), "utf8");
      for (const o of TRAIN_OPTIONS) {
        assert.ok(doc.includes(`\`--${o.flag}\``), `docs lack --${o.flag}`);
        assert.ok(doc.includes(`\`${o.env}\``), `docs lack ${o.env}`);
      }
      assert.ok(doc.includes("`--config`") && doc.includes("`PS_TRAIN_CONFIG`"));
    });

    it("its example config files are valid", async () => {
      const doc = readFileSync(join(REPO_ROOT, "docs", "configuration.md"), "utf8");
      const blocks = [...doc.matchAll(/```(yaml|json)\n([\s\S]*?)```/g)];
      assert.deepEqual(
        blocks.map((b) => b[1]),
        ["yaml", "json"],
      );
      for (const [, lang, text] of blocks) {
        const config = await parseOk(["--config", file(`example.${lang}`, text ?? "")]);
        assert.notDeepEqual(config, DEFAULTS);
      }
    });
  });
});
