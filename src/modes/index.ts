import type { ModeName } from "../config/train-config.js";
import { AsyncMode } from "./async.js";
import type { ConsistencyMode } from "./mode.js";
import { SspMode } from "./ssp.js";
import { SyncMode } from "./sync.js";

export type { ConsistencyMode, ShardClocks } from "./mode.js";

export function createMode(name: ModeName, staleness: number): ConsistencyMode {
  switch (name) {
    case "sync":
      return new SyncMode();
    case "async":
      return new AsyncMode();
    case "ssp":
      return new SspMode(staleness);
  }
}
