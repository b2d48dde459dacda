/**
 * Saving a FlatModel as a tf.LayersModel without tfjs-node.
 *
 * `model.save('file://...')` and `tf.loadLayersModel('file://...')` need the file:// IO
 * handlers of @tensorflow/tfjs-node. These are plain node:fs handlers instead, writing the
 * same layout tfjs-node writes:
 *
 *   DIR/model.json   { modelTopology, format: "layers-model", generatedBy, convertedBy,
 *                      weightsManifest: [{ paths: ["weights.bin"], weights: [...] }] }
 *   DIR/weights.bin  all weights, float32 little-endian, in manifest order, which for our
 *                    models is exactly the flat parameter vector (layer by layer, kernel then
 *                    bias)
 *
 * The result loads with loadSavedModel(dir) here, with tfjs-node's
 * tf.loadLayersModel('file://DIR/model.json'), or in a browser from an HTTP server.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import type { Task } from "../data/dataset.js";
import type { LayerSpec } from "./spec.js";

export const MODEL_JSON = "model.json";
export const WEIGHTS_BIN = "weights.bin";

/**
 * The tf.Sequential equivalent of a LayerSpec list (same layer order, names and weight
 * shapes). The last layer of a classifier gets a softmax, so the model predicts
 * probabilities; a regressor's last layer is linear.
 */
export function buildLayersModel(layers: readonly LayerSpec[], inputShape: readonly number[], task: Task): tf.Sequential {
  const model = tf.sequential();
  layers.forEach((l, i) => {
    const first = i === 0 ? { inputShape: inputShape.slice() } : {};
    const last = i === layers.length - 1;
    switch (l.kind) {
      case "flatten":
        model.add(tf.layers.flatten({ name: l.name, ...first }));
        break;
      case "dense": {
        const activation = last && task === "classification" ? "softmax" : l.activation;
        model.add(tf.layers.dense({ name: l.name, units: l.units, activation, ...first }));
        break;
      }
      case "conv2d":
        model.add(
          tf.layers.conv2d({
            name: l.name,
            filters: l.filters,
            kernelSize: l.kernelSize,
            strides: 1,
            padding: l.padding,
            activation: l.activation,
            ...first,
          }),
        );
        break;
      case "maxpool2d":
        model.add(tf.layers.maxPooling2d({ name: l.name, poolSize: l.poolSize, strides: l.poolSize, padding: "valid", ...first }));
        break;
    }
  });
  return model;
}

function writeAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/** An IOHandler that writes model.json + weights.bin into `dir` (created if needed). */
export function fileSaveHandler(dir: string): tf.io.IOHandler {
  return tf.io.withSaveHandler(async (artifacts) => {
    if (artifacts.modelTopology == null || artifacts.modelTopology instanceof ArrayBuffer) {
      throw new Error("fileSaveHandler: only JSON model topologies (tf.LayersModel) are supported");
    }
    mkdirSync(dir, { recursive: true });
    const weightData = tf.io.CompositeArrayBuffer.join(artifacts.weightData ?? new ArrayBuffer(0));
    const json: tf.io.ModelJSON = {
      modelTopology: artifacts.modelTopology,
      format: artifacts.format ?? "layers-model",
      generatedBy: artifacts.generatedBy ?? `TensorFlow.js tfjs-layers v${tf.version.tfjs}`,
      convertedBy: artifacts.convertedBy ?? null,
      weightsManifest: [{ paths: [WEIGHTS_BIN], weights: artifacts.weightSpecs ?? [] }],
    };
    if (artifacts.trainingConfig != null) json.trainingConfig = artifacts.trainingConfig;
    if (artifacts.userDefinedMetadata != null) json.userDefinedMetadata = artifacts.userDefinedMetadata;
    writeAtomic(join(dir, WEIGHTS_BIN), new Uint8Array(weightData));
    writeAtomic(join(dir, MODEL_JSON), JSON.stringify(json));
    return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
  });
}

/** An IOHandler that reads a model.json (path to the file or to its folder) and its weights. */
export function fileLoadHandler(path: string): tf.io.IOHandler {
  const jsonPath = path.endsWith(".json") ? path : join(path, MODEL_JSON);
  return {
    load: async () => {
      const json = JSON.parse(readFileSync(jsonPath, "utf8")) as tf.io.ModelJSON;
      return tf.io.getModelArtifactsForJSON(json, async (manifest) => {
        const specs: tf.io.WeightsManifestEntry[] = [];
        const buffers: ArrayBuffer[] = [];
        for (const group of manifest) {
          specs.push(...group.weights);
          for (const p of group.paths) {
            const b = readFileSync(join(dirname(jsonPath), p));
            buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
          }
        }
        return [specs, tf.io.CompositeArrayBuffer.join(buffers)];
      });
    },
  };
}

/** Load a model written by FlatModel.save(dir) (or by tfjs-node's file:// handler). */
export async function loadSavedModel(dir: string): Promise<tf.LayersModel> {
  return await tf.loadLayersModel(fileLoadHandler(dir));
}
