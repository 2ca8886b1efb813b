-- Mark a task as watched, so the worker's claim announces its start on P:notify
-- (clients/python/switchyard/lua/claim.lua). A task that does not exist is left alone.
-- KEYS[1] = P:task:<task_id>. Returns 1 when marked, 0 when there is no such task.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'watched', '1')
return 1
