-- Move a task back to pending: a due retry (from 'retrying') or a replayed dead letter
-- (from 'dead_lettered', which also resets its failures and keeps it for good again).
-- KEYS[1] = P:task:<id>, KEYS[2] = P:pending, KEYS[3] = the index it leaves: P:retry or P:dlq
-- ARGV[1] = task id, ARGV[2] = state it must be in, ARGV[3] = reason
-- Task hash: reads state, seq; writes state, reason, next_attempt_at, worker, and for a dead
--            letter failures, finished_at, error, traceback, error_type.
-- Returns true, or false when the task was not in that state (it leaves the index either way).
local task, id, from = KEYS[1], ARGV[1], ARGV[2]
redis.call('ZREM', KEYS[3], id)
local cur = redis.call('HMGET', task, 'state', 'seq')
if cur[1] ~= from then return false end
redis.call('HSET', task, 'state', 'pending', 'reason', ARGV[3], 'next_attempt_at', '', 'worker', '')
if from == 'dead_lettered' then
  redis.call('HSET', task, 'failures', 0, 'finished_at', '', 'error', '', 'traceback', '',
             'error_type', '')
  redis.call('PERSIST', task)
end
redis.call('ZADD', KEYS[2], cur[2], id)
return true
