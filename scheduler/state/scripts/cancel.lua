-- Cancel a task that has not finished; its fence turns to "cancelled" so no attempt of it
-- starts any more (a message of it still in a worker's queue is refused when claimed).
-- KEYS[1] = P:task:<id>, KEYS[2] = P:pending, KEYS[3] = P:retry
-- ARGV[1] = P:inflight: and ARGV[2] = P:stats: (key prefixes: the task's worker and queue are
--           read in here), ARGV[3] = task id, ARGV[4] = now, ARGV[5] = reason,
-- ARGV[6] = fence value of a cancelled task, ARGV[7] = result TTL seconds
-- Task hash: reads state, worker, queue; writes state, finished_at, reason, served_queue, fence.
-- P:stats:<queue>: cancelled.
-- Returns {'missing'}, {'terminal', state} (nothing changed), or {'ok', previous state}.
local task, id = KEYS[1], ARGV[3]
local cur = redis.call('HMGET', task, 'state', 'worker', 'queue')
local state = cur[1]
if not state then return {'missing'} end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' or state == 'dead_lettered' then
  return {'terminal', state}
end
if state == 'pending' then
  redis.call('ZREM', KEYS[2], id)
elseif state == 'retrying' then
  redis.call('ZREM', KEYS[3], id)
else
  redis.call('SREM', ARGV[1] .. cur[2], id)
end
redis.call('HSET', task, 'state', 'cancelled', 'finished_at', ARGV[4], 'reason', ARGV[5],
           'served_queue', '', 'fence', ARGV[6])
redis.call('HINCRBY', ARGV[2] .. cur[3], 'cancelled', 1)
redis.call('EXPIRE', task, ARGV[7])
return {'ok', state}
