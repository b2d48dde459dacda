import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { ClusterKeys } from "../../src/cluster/redis/keys.js";
import { gangTasks } from "../../src/cluster/redis/job-record.js";
import { ClusterScripts } from "../../src/cluster/redis/scripts.js";
import { haveRedisServer, TestRedis } from "../helpers/redis.js";

/** The gang reservation script on a real Redis: all or nothing, in line order, alive agents only. */
describe("gang scheduling (Lua scripts on a real redis-server)", function () {
  this.timeout(30_000);
  const server = new TestRedis();
  let redis: Redis;
  let keys: ClusterKeys;
  let scripts: ClusterScripts;
  const TTL = 5000;

  before(async function () {
    if (!haveRedisServer()) this.skip();
    await server.start();
    redis = new Redis(server.url);
  });
  after(async () => {
    redis?.disconnect();
    await server.destroy();
  });
  beforeEach(() => {
    keys = new ClusterKeys(`g-${randomBytes(4).toString("hex")}`);
    scripts = new ClusterScripts(redis);
  });

  async function addAgent(id: string, roles = "coordinator,server,worker", gpus = 0, seen = Date.now()): Promise<void> {
    await redis.hset(keys.agent(id), { id, roles, gpus, job: "" });
    await redis.zadd(keys.agents, seen, id);
  }

  async function queueJob(id: string, at: number, workers = 1, servers = 1): Promise<void> {
    await redis.hset(keys.job(id), { id, state: "waiting", attempt: 0, config: JSON.stringify({ workers, servers }) });
    await redis.zadd(keys.gangQueue, at, id);
  }

  function reserve(id: string, workers = 1, servers = 1, attempt = 1) {
    const tasks = gangTasks({ workers, servers }).map((t) => `${t.role}:${t.rank}`);
    return scripts.reserveGang({ agents: keys.agents, gangQueue: keys.gangQueue, job: keys.job(id), agentPrefix: keys.agentPrefix, jobPrefix: keys.jobPrefix }, id, attempt, tasks, TTL);
  }

  it("reserves the whole gang at once, in task order, and marks job and agents", async () => {
    for (const a of ["a", "b", "c"]) await addAgent(a);
    await queueJob("j1", 1);
    const r = await reserve("j1");
    assert.deepEqual(r, ["ok", "a", "b", "c"]);
    for (const a of ["a", "b", "c"]) assert.equal(await redis.hget(keys.agent(a), "job"), "j1#1");
    assert.equal(await redis.hget(keys.job("j1"), "state"), "starting");
    const gang = JSON.parse((await redis.hget(keys.job("j1"), "gang"))!) as { role: string; agent: string }[];
    assert.deepEqual(gang.map((g) => `${g.role}@${g.agent}`), ["coordinator@a", "server@b", "worker@c"]);
    assert.equal(await redis.zcard(keys.gangQueue), 0, "the job left the line");
  });

  it("takes nothing when the gang does not fit: two jobs never hold half a gang each", async () => {
    for (const a of ["a", "b", "c", "d"]) await addAgent(a);
    await queueJob("j1", 1);
    await queueJob("j2", 2);
    assert.equal((await reserve("j1"))[0], "ok");
    const r2 = await reserve("j2");
    assert.deepEqual(r2, ["short", "1", "server:0"]);
    assert.equal(await redis.hget(keys.agent("d"), "job"), "", "the one idle agent stays free");
    await scripts.releaseGang(keys.agentPrefix, "j1#1", ["a", "b", "c"]);
    assert.equal((await reserve("j2"))[0], "ok");
  });

  it("serves the line in order: a later job waits behind the head even if it would fit", async () => {
    for (const a of ["a", "b", "c"]) await addAgent(a);
    await queueJob("big", 1, 4, 1); // needs 6 agents
    await queueJob("small", 2);
    assert.deepEqual(await reserve("small"), ["behind", "big"]);
    assert.equal((await reserve("big", 4, 1))[0], "short");
    // the head finishes (cancelled, say): it is dropped from the line and the next one goes
    await redis.hset(keys.job("big"), "state", "cancelled");
    assert.equal((await reserve("small"))[0], "ok");
  });

  it("counts only agents that heartbeat and that accept the role; workers prefer GPUs", async () => {
    await addAgent("dead", "coordinator,server,worker", 0, Date.now() - 2 * TTL);
    await addAgent("c1", "coordinator");
    await addAgent("s1", "server,worker");
    await addAgent("g1", "coordinator,server,worker", 1);
    await queueJob("j", 1);
    const r = await reserve("j");
    assert.deepEqual(r, ["ok", "c1", "s1", "g1"]);
  });

  it("a compare-and-set transition writes only from the expected state and attempt", async () => {
    await queueJob("j", 1);
    await redis.hset(keys.job("j"), { state: "running", attempt: 2 });
    assert.equal(await scripts.transition(keys.job("j"), ["running"], 1, { state: "failed" }), false);
    assert.equal(await scripts.transition(keys.job("j"), ["waiting"], 2, { state: "failed" }), false);
    assert.equal(await scripts.transition(keys.job("j"), ["starting", "running"], 2, { state: "succeeded" }), true);
    assert.equal(await redis.hget(keys.job("j"), "state"), "succeeded");
  });
});
