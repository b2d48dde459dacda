import type { Redis } from "ioredis";

/**
 * The Lua scripts that make the cluster's decisions atomic in Redis. Each runs as one command,
 * so two schedulers (or one scheduler and its restarted self) can never interleave inside one.
 * Agent and job hashes are addressed by prefix + id, which standalone Redis allows (not Cluster).
 */

/**
 * Reserve a whole gang for the job at the head of the line, or nothing.
 * KEYS: agents ZSET, gang-queue ZSET, job HASH.
 * ARGV: job id, now ms, agent ttl ms, agent key prefix, job key prefix, attempt, tasks "role:rank,...".
 * Returns {"ok", agent ids in task order...} | {"behind", head job id} | {"short", free agents, task}
 *       | {"absent"} (the job is not in the line).
 */
const RESERVE_GANG = `
local jobId = ARGV[1]
while true do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #head == 0 then return {'absent'} end
  if head[1] == jobId then break end
  local st = redis.call('HGET', ARGV[5] .. head[1], 'state')
  if st == false or st == 'succeeded' or st == 'failed' or st == 'cancelled' then
    redis.call('ZREM', KEYS[2], head[1])
  else
    return {'behind', head[1]}
  end
end
local minSeen = tonumber(ARGV[2]) - tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], minSeen, '+inf')
local free = {}
for _, id in ipairs(ids) do
  local a = redis.call('HMGET', ARGV[4] .. id, 'job', 'roles', 'gpus')
  if a[2] and (a[1] == false or a[1] == '') then
    local nroles = 0
    for _ in string.gmatch(a[2], '[^,]+') do nroles = nroles + 1 end
    table.insert(free, {id = id, roles = ',' .. a[2] .. ',', gpus = tonumber(a[3]) or 0, nroles = nroles})
  end
end
table.sort(free, function(x, y)
  if x.nroles ~= y.nroles then return x.nroles < y.nroles end
  return x.id < y.id
end)
local tasks = {}
for t in string.gmatch(ARGV[7], '[^,]+') do table.insert(tasks, t) end
local taken = {}
local picks = {}
for i, t in ipairs(tasks) do
  local role = string.match(t, '^[^:]+')
  local best = nil
  for j, a in ipairs(free) do
    if not taken[j] and string.find(a.roles, ',' .. role .. ',', 1, true) then
      if best == nil then
        best = j
      elseif role == 'worker' and a.gpus > free[best].gpus then
        best = j
      elseif role ~= 'worker' and a.gpus < free[best].gpus then
        best = j
      end
    end
  end
  if best == nil then return {'short', tostring(#free), t} end
  taken[best] = true
  picks[i] = free[best].id
end
local tag = jobId .. '#' .. ARGV[6]
local gang = {}
for i, id in ipairs(picks) do
  redis.call('HSET', ARGV[4] .. id, 'job', tag, 'task', tasks[i])
  local role, rank = string.match(tasks[i], '^([^:]+):(%d+)$')
  table.insert(gang, {agent = id, role = role, rank = tonumber(rank)})
end
redis.call('ZREM', KEYS[2], jobId)
redis.call('HSET', KEYS[3], 'state', 'starting', 'attempt', ARGV[6], 'gang', cjson.encode(gang), 'startedAt', ARGV[2], 'ranksRunningAt', '')
local out = {'ok'}
for _, id in ipairs(picks) do table.insert(out, id) end
return out
`;

/**
 * Give a gang's agents back to the pool: only those still marked with this gang's tag.
 * ARGV: agent key prefix, tag, agent ids...  Returns how many were released.
 */
const RELEASE_GANG = `
local n = 0
for i = 3, #ARGV do
  local k = ARGV[1] .. ARGV[i]
  if redis.call('HGET', k, 'job') == ARGV[2] then
    redis.call('HSET', k, 'job', '', 'task', '')
    n = n + 1
  end
end
return n
`;

/**
 * Compare-and-set on a job: write the fields only if its state is one of ARGV[1] (comma list)
 * and, unless ARGV[2] is empty, its attempt is ARGV[2]. Returns 1 if written.
 * KEYS: job HASH. ARGV: states, attempt, field, value, ...
 */
const TRANSITION = `
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 0 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. st .. ',', 1, true) then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
`;

type ScriptFn = (...args: (string | number)[]) => Promise<unknown>;

const SCRIPTS = {
  psReserveGang: { numberOfKeys: 3, lua: RESERVE_GANG },
  psReleaseGang: { numberOfKeys: 0, lua: RELEASE_GANG },
  psTransition: { numberOfKeys: 1, lua: TRANSITION },
} as const;

/** The scripts on one connection (ioredis sends EVALSHA, and the script once if Redis lacks it). */
export class ClusterScripts {
  constructor(private readonly redis: Redis) {
    for (const [name, def] of Object.entries(SCRIPTS)) {
      if (!(name in redis)) redis.defineCommand(name, def);
    }
  }

  private fn(name: keyof typeof SCRIPTS): ScriptFn {
    const f = (this.redis as unknown as Record<string, ScriptFn>)[name]!;
    return f.bind(this.redis);
  }

  async reserveGang(keys: { agents: string; gangQueue: string; job: string; agentPrefix: string; jobPrefix: string }, jobId: string, attempt: number, tasks: string[], agentTtlMs: number): Promise<string[]> {
    const r = (await this.fn("psReserveGang")(
      keys.agents,
      keys.gangQueue,
      keys.job,
      jobId,
      Date.now(),
      agentTtlMs,
      keys.agentPrefix,
      keys.jobPrefix,
      attempt,
      tasks.join(","),
    )) as string[];
    return r;
  }

  async releaseGang(agentPrefix: string, tag: string, agents: string[]): Promise<number> {
    if (agents.length === 0) return 0;
    return Number(await this.fn("psReleaseGang")(agentPrefix, tag, ...agents));
  }

  async transition(jobKey: string, from: readonly string[], attempt: number | null, fields: Record<string, string | number>): Promise<boolean> {
    const flat: (string | number)[] = [];
    for (const [k, v] of Object.entries(fields)) flat.push(k, v);
    return Number(await this.fn("psTransition")(jobKey, from.join(","), attempt === null ? "" : attempt, ...flat)) === 1;
  }
}
