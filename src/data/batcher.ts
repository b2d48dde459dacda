/**
 * Mini-batches over one worker's shard of the training set.
 *
 * Each epoch the shard's indices are reshuffled with a seed derived from (seed, epoch), so the
 * order depends only on the seed and the epoch number, never on history. Samples are copied into
 * two preallocated Float32Array buffers that every batch reuses: a caller must consume (or copy)
 * a batch before asking for the next one. The last partial batch of an epoch is dropped; a shard
 * smaller than the batch size yields one batch of the whole shard per epoch.
 */
import type { Dataset } from "./dataset.js";
import { ErrorCode, PsError } from "../util/errors.js";
import { Rng, deriveSeed } from "../util/rng.js";

export interface Batch {
  /** `size` samples, one after another (the batcher's reused buffer) */
  x: Float32Array;
  /** `size` targets: class indices (classification) or numOutputs values each (regression) */
  y: Float32Array;
  size: number;
  epoch: number;
  stepInEpoch: number;
}

export type TrainArrays = Pick<Dataset, "trainX" | "trainY" | "trainCount">;

export class ShardBatcher {
  /** batches per epoch */
  readonly stepsPerEpoch: number;
  /** samples per batch: min(batchSize, shard length) */
  readonly batchSize: number;
  /** floats per sample in x and in y */
  readonly xSize: number;
  readonly ySize: number;

  private readonly trainX: Float32Array;
  private readonly trainY: Float32Array;
  private readonly indices: Uint32Array;
  private readonly order: Uint32Array;
  private readonly xBuf: Float32Array;
  private readonly yBuf: Float32Array;
  private readonly seed: number;
  private epochNo = 0;
  private step = 0;

  constructor(data: TrainArrays, indices: Uint32Array, batchSize: number, seed: number, startEpoch = 0) {
    const n = data.trainCount;
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new RangeError(`ShardBatcher: batch size must be a positive integer, got ${batchSize}`);
    }
    if (!Number.isInteger(startEpoch) || startEpoch < 0) {
      throw new RangeError(`ShardBatcher: start epoch must be a non-negative integer, got ${startEpoch}`);
    }
    if (n < 1 || data.trainX.length % n !== 0 || data.trainY.length % n !== 0) {
      throw new PsError(
        ErrorCode.BAD_DATASET,
        `training arrays of ${data.trainX.length} inputs and ${data.trainY.length} targets do not hold ${n} samples`,
      );
    }
    for (let i = 0; i < indices.length; i++) {
      if ((indices[i] as number) >= n) throw new RangeError(`ShardBatcher: index ${indices[i]} out of range [0, ${n})`);
    }
    this.trainX = data.trainX;
    this.trainY = data.trainY;
    this.xSize = data.trainX.length / n;
    this.ySize = data.trainY.length / n;
    this.indices = indices.slice();
    this.order = new Uint32Array(indices.length);
    this.batchSize = Math.min(batchSize, indices.length);
    this.stepsPerEpoch = indices.length === 0 ? 0 : Math.max(1, Math.floor(indices.length / batchSize));
    this.xBuf = new Float32Array(this.batchSize * this.xSize);
    this.yBuf = new Float32Array(this.batchSize * this.ySize);
    this.seed = seed;
    this.startEpoch(startEpoch);
  }

  /** The epoch the next batch belongs to. */
  get epoch(): number {
    return this.epochNo;
  }

  /** Number of samples in the shard. */
  get shardSize(): number {
    return this.indices.length;
  }

  /** Restart at the beginning of `epoch` (for resuming). */
  startEpoch(epoch: number): void {
    this.epochNo = epoch;
    this.step = 0;
    this.order.set(this.indices);
    new Rng(deriveSeed(this.seed, 0xba7c, epoch)).shuffle(this.order);
  }

  /** Continue after `batches` batches from the very start, as if they had been taken (for --resume). */
  seek(batches: number): void {
    if (this.stepsPerEpoch === 0) return;
    this.startEpoch(Math.floor(batches / this.stepsPerEpoch));
    this.step = batches % this.stepsPerEpoch;
  }

  nextBatch(): Batch {
    if (this.stepsPerEpoch === 0) throw new PsError(ErrorCode.BAD_DATASET, "this worker's shard of the training set is empty");
    if (this.step >= this.stepsPerEpoch) this.startEpoch(this.epochNo + 1);
    const { xSize, ySize, trainX, trainY, xBuf, yBuf, order } = this;
    const base = this.step * this.batchSize;
    for (let b = 0; b < this.batchSize; b++) {
      const s = order[base + b] as number;
      const xs = s * xSize;
      const xd = b * xSize;
      for (let j = 0; j < xSize; j++) xBuf[xd + j] = trainX[xs + j] as number;
      const ys = s * ySize;
      const yd = b * ySize;
      for (let j = 0; j < ySize; j++) yBuf[yd + j] = trainY[ys + j] as number;
    }
    const batch: Batch = { x: xBuf, y: yBuf, size: this.batchSize, epoch: this.epochNo, stepInEpoch: this.step };
    this.step++;
    return batch;
  }
}
