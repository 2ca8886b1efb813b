-- Cancel a task that has not finished; its fence turns to "cancelled" so no attempt of it
-- starts any more.
-- KEYS[1] = P:task:<id>, KEYS[2] = P:payload:<id>, KEYS[3] = P:fence:<id>, KEYS[4] = P:pending,
-- KEYS[5] = P:retry, KEYS[6] = P:counts
-- ARGV[1] = P:inflight: and ARGV[2] = P:stats: (key prefixes: the task's worker and queue are
--           read in here), ARGV[3] = task id, ARGV[4] = now, ARGV[5] = reason,
-- ARGV[6] = fence value of a cancelled task, ARGV[7] = fence TTL seconds,
-- ARGV[8] = result TTL seconds
-- Task hash: reads state, worker, queue; writes state, finished_at, reason, served_queue.
-- P:stats:<queue>: cancelled.
-- Returns {'missing'}, {'terminal', state, task hash} (nothing changed), or
--         {'ok', previous state, task hash}.
local task, id = KEYS[1], ARGV[3]
local cur = redis.call('HMGET', task, 'state', 'worker', 'queue')
local state = cur[1]
if not state then return {'missing'} end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' or state == 'dead_lettered' then
  return {'terminal', state, redis.call('HGETALL', task)}
end
if state == 'pending' or state == 'retrying' then
  redis.call('ZREM', KEYS[4], id)
else
  redis.call('SREM', ARGV[1] .. cur[2], id)
end
redis.call('SET', KEYS[3], ARGV[6], 'EX', tonumber(ARGV[7]))
redis.call('HSET', task, 'state', 'cancelled', 'finished_at', ARGV[4], 'reason', ARGV[5],
           'served_queue', '')
redis.call('HINCRBY', KEYS[6], state, -1)
redis.call('HINCRBY', KEYS[6], 'cancelled', 1)
redis.call('HINCRBY', ARGV[2] .. cur[3], 'cancelled', 1)
if state == 'retrying' then redis.call('ZREM', KEYS[5], id) end
redis.call('EXPIRE', task, ARGV[8]); redis.call('EXPIRE', KEYS[2], ARGV[8])
return {'ok', state, redis.call('HGETALL', task)}
