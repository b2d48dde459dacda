import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { maxAbsDiff, savedWeights, smallConfig, train } from "../helpers/run.js";

describe("training with --comm allreduce (real processes, real sockets)", function () {
  this.timeout(180_000);

  for (const algo of ["ring", "doubling"] as const) {
    it(`${algo}: matches the parameter-server sync run on the synthetic task, with bit-identical weights on every worker`, async () => {
      const common = { mode: "sync" as const, workers: 3, optimizer: "momentum" as const, lr: 0.1, momentum: 0.9, maxSteps: 15, model: "mlp" as const, batchSize: 8, trainLimit: 600, evalEvery: 5 };
      const psCfg = smallConfig({ ...common, servers: 2 });
      const ps = await train(psCfg);
      const cfg = smallConfig({ ...common, comm: "allreduce", allreduceAlgo: algo, allreduceSegmentBytes: 4096 });
      const ar = await train(cfg);
      assert.equal(ar.comm, "allreduce");
      assert.equal(ar.servers, 0);
      assert.equal(ar.steps, 15);
      const digests = new Set(ar.workerStats.map((w) => w.weightsSha256));
      assert.equal(ar.workerStats.length, 3);
      assert.equal(digests.size, 1, `workers ended with different weights: ${[...digests].join(", ")}`);
      const diff = maxAbsDiff(savedWeights(cfg.out), savedWeights(psCfg.out));
      assert.ok(diff < 1e-4, `max |w_allreduce - w_ps| = ${diff}`);
      // Exact-step evaluations at the same steps, with the same scores within float tolerance.
      assert.deepEqual(ar.evals.map((e) => e.globalStep), ps.evals.map((e) => e.globalStep));
      ar.evals.forEach((e, i) => assert.ok(Math.abs(e.testLoss - ps.evals[i]!.testLoss) < 1e-4));
      const summary = JSON.parse(readFileSync(join(cfg.out, "summary.json"), "utf8")) as { comm: string; status: string };
      assert.equal(summary.status, "ok");
      assert.equal(summary.comm, "allreduce");
      const config = JSON.parse(readFileSync(join(cfg.out, "config.json"), "utf8")) as { cluster: { peers: string[] } };
      assert.equal(config.cluster.peers.length, 3);
    });
  }

  it("over tcp, a target accuracy stops every worker at the same exact step", async () => {
    const cfg = smallConfig({ comm: "allreduce", mode: "sync", workers: 2, transport: "tcp", maxSteps: 200, evalEvery: 10, targetAccuracy: 0.5, trainLimit: 2000 });
    const s = await train(cfg);
    assert.ok(s.stoppedEarly);
    assert.ok(s.timeToTargetSeconds !== null);
    const last = s.evals[s.evals.length - 1]!;
    assert.equal(last.globalStep % 10, 0);
    assert.ok(s.workerStats.every((w) => w.steps === last.globalStep), `steps per worker: ${s.workerStats.map((w) => w.steps).join(", ")}, stopped at ${last.globalStep}`);
    assert.equal(new Set(s.workerStats.map((w) => w.weightsSha256)).size, 1);
  });
});
