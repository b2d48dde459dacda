/**
 * Training-step time of the zoo's mlp (784-300-100-10) and cnn (LeNet-5, 28x28x1) on one
 * process: ps-train's FlatModel.gradient() (SIMD dense kernels, and tfjs ops with explicit
 * backward passes) against tfjs autodiff, side by side in one run.
 *
 *   ps-train-simd    setWeights(w) + gradient(x, y) into a Float32Array + SGD on the flat
 *                    vector in JS (w -= lr g): what a worker and the server do per step, with
 *                    the SIMD dense kernels (src/model/dense-simd.ts; the mlp only: the cnn
 *                    has no such line)
 *   ps-train-tfjs    the same step computed by tfjs ops with explicit backward passes
 *                    (PS_TRAIN_DENSE_KERNELS=tfjs; called ps-train-manual before the kernels)
 *   tfjs-autodiff    tf.variableGrads(loss) over tf.variables + tf.train.sgd applyGradients,
 *                    then a read of the loss (the idiomatic tfjs step; it does not move the
 *                    gradient to JS, which favours it)
 *
 * All upload the batch every step, run on the same 8 batches (`--data mnist`, the default: the
 * first MNIST training images, mostly zero pixels; `--data uniform`: uniform [0, 1) pixels, no
 * zeros; `--data density:D`: uniform pixels of which a fraction D, at random, are non-zero),
 * and are measured in alternating rounds so that background load hits them alike. One
 * JSON line per (model, batch, impl) on stdout, in the shape of /work/shared/peers (bench, impl,
 * median_s, min_s, max_s, samples_per_s = batch / median).
 *
 * Run: npm run bench:step -- [--backend wasm] [--models mlp,cnn] [--batches 128,64]
 *      [--data mnist|uniform|density:D] [--steps 120] [--warmup 10] [--rounds 6]
 */
import { cpus } from "node:os";
import * as tf from "@tensorflow/tfjs";
import type { BackendName, ModelName } from "../src/config/train-config.js";
import { loadDataset } from "../src/data/load.js";
import { referenceLoss } from "../src/model/autodiff.js";
import { selectBackend } from "../src/model/backend.js";
import { createModel } from "../src/model/zoo.js";
import { Rng } from "../src/util/rng.js";
import { argValue } from "./bench-util.js";

const LR = 0.01;
const NUM_BATCHES = 8;

function emit(o: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(o) + "\n");
}

function median(a: readonly number[]): number {
  const b = [...a].sort((x, y) => x - y);
  const m = b.length >> 1;
  return b.length % 2 ? b[m]! : (b[m - 1]! + b[m]!) / 2;
}

interface Impl {
  impl: string;
  /** one training step on batch i; returns the loss */
  step(i: number): number;
  dispose(): void;
}

interface Batches {
  xs: Float32Array[];
  ys: Float32Array[];
}

let mnist: ReturnType<typeof loadDataset> | null = null;

/** NUM_BATCHES batches of 28x28 images: MNIST's first training images, or uniform pixels (all or a fraction D non-zero). */
async function makeData(data: string, batch: number, seed: number): Promise<Batches> {
  const xs: Float32Array[] = [];
  const ys: Float32Array[] = [];
  if (data === "mnist") {
    // loaded once for every (model, batch)
    const ds = await (mnist ??= loadDataset("mnist", { seed }));
    for (let b = 0; b < NUM_BATCHES; b++) {
      xs.push(ds.trainX.slice(b * batch * 784, (b + 1) * batch * 784));
      ys.push(ds.trainY.slice(b * batch, (b + 1) * batch));
    }
    return { xs, ys };
  }
  const density = data === "uniform" ? 1 : data.startsWith("density:") ? Number(data.slice(8)) : NaN;
  if (!(density >= 0 && density <= 1)) throw new Error(`--data ${data}: expected mnist, uniform or density:D with D in [0, 1]`);
  const rng = new Rng(seed);
  for (let b = 0; b < NUM_BATCHES; b++) {
    xs.push(Float32Array.from({ length: batch * 784 }, () => (rng.next() < density ? rng.next() : 0)));
    ys.push(Float32Array.from({ length: batch }, () => rng.int(10)));
  }
  return { xs, ys };
}

function manualImpl(name: ModelName, batch: number, kernels: "auto" | "tfjs", { xs, ys }: Batches): Impl | null {
  const model = createModel(name, [28, 28, 1], 10, "classification", { kernels });
  const w = model.init(1);
  const g = new Float32Array(model.size);
  model.setWeights(w);
  if (kernels === "auto" && model.kernels !== "simd-dense") {
    model.dispose();
    return null;
  }
  return {
    impl: kernels === "auto" ? "ps-train-simd" : "ps-train-tfjs",
    step(i) {
      model.setWeights(w);
      const r = model.gradient(xs[i % NUM_BATCHES]!, ys[i % NUM_BATCHES]!, batch, g);
      for (let j = 0; j < w.length; j++) w[j]! -= LR * g[j]!;
      return r.loss;
    },
    dispose: () => model.dispose(),
  };
}

function autodiffImpl(name: ModelName, batch: number, { xs, ys }: Batches): Impl {
  const model = createModel(name, [28, 28, 1], 10, "classification", { kernels: "tfjs" });
  const init = model.init(1);
  const vars = model.params.map((p) => tf.tidy(() => tf.variable(tf.tensor(init.slice(p.offset, p.offset + p.size), p.shape))));
  const opt = tf.train.sgd(LR);
  return {
    impl: "tfjs-autodiff",
    step(i) {
      const cost = tf.tidy(() => {
        const x = tf.tensor(xs[i % NUM_BATCHES]!, [batch, 28, 28, 1]);
        const y = tf.tensor1d(ys[i % NUM_BATCHES]!);
        const { value, grads } = tf.variableGrads(() => referenceLoss(model, vars, x, y), vars);
        opt.applyGradients(grads);
        return value;
      });
      const loss = cost.dataSync()[0]!;
      cost.dispose();
      return loss;
    },
    dispose: () => {
      vars.forEach((v) => v.dispose());
      opt.dispose();
    },
  };
}

async function main(): Promise<void> {
  const backend = argValue("--backend", "wasm") as BackendName;
  const models = argValue("--models", "mlp,cnn").split(",") as ModelName[];
  const batches = argValue("--batches", "128,64").split(",").map(Number);
  const steps = Number(argValue("--steps", "120"));
  const warmup = Number(argValue("--warmup", "10"));
  const rounds = Number(argValue("--rounds", "6"));
  const data = argValue("--data", "mnist");
  const sel = await selectBackend(backend);
  emit({ bench: "meta", script: "bench-step", cpus: cpus().length, node: process.version, tfjs: tf.version.tfjs, backend: sel.backend, backend_detail: sel.detail, data, time: new Date().toISOString() });
  for (const name of models) {
    for (const batch of batches) {
      const samples = await makeData(data, batch, 7);
      const impls = [manualImpl(name, batch, "auto", samples), manualImpl(name, batch, "tfjs", samples), autodiffImpl(name, batch, samples)].filter(
        (im): im is Impl => im !== null,
      );
      const times = impls.map(() => [] as number[]);
      const losses = impls.map(() => Number.NaN);
      impls.forEach((im, k) => {
        for (let i = 0; i < warmup; i++) losses[k] = im.step(i);
      });
      const perRound = Math.max(1, Math.ceil(steps / rounds));
      for (let r = 0; r < rounds; r++) {
        impls.forEach((im, k) => {
          for (let i = 0; i < perRound; i++) {
            const t0 = performance.now();
            losses[k] = im.step(i);
            times[k]!.push((performance.now() - t0) / 1e3);
          }
        });
      }
      impls.forEach((im, k) => {
        const t = times[k]!;
        const med = median(t);
        im.dispose();
        emit({
          bench: `${name}_step`,
          impl: im.impl,
          model: name === "mlp" ? "784-300-100-10" : "lenet5-28x28x1-6-16-120-84-10",
          backend: sel.backend,
          data,
          batch,
          procs: 1,
          reps: t.length,
          median_s: med,
          min_s: Math.min(...t),
          max_s: Math.max(...t),
          samples_per_s: batch / med,
          final_loss: losses[k],
          tensors_alive_after: tf.memory().numTensors,
        });
      });
    }
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
