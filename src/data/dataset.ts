/**
 * A dataset held in memory as flat Float32 arrays, row-major, one sample after another.
 * Classification labels are class indices stored as floats; regression targets are the values.
 */
export type Task = "classification" | "regression";

export interface Dataset {
  name: string;
  task: Task;
  /** shape of one sample: [h, w, c] for images, [d] for feature vectors */
  inputShape: number[];
  /** number of classes (classification) or outputs (regression) */
  numOutputs: number;
  trainX: Float32Array;
  trainY: Float32Array;
  trainCount: number;
  testX: Float32Array;
  testY: Float32Array;
  testCount: number;
}

export function sampleSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
