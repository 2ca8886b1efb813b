-- The worker's fenced claim: the one place "may this attempt run?" is decided, and where its
-- start is recorded.
-- KEYS[1] = P:task:<task_id>, KEYS[2] = P:notify (pub/sub channel)
-- ARGV = attempt, worker_id, task_id, ts, '1' to get the payload back (it travels by reference)
-- The task hash's `fence` field holds the one attempt that may start. When it equals ARGV[1],
-- the claim moves it to "<attempt>:started", records the task as running, tells subscribers
-- ("started <task_id> <attempt> <worker_id>") when the task is watched (its `watched` field is
-- '1', set by the scheduler when someone watches it) and returns 1, or
-- {1, {args_json, kwargs_json}} when asked for the payload. Anything else (older attempt, duplicate delivery, cancelled or
-- re-queued task, expired record) returns 0: the worker acknowledges the message and runs nothing.
local current = redis.call('HMGET', KEYS[1], 'fence', 'watched')
if current[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'fence', ARGV[1] .. ':started', 'state', 'running', 'started_at', ARGV[4])
if current[2] == '1' then
  redis.call('PUBLISH', KEYS[2], 'started ' .. ARGV[3] .. ' ' .. ARGV[1] .. ' ' .. ARGV[2])
end
if ARGV[5] == '1' then
  return {1, redis.call('HMGET', KEYS[1], 'args_json', 'kwargs_json')}
end
return 1
