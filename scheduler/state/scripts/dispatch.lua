-- Commit one hand-out: a pending task goes to a worker as a new attempt, fenced.
-- KEYS[1] = P:task:<id>, KEYS[2] = P:payload:<id>, KEYS[3] = P:pending,
-- KEYS[4] = P:inflight:<worker>, KEYS[5] = P:fence:<id>, KEYS[6] = P:counts
-- ARGV[1] = task id, ARGV[2] = worker id, ARGV[3] = now, ARGV[4] = GPU index ('' = none),
-- ARGV[5] = inline payload limit (bytes), ARGV[6] = placement reason,
-- ARGV[7] = served queue (queue whose per-worker limit the attempt counts against; '' = its own)
-- Task hash: reads state, payload_bytes; increments attempt; writes state, worker,
--            dispatched_at, published, gpu_index, served_queue, started_at, progress,
--            progress_msg, reason.
-- Returns false when the task is no longer pending, else {task hash (flat),
-- {args_json, kwargs_json} or false when the payload is larger than the inline limit}.
local task, id, worker = KEYS[1], ARGV[1], ARGV[2]
if redis.call('HGET', task, 'state') ~= 'pending' then return false end
local attempt = redis.call('HINCRBY', task, 'attempt', 1)
redis.call('HSET', task, 'state', 'dispatched', 'worker', worker, 'dispatched_at', ARGV[3],
           'published', '0', 'gpu_index', ARGV[4], 'served_queue', ARGV[7], 'started_at', '',
           'progress', '0', 'progress_msg', '', 'reason', ARGV[6])
redis.call('ZREM', KEYS[3], id)
redis.call('SADD', KEYS[4], id)
redis.call('SET', KEYS[5], tostring(attempt))
redis.call('HINCRBY', KEYS[6], 'pending', -1)
redis.call('HINCRBY', KEYS[6], 'dispatched', 1)
local payload = false
local size = tonumber(redis.call('HGET', task, 'payload_bytes') or '0')
if size <= tonumber(ARGV[5]) then
  payload = redis.call('HMGET', KEYS[2], 'args_json', 'kwargs_json')
end
return {redis.call('HGETALL', task), payload}
