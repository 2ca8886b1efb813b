-- Apply a batch of lifecycle reports read from the stream, fenced by attempt, and acknowledge
-- them, in one step: a report of any attempt but the current one, or one that does not fit the
-- task's state, changes nothing (and is acknowledged all the same).
-- KEYS[1] = P:events, KEYS[2] = P:retry, KEYS[3] = P:dlq
-- ARGV[1] = P:task:, ARGV[2] = P:inflight: (key prefixes: the task's worker is read in here),
-- ARGV[3] = '1' to trim the stream behind the batch, ARGV[4] = consumer group, ARGV[5] = result
--           TTL seconds, ARGV[6] = dead-letter TTL seconds, ARGV[7] = the reports, a JSON array
--           with one array of 11 strings per report (one argument, decoded here in C): stream id, task id, type (progress|succeeded|failed|started),
--           attempt, ts, a, b (result_json, '' | error, traceback | progress, message),
--           error_type, action of a failed report (fail|retry|dead_letter, as the retry policy
--           decided), next attempt at, reason
-- Task hash: reads state, attempt, worker, queue, submitted_at, started_at; writes state,
--            started_at, progress, progress_msg, finished_at, result_json, failures, error,
--            traceback, error_type, reason, next_attempt_at, worker, served_queue, fence.
-- Returns per report false (stale) or {state after it, queue, worker of the attempt, and for
-- an attempt that ended: seconds it waited (submitted -> started) and ran (started -> ended)};
-- the scheduler keeps the queue statistics from these.
local task_prefix, inflight_prefix = ARGV[1], ARGV[2]
local result_ttl, dead_ttl = ARGV[5], ARGV[6]
local CHUNK = 500
local out, ids, leaving = {}, {}, {}

local function apply(id, kind, attempt, ts, a, b, error_type, action, next_at, reason)
  local task = task_prefix .. id
  local cur = redis.call('HMGET', task, 'state', 'attempt', 'worker', 'queue', 'submitted_at', 'started_at')
  local state, worker, queue = cur[1], cur[3], cur[4]
  if not state or cur[2] ~= attempt then return false end
  if kind == 'progress' then
    if state ~= 'running' and state ~= 'dispatched' then return false end
    redis.call('HSET', task, 'progress', a, 'progress_msg', b)
    return {state, queue, worker}
  end
  if kind == 'started' then
    -- From workers that report the start separately (the claim records it today).
    if state ~= 'dispatched' then return false end
    redis.call('HSET', task, 'state', 'running', 'started_at', ts, 'fence', attempt .. ':started')
    return {'running', queue, worker}
  end
  if (kind ~= 'succeeded' and kind ~= 'failed') or (state ~= 'running' and state ~= 'dispatched') then
    return false
  end
  local started_text = cur[6]
  if not started_text or started_text == '' then started_text = ts end
  -- An unset or unreadable time must not fail the batch (nothing of it would be acknowledged).
  local started = tonumber(started_text) or tonumber(ts) or 0
  local submitted = tonumber(cur[5]) or started
  -- The attempt is over: it leaves its worker's ledger and no longer counts against a
  -- queue's per-worker limit; its fence admits nothing any more.
  local list = leaving[worker]
  if not list then list = {}; leaving[worker] = list end
  table.insert(list, id)
  local wait = tostring(math.max(0, started - submitted))
  local ran = tostring(math.max(0, (tonumber(ts) or started) - started))
  if kind == 'succeeded' then
    redis.call('HSET', task, 'state', 'succeeded', 'finished_at', ts, 'started_at', started_text,
               'result_json', a, 'progress', '1', 'served_queue', '', 'fence', '')
    redis.call('EXPIRE', task, result_ttl)
    return {'succeeded', queue, worker, wait, ran}
  end
  redis.call('HINCRBY', task, 'failures', 1)
  redis.call('HSET', task, 'error', a, 'traceback', b, 'error_type', error_type,
             'started_at', started_text, 'reason', reason, 'served_queue', '', 'fence', '')
  if action == 'retry' then
    redis.call('HSET', task, 'state', 'retrying', 'next_attempt_at', next_at, 'worker', '',
               'progress', '0', 'progress_msg', '')
    redis.call('ZADD', KEYS[2], next_at, id)
    return {'retrying', queue, worker, wait, ran}
  end
  if action == 'dead_letter' then
    redis.call('HSET', task, 'state', 'dead_lettered', 'finished_at', ts)
    redis.call('ZADD', KEYS[3], ts, id)
    redis.call('EXPIRE', task, dead_ttl)
    return {'dead_lettered', queue, worker, wait, ran}
  end
  redis.call('HSET', task, 'state', 'failed', 'finished_at', ts)
  redis.call('EXPIRE', task, result_ttl)
  return {'failed', queue, worker, wait, ran}
end

for i, row in ipairs(cjson.decode(ARGV[7])) do
  table.insert(ids, row[1])
  out[i] = apply(row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10], row[11])
end
for worker, list in pairs(leaving) do
  for first = 1, #list, CHUNK do
    redis.call('SREM', inflight_prefix .. worker, unpack(list, first, math.min(#list, first + CHUNK - 1)))
  end
end
for first = 1, #ids, CHUNK do
  redis.call('XACK', KEYS[1], ARGV[4], unpack(ids, first, math.min(#ids, first + CHUNK - 1)))
end
-- Everything before the newest applied report is done with: keep the stream short.
if ARGV[3] == '1' and #ids > 0 then redis.call('XTRIM', KEYS[1], 'MINID', '~', ids[#ids]) end
return out
