-- Apply one lifecycle report of a worker, fenced by attempt: a report of any attempt but the
-- current one, or one that does not fit the task's state, changes nothing.
-- KEYS[1] = P:task:<id>, KEYS[2] = P:payload:<id>, KEYS[3] = P:fence:<id>, KEYS[4] = P:counts,
-- KEYS[5] = P:retry, KEYS[6] = P:dlq
-- ARGV[1] = P:inflight: and ARGV[2] = P:stats: (key prefixes: the task's worker and queue are
--           read in here), ARGV[3] = task id, ARGV[4] = type (started|progress|succeeded|failed),
-- ARGV[5] = attempt (decimal text), ARGV[6] = ts,
-- ARGV[7], ARGV[8] = result_json, '' (succeeded) | error, traceback (failed) |
--                    progress, message (progress),
-- ARGV[9] = error_type, ARGV[10] = action for a failed report (fail|retry|dead_letter, as the
-- retry policy decided), ARGV[11] = next attempt at, ARGV[12] = result TTL seconds,
-- ARGV[13] = dead-letter TTL seconds, ARGV[14] = reason
-- Task hash: reads state, attempt, worker, queue, submitted_at, started_at; writes state,
--            started_at, progress, progress_msg, finished_at, result_json, failures, error,
--            traceback, error_type, reason, next_attempt_at, worker, served_queue.
-- P:stats:<queue>: wait_sum, wait_count, run_sum, run_count, completed, failed, retried.
-- Returns the task hash (flat) after the report, or false when it was stale.
local task, id, kind, attempt, ts = KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local counts = KEYS[4]
local cur = redis.call('HMGET', task, 'state', 'attempt', 'worker', 'queue', 'submitted_at', 'started_at')
local state, cur_attempt, worker, queue = cur[1], cur[2], cur[3], cur[4]
if not state or cur_attempt ~= attempt then return false end
local stats = ARGV[2] .. queue
if kind == 'started' then
  if state ~= 'dispatched' then return false end
  redis.call('HSET', task, 'state', 'running', 'started_at', ts)
  redis.call('HINCRBY', counts, 'dispatched', -1)
  redis.call('HINCRBY', counts, 'running', 1)
  redis.call('HINCRBYFLOAT', stats, 'wait_sum', tonumber(ts) - tonumber(cur[5]))
  redis.call('HINCRBY', stats, 'wait_count', 1)
  return redis.call('HGETALL', task)
end
if kind == 'progress' then
  if state ~= 'running' and state ~= 'dispatched' then return false end
  redis.call('HSET', task, 'progress', ARGV[7], 'progress_msg', ARGV[8])
  return redis.call('HGETALL', task)
end
if kind ~= 'succeeded' and kind ~= 'failed' then return false end
if state ~= 'running' and state ~= 'dispatched' then return false end
local started = cur[6]
if not started or started == '' then started = ts end
-- The attempt is over: it leaves its worker's ledger and no longer counts against a queue's
-- per-worker limit.
redis.call('SREM', ARGV[1] .. worker, id)
redis.call('DEL', KEYS[3])
redis.call('HSET', task, 'served_queue', '')
redis.call('HINCRBY', counts, state, -1)
redis.call('HINCRBYFLOAT', stats, 'run_sum', math.max(0, tonumber(ts) - tonumber(started)))
redis.call('HINCRBY', stats, 'run_count', 1)
if kind == 'succeeded' then
  redis.call('HSET', task, 'state', 'succeeded', 'finished_at', ts, 'started_at', started,
             'result_json', ARGV[7], 'progress', '1')
  redis.call('HINCRBY', counts, 'succeeded', 1)
  redis.call('HINCRBY', stats, 'completed', 1)
  redis.call('EXPIRE', task, ARGV[12]); redis.call('EXPIRE', KEYS[2], ARGV[12])
  return redis.call('HGETALL', task)
end
local action = ARGV[10]
redis.call('HINCRBY', task, 'failures', 1)
redis.call('HSET', task, 'error', ARGV[7], 'traceback', ARGV[8], 'error_type', ARGV[9],
           'started_at', started, 'reason', ARGV[14])
if action == 'retry' then
  redis.call('HSET', task, 'state', 'retrying', 'next_attempt_at', ARGV[11], 'worker', '',
             'progress', '0', 'progress_msg', '')
  redis.call('ZADD', KEYS[5], ARGV[11], id)
  redis.call('HINCRBY', counts, 'retrying', 1)
  redis.call('HINCRBY', stats, 'retried', 1)
elseif action == 'dead_letter' then
  redis.call('HSET', task, 'state', 'dead_lettered', 'finished_at', ts)
  redis.call('ZADD', KEYS[6], ts, id)
  redis.call('HINCRBY', counts, 'dead_lettered', 1)
  redis.call('HINCRBY', stats, 'failed', 1)
  redis.call('EXPIRE', task, ARGV[13]); redis.call('EXPIRE', KEYS[2], ARGV[13])
else
  redis.call('HSET', task, 'state', 'failed', 'finished_at', ts)
  redis.call('HINCRBY', counts, 'failed', 1)
  redis.call('HINCRBY', stats, 'failed', 1)
  redis.call('EXPIRE', task, ARGV[12]); redis.call('EXPIRE', KEYS[2], ARGV[12])
end
return redis.call('HGETALL', task)
