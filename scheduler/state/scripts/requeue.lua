-- Move an attempt of a lost worker back to pending and fence the old attempt off, so a late
-- start or result of it is refused.
-- KEYS[1] = P:task:<id>, KEYS[2] = P:inflight:<worker>, KEYS[3] = P:pending
-- ARGV[1] = task id, ARGV[2] = worker id, ARGV[3] = reason, ARGV[4] = fence value of a
-- requeued task
-- A hand-out that missed its start deadline passes ARGV[5] = its attempt: it is taken back only
-- while still dispatched (never started) at that attempt, and its returns are counted; with
-- ARGV[6] = 'fail' it ends failed instead (at ARGV[7], kept ARGV[8] seconds, error type ARGV[9]).
-- A running attempt its worker no longer reports passes ARGV[5] = its attempt and ARGV[6] =
-- 'unreported': it is taken back only while still running at that attempt on that worker.
-- Task hash: reads state, worker, seq, attempt; writes state, worker, reason, progress,
--            progress_msg, started_at, dispatched_at, gpu_index, served_queue, fence,
--            start_returns (or, failing: state, finished_at, reason, error, error_type,
--            served_queue, fence).
-- Returns the task's attempt so far, or false when the task was not in flight on that worker
-- (it leaves the worker's ledger either way, but a hand-out that started stays there).
local task, id, worker, attempt = KEYS[1], ARGV[1], ARGV[2], ARGV[5]
local cur = redis.call('HMGET', task, 'state', 'worker', 'seq', 'attempt')
local state = cur[1]
if ARGV[6] == 'unreported' then
  if state ~= 'running' or cur[2] ~= worker or cur[4] ~= attempt then return false end
  redis.call('SREM', KEYS[2], id)
elseif attempt then
  if state ~= 'dispatched' or cur[2] ~= worker or cur[4] ~= attempt then return false end
  redis.call('SREM', KEYS[2], id)
  if ARGV[6] == 'fail' then
    redis.call('HSET', task, 'state', 'failed', 'finished_at', ARGV[7], 'reason', ARGV[3], 'error', ARGV[3],
               'error_type', ARGV[9], 'served_queue', '', 'fence', '')
    redis.call('EXPIRE', task, ARGV[8])
    return cur[4]
  end
  redis.call('HINCRBY', task, 'start_returns', 1)
else
  redis.call('SREM', KEYS[2], id)
  if (state ~= 'dispatched' and state ~= 'running') or cur[2] ~= worker then return false end
end
redis.call('HSET', task, 'state', 'pending', 'worker', '', 'reason', ARGV[3], 'progress', '0',
           'progress_msg', '', 'started_at', '', 'dispatched_at', '', 'gpu_index', '',
           'served_queue', '', 'fence', ARGV[4])
redis.call('ZADD', KEYS[3], cur[3], id)
return cur[4]
