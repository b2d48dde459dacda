import type { ConsistencyMode } from "./mode.js";

/** ASP (Downpour-style): every gradient is applied on arrival and every read is answered at once. */
export class AsyncMode implements ConsistencyMode {
  readonly name = "async" as const;
  readonly pushPolicy = "apply" as const;
  canRead(): boolean {
    return true;
  }
  describe(): string {
    return "async (ASP): apply each gradient on arrival; never wait";
  }
}
