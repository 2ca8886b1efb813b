-- Delete dead letters for good (only tasks that are still dead-lettered).
-- KEYS[1] = P:dlq, KEYS[2] = P:tasks (the index of kept tasks: a purged task leaves it at once)
-- ARGV[1] = P:task: (key prefix: a task id is appended), ARGV[2..] = task ids
-- Task hash: reads state; deletes the task (its payload and fence live in it).
-- Returns how many tasks were deleted.
local purged = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local task = ARGV[1] .. id
  redis.call('ZREM', KEYS[1], id)
  if redis.call('HGET', task, 'state') == 'dead_lettered' then
    redis.call('DEL', task)
    redis.call('ZREM', KEYS[2], id)
    purged = purged + 1
  end
end
return purged
