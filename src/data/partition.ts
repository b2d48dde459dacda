/**
 * Splitting the training set among workers.
 *
 *   iid            shuffle, then cut into `workers` contiguous parts whose sizes differ by at most 1
 *   shards:K       sort by label, cut into workers*K shards, give each worker K random shards
 *                  (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks
 *                  from Decentralized Data")
 *   dirichlet:A    for each class, split its samples among workers in proportions ~ Dir(A)
 *                  (Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution
 *                  for Federated Visual Classification"); small A = highly skewed
 *
 * Every scheme uses each sample exactly once and gives every worker at least one sample.
 * All randomness comes from `seed`.
 */
import type { Task } from "./dataset.js";
import { badOption } from "../util/errors.js";
import { Rng, deriveSeed } from "../util/rng.js";

export type PartitionSpec =
  | { kind: "iid" }
  | { kind: "shards"; shardsPerWorker: number }
  | { kind: "dirichlet"; alpha: number };

const SPEC_HELP = "expected iid, shards:K (K a positive integer) or dirichlet:ALPHA (ALPHA > 0)";

export function parsePartitionSpec(spec: string): PartitionSpec {
  const s = spec.trim();
  if (s === "iid") return { kind: "iid" };
  const colon = s.indexOf(":");
  const kind = colon < 0 ? s : s.slice(0, colon);
  const arg = colon < 0 ? "" : s.slice(colon + 1).trim();
  if (kind === "shards") {
    if (!/^[0-9]+$/.test(arg) || Number(arg) < 1 || !Number.isSafeInteger(Number(arg))) {
      throw badOption(`--partition: "${spec}": the number of shards per worker must be a positive integer (shards:K)`);
    }
    return { kind: "shards", shardsPerWorker: Number(arg) };
  }
  if (kind === "dirichlet") {
    const alpha = Number(arg);
    if (arg === "" || !/^[0-9.eE+-]+$/.test(arg) || !Number.isFinite(alpha) || alpha <= 0) {
      throw badOption(`--partition: "${spec}": the concentration must be a finite number > 0 (dirichlet:ALPHA)`);
    }
    return { kind: "dirichlet", alpha };
  }
  throw badOption(`--partition: unknown partition "${spec}"; ${SPEC_HELP}`);
}

/** Label of each of the first `count` samples as an integer class index (validated). */
function classLabels(labels: Float32Array, count: number): { cls: Uint32Array; numClasses: number } {
  if (labels.length < count) {
    throw badOption(`--partition: ${count} samples but only ${labels.length} labels`);
  }
  const cls = new Uint32Array(count);
  let max = 0;
  for (let i = 0; i < count; i++) {
    const v = labels[i] as number;
    if (!Number.isInteger(v) || v < 0) {
      throw badOption(`--partition: label ${i} is ${v}; non-iid partitions need integer class labels`);
    }
    cls[i] = v;
    if (v > max) max = v;
  }
  return { cls, numClasses: max + 1 };
}

/** Sizes of `parts` near-equal consecutive pieces of `n` items (the first n % parts get one more). */
function evenCuts(n: number, parts: number): number[] {
  const cuts = [0];
  const base = Math.floor(n / parts);
  const extra = n % parts;
  for (let p = 0; p < parts; p++) cuts.push((cuts[p] as number) + base + (p < extra ? 1 : 0));
  return cuts;
}

function identity(n: number): Uint32Array {
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}

function partitionIid(count: number, workers: number, rng: Rng): Uint32Array[] {
  const perm = rng.shuffle(identity(count));
  const cuts = evenCuts(count, workers);
  const out: Uint32Array[] = [];
  for (let w = 0; w < workers; w++) out.push(perm.slice(cuts[w], cuts[w + 1]));
  return out;
}

function partitionShards(labels: Float32Array, count: number, workers: number, k: number, rng: Rng): Uint32Array[] {
  const shards = workers * k;
  if (count < shards) {
    throw badOption(
      `--partition: shards:${k} with ${workers} workers needs at least ${shards} training samples, the dataset has ${count}`,
    );
  }
  const { cls } = classLabels(labels, count);
  // Shuffle first so that the order within a class is random, then sort (stably) by label.
  const order = Array.from(rng.shuffle(identity(count)));
  order.sort((a, b) => (cls[a] as number) - (cls[b] as number));
  const sorted = Uint32Array.from(order);
  const cuts = evenCuts(count, shards);
  const shardIds = rng.shuffle(identity(shards));
  const out: Uint32Array[] = [];
  for (let w = 0; w < workers; w++) {
    let size = 0;
    for (let j = 0; j < k; j++) {
      const s = shardIds[w * k + j] as number;
      size += (cuts[s + 1] as number) - (cuts[s] as number);
    }
    const mine = new Uint32Array(size);
    let at = 0;
    for (let j = 0; j < k; j++) {
      const s = shardIds[w * k + j] as number;
      const piece = sorted.subarray(cuts[s], cuts[s + 1]);
      mine.set(piece, at);
      at += piece.length;
    }
    out.push(mine);
  }
  return out;
}

/** One draw from Dir(alpha, ..., alpha) of dimension n. */
function dirichlet(rng: Rng, alpha: number, n: number): Float64Array {
  const p = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const g = rng.gamma(alpha);
    p[i] = g;
    sum += g;
  }
  if (!(sum > 0) || !Number.isFinite(sum)) {
    // Every gamma draw underflowed (tiny alpha): the limit is all mass on one component.
    p.fill(0);
    p[rng.int(n)] = 1;
    return p;
  }
  for (let i = 0; i < n; i++) p[i] = (p[i] as number) / sum;
  return p;
}

function partitionDirichlet(labels: Float32Array, count: number, workers: number, alpha: number, rng: Rng): Uint32Array[] {
  const { cls, numClasses } = classLabels(labels, count);
  const byClass: number[][] = Array.from({ length: numClasses }, () => []);
  for (let i = 0; i < count; i++) (byClass[cls[i] as number] as number[]).push(i);
  const parts: number[][] = Array.from({ length: workers }, () => []);
  for (const members of byClass) {
    if (members.length === 0) continue;
    rng.shuffle(members);
    const p = dirichlet(rng, alpha, workers);
    let cum = 0;
    let start = 0;
    for (let w = 0; w < workers; w++) {
      cum += p[w] as number;
      const end = w === workers - 1 ? members.length : Math.min(members.length, Math.round(cum * members.length));
      const part = parts[w] as number[];
      for (let i = start; i < end; i++) part.push(members[i] as number);
      if (end > start) start = end;
    }
  }
  // Every worker gets at least one sample: an empty worker takes a random sample from the
  // currently largest worker (count >= workers, so the largest always has more than one).
  for (let w = 0; w < workers; w++) {
    const part = parts[w] as number[];
    if (part.length > 0) continue;
    let donor = 0;
    for (let v = 1; v < workers; v++) if ((parts[v] as number[]).length > (parts[donor] as number[]).length) donor = v;
    const from = parts[donor] as number[];
    const j = rng.int(from.length);
    part.push(from[j] as number);
    from[j] = from[from.length - 1] as number;
    from.pop();
  }
  return parts.map((p) => Uint32Array.from(p));
}

/**
 * Indices of the training samples each worker owns, one array per worker. Together they hold
 * every index in [0, count) exactly once, and none is empty.
 */
export function partitionIndices(
  labels: Float32Array,
  count: number,
  workers: number,
  spec: string,
  seed: number,
  task: Task,
): Uint32Array[] {
  const parsed = parsePartitionSpec(spec);
  if (!Number.isInteger(workers) || workers < 1) {
    throw badOption(`--partition: the number of workers must be a positive integer, got ${workers}`);
  }
  if (!Number.isInteger(count) || count < 0) {
    throw badOption(`--partition: the number of samples must be a non-negative integer, got ${count}`);
  }
  if (count < workers) {
    throw badOption(`--partition: ${count} training samples cannot be split among ${workers} workers (each needs at least one)`);
  }
  if (parsed.kind !== "iid" && task === "regression") {
    throw badOption(
      `--partition: "${spec}" splits by class label, but this dataset is a regression task without classes; use iid`,
    );
  }
  const rng = new Rng(deriveSeed(seed, 0x9a27, workers));
  switch (parsed.kind) {
    case "iid":
      return partitionIid(count, workers, rng);
    case "shards":
      return partitionShards(labels, count, workers, parsed.shardsPerWorker, rng);
    case "dirichlet":
      return partitionDirichlet(labels, count, workers, parsed.alpha, rng);
  }
}
