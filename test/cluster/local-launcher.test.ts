import { strict as assert } from "node:assert";
import { roleGcArgs } from "../../src/cluster/local-launcher.js";

describe("role processes' GC threads", function () {
  it("single-threaded GC only when the run starts more role processes than there are cores", function () {
    assert.deepEqual(roleGcArgs(3, 2, {}, []), ["--single-threaded-gc"]);
    assert.deepEqual(roleGcArgs(2, 2, {}, []), []);
    assert.deepEqual(roleGcArgs(9, 16, {}, []), []);
    assert.deepEqual(roleGcArgs(3, 2, { PS_TRAIN_PARALLEL_GC: "1" }, []), [], "PS_TRAIN_PARALLEL_GC=1 keeps V8's default");
    assert.deepEqual(roleGcArgs(3, 2, {}, ["--cpu-prof", "--no-parallel-scavenge"]), [], "the user's own GC-thread flag wins");
    assert.deepEqual(roleGcArgs(3, 2, {}, ["--single-threaded-gc"]), [], "not twice");
  });
});
