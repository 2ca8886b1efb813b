-- Move an attempt of a lost worker back to pending and fence the old attempt off, so a late
-- start or result of it is refused.
-- KEYS[1] = P:task:<id>, KEYS[2] = P:inflight:<worker>, KEYS[3] = P:pending
-- ARGV[1] = task id, ARGV[2] = worker id, ARGV[3] = reason, ARGV[4] = fence value of a
-- requeued task
-- Task hash: reads state, worker, seq; writes state, worker, reason, progress, progress_msg,
--            started_at, dispatched_at, gpu_index, served_queue, fence.
-- Returns the task's attempt so far, or false when the task was not in flight on that worker
-- (it leaves the worker's ledger either way).
local task, id, worker = KEYS[1], ARGV[1], ARGV[2]
redis.call('SREM', KEYS[2], id)
local cur = redis.call('HMGET', task, 'state', 'worker', 'seq', 'attempt')
local state = cur[1]
if (state ~= 'dispatched' and state ~= 'running') or cur[2] ~= worker then return false end
redis.call('HSET', task, 'state', 'pending', 'worker', '', 'reason', ARGV[3], 'progress', '0',
           'progress_msg', '', 'started_at', '', 'dispatched_at', '', 'gpu_index', '',
           'served_queue', '', 'fence', ARGV[4])
redis.call('ZADD', KEYS[3], cur[3], id)
return cur[4]
